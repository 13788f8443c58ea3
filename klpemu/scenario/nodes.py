"""The shell's syntax tree: what parser.py builds and interp.py runs.

A Word is a tuple of parts, kept as written so that expansion happens when
the command runs: Lit (unquoted text, subject to splitting of nothing but
globbing), Quoted (text quoted by '…', $'…' or a backslash), DQ (a "…" with
its own parts), Param (${…} and $NAME), CmdSub ($(…) and `…`), Arith
($((…))), ProcSub (<(…)) and Tilde (~ at a word's start).
Commands carry the line they start on, for error messages and steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from klpemu.scenario.record import Record


# ---------------------------------------------------------------- words
class Lit(Record):
    text: str


class Quoted(Record):
    text: str


class DQ(Record):
    parts: tuple["Part", ...]


class Param(Record):
    """${NAME[INDEX]OP ARG}: op is "" (plain), "length" (${#…}), "!" (indirect),
    "!@" (an array's indices), or one of - := + ? (with or without ':'),
    # ## % %% (patterns), / // /# /% (replace), ^ ^^ , ,, (case), ":" (substring)."""
    name: str
    index: "Word | None" = None
    op: str = ""
    arg: "Word | None" = None
    arg2: "Word | None" = None     # the replacement of /, the length of :
    text: str = ""                 # as written, for error messages


class CmdSub(Record):
    body: "Program"


class Arith(Record):
    expr: "Word"                   # expanded as in double quotes, then evaluated


class ProcSub(Record):
    body: "Program"


class Tilde(Record):
    user: str


Part = Union[Lit, Quoted, DQ, Param, CmdSub, Arith, ProcSub, Tilde]
Word = tuple[Part, ...]


def literal(word: Word) -> str | None:
    """The text of a word written without quotes or expansions, else None."""
    if len(word) == 1 and isinstance(word[0], Lit):
        return word[0].text
    return None


# ---------------------------------------------------------------- redirections
@dataclass(slots=True)
class HereDoc:
    """A here-document's body, filled in by the parser at the next newline."""
    delimiter: str
    quoted: bool                  # a quoted delimiter: no expansion
    strip_tabs: bool              # <<-
    body: Word = ()
    line: int = 0


class Redir(Record):
    """fd OP target: op is < > >> <> &> &>> <& >& <<< or << (target a HereDoc)."""
    fd: int | None
    op: str
    target: "Word | HereDoc"
    line: int


# ---------------------------------------------------------------- commands
class Assign(Record):
    name: str
    index: Word | None            # NAME[INDEX]=…
    value: Word | None            # NAME=VALUE
    items: tuple[Word, ...] | None  # NAME=(…)
    append: bool                  # +=
    text: str                     # as written, for error messages


class Simple(Record):
    line: int
    assigns: tuple[Assign, ...]
    words: tuple[Word, ...]
    redirs: tuple[Redir, ...]


class Pipeline(Record):
    line: int
    commands: tuple["Command", ...]
    negate: bool
    stderr_too: tuple[bool, ...]  # `|&` after each command but the last


class AndOr(Record):
    """first (op next)*, op '&&' or '||'."""
    line: int
    first: Pipeline
    rest: tuple[tuple[str, Pipeline], ...]


class Item(Record):
    command: AndOr
    background: bool


class Sequence(Record):
    items: tuple[Item, ...]


class Subshell(Record):
    line: int
    body: Sequence
    redirs: tuple[Redir, ...] = ()


class Group(Record):
    line: int
    body: Sequence
    redirs: tuple[Redir, ...] = ()


class If(Record):
    line: int
    clauses: tuple[tuple[Sequence, Sequence], ...]
    orelse: Sequence | None
    redirs: tuple[Redir, ...] = ()


class Loop(Record):
    """while (until=False) or until."""
    line: int
    cond: Sequence
    body: Sequence
    until: bool
    redirs: tuple[Redir, ...] = ()


class For(Record):
    line: int
    name: str
    words: tuple[Word, ...] | None   # None: "$@"
    body: Sequence
    redirs: tuple[Redir, ...] = ()


class ArithFor(Record):
    line: int
    init: Word
    cond: Word
    step: Word
    body: Sequence
    redirs: tuple[Redir, ...] = ()


class CaseItem(Record):
    patterns: tuple[Word, ...]
    body: Sequence
    terminator: str               # ;; ;& ;;&


class Case(Record):
    line: int
    word: Word
    items: tuple[CaseItem, ...]
    redirs: tuple[Redir, ...] = ()


class FunctionDef(Record):
    line: int
    name: str
    body: "Command"
    source: str = ""              # the file it was defined in


# [[ … ]] expressions
class CondWord(Record):
    word: Word


class CondUnary(Record):
    op: str
    operand: Word


class CondBinary(Record):
    op: str
    left: Word
    right: Word


class CondNot(Record):
    expr: "CondExpr"


class CondAnd(Record):
    left: "CondExpr"
    right: "CondExpr"


class CondOr(Record):
    left: "CondExpr"
    right: "CondExpr"


CondExpr = Union[CondWord, CondUnary, CondBinary, CondNot, CondAnd, CondOr]


class Cond(Record):
    line: int
    expr: CondExpr
    redirs: tuple[Redir, ...] = ()


class ArithCmd(Record):
    line: int
    expr: Word
    redirs: tuple[Redir, ...] = ()


Command = Union[Simple, Subshell, Group, If, Loop, For, ArithFor, Case, FunctionDef, Cond, ArithCmd]


class Program(Record):
    body: Sequence
    source: str = ""              # the file name, for messages
