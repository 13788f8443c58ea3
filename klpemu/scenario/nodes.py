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


# ---------------------------------------------------------------- words
@dataclass(frozen=True, slots=True)
class Lit:
    text: str


@dataclass(frozen=True, slots=True)
class Quoted:
    text: str


@dataclass(frozen=True, slots=True)
class DQ:
    parts: tuple["Part", ...]


@dataclass(frozen=True, slots=True)
class Param:
    """${NAME[INDEX]OP ARG}: op is "" (plain), "length" (${#…}), "!" (indirect),
    "!@" (an array's indices), or one of - := + ? (with or without ':'),
    # ## % %% (patterns), / // /# /% (replace), ^ ^^ , ,, (case), ":" (substring)."""
    name: str
    index: "Word | None" = None
    op: str = ""
    arg: "Word | None" = None
    arg2: "Word | None" = None     # the replacement of /, the length of :
    text: str = ""                 # as written, for error messages


@dataclass(frozen=True, slots=True)
class CmdSub:
    body: "Program"


@dataclass(frozen=True, slots=True)
class Arith:
    expr: "Word"                   # expanded as in double quotes, then evaluated


@dataclass(frozen=True, slots=True)
class ProcSub:
    body: "Program"


@dataclass(frozen=True, slots=True)
class Tilde:
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


@dataclass(frozen=True, slots=True)
class Redir:
    """fd OP target: op is < > >> <> &> &>> <& >& <<< or << (target a HereDoc)."""
    fd: int | None
    op: str
    target: "Word | HereDoc"
    line: int


# ---------------------------------------------------------------- commands
@dataclass(frozen=True, slots=True)
class Assign:
    name: str
    index: Word | None            # NAME[INDEX]=…
    value: Word | None            # NAME=VALUE
    items: tuple[Word, ...] | None  # NAME=(…)
    append: bool                  # +=
    text: str                     # as written, for error messages


@dataclass(frozen=True, slots=True)
class Simple:
    line: int
    assigns: tuple[Assign, ...]
    words: tuple[Word, ...]
    redirs: tuple[Redir, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    line: int
    commands: tuple["Command", ...]
    negate: bool
    stderr_too: tuple[bool, ...]  # `|&` after each command but the last


@dataclass(frozen=True, slots=True)
class AndOr:
    """first (op next)*, op '&&' or '||'."""
    line: int
    first: Pipeline
    rest: tuple[tuple[str, Pipeline], ...]


@dataclass(frozen=True, slots=True)
class Item:
    command: AndOr
    background: bool


@dataclass(frozen=True, slots=True)
class Sequence:
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Subshell:
    line: int
    body: Sequence
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    line: int
    body: Sequence
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class If:
    line: int
    clauses: tuple[tuple[Sequence, Sequence], ...]
    orelse: Sequence | None
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class Loop:
    """while (until=False) or until."""
    line: int
    cond: Sequence
    body: Sequence
    until: bool
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class For:
    line: int
    name: str
    words: tuple[Word, ...] | None   # None: "$@"
    body: Sequence
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class ArithFor:
    line: int
    init: Word
    cond: Word
    step: Word
    body: Sequence
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class CaseItem:
    patterns: tuple[Word, ...]
    body: Sequence
    terminator: str               # ;; ;& ;;&


@dataclass(frozen=True, slots=True)
class Case:
    line: int
    word: Word
    items: tuple[CaseItem, ...]
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionDef:
    line: int
    name: str
    body: "Command"
    source: str = ""              # the file it was defined in


# [[ … ]] expressions
@dataclass(frozen=True, slots=True)
class CondWord:
    word: Word


@dataclass(frozen=True, slots=True)
class CondUnary:
    op: str
    operand: Word


@dataclass(frozen=True, slots=True)
class CondBinary:
    op: str
    left: Word
    right: Word


@dataclass(frozen=True, slots=True)
class CondNot:
    expr: "CondExpr"


@dataclass(frozen=True, slots=True)
class CondAnd:
    left: "CondExpr"
    right: "CondExpr"


@dataclass(frozen=True, slots=True)
class CondOr:
    left: "CondExpr"
    right: "CondExpr"


CondExpr = Union[CondWord, CondUnary, CondBinary, CondNot, CondAnd, CondOr]


@dataclass(frozen=True, slots=True)
class Cond:
    line: int
    expr: CondExpr
    redirs: tuple[Redir, ...] = ()


@dataclass(frozen=True, slots=True)
class ArithCmd:
    line: int
    expr: Word
    redirs: tuple[Redir, ...] = ()


Command = Union[Simple, Subshell, Group, If, Loop, For, ArithFor, Case, FunctionDef, Cond, ArithCmd]


@dataclass(frozen=True, slots=True)
class Program:
    body: Sequence
    source: str = ""              # the file name, for messages
