"""Reading a script into the syntax tree of nodes.py, as bash reads it.

One class does the scanning and the grammar, because bash's tokens depend
on where the parser is: reserved words count only where a command starts,
`[[ … ]]` has its own operators, a here-document's body follows the next
newline, and `$(…)` holds a whole program (parsed here once, run as often
as the command runs). Every syntax error, and every construct this shell
does not have, is a ScenarioError naming the line.
"""
from __future__ import annotations

import re

from klpemu.scenario.nodes import (AndOr, Arith, ArithCmd, ArithFor, Assign, Case, CaseItem, CmdSub, Command,
                                   Cond, CondAnd, CondBinary, CondExpr, CondNot, CondOr, CondUnary, CondWord, DQ,
                                   For, FunctionDef, Group, HereDoc, If, Item, Lit, Loop, Param, Part, Pipeline,
                                   ProcSub, Program, Quoted, Redir, Sequence, Simple, Subshell, Tilde, Word, literal)
from klpemu.scenario.result import ScenarioError

METACHARS = frozenset(" \t\n;&|<>()")
OPERATORS = (";;&", "&>>", "<<-", "<<<", ";;", ";&", "&&", "||", "|&", "&>", "<<", ">>", "<&", ">&", "<>", ">|",
             "((", ";", "&", "|", "<", ">", "(", ")")
REDIRECT_OPS = frozenset(("<", ">", ">>", ">|", "<>", "&>", "&>>", "<&", ">&", "<<", "<<-", "<<<"))
RESERVED = frozenset(("if", "then", "elif", "else", "fi", "do", "done", "case", "esac", "while", "until", "for",
                      "in", "function", "select", "time", "coproc", "{", "}", "!", "[[", "]]"))
UNSUPPORTED_WORDS = {"select": "'select' loops", "coproc": "'coproc'", "time": "the 'time' keyword"}
COND_UNARY = frozenset("-a -b -c -d -e -f -g -h -k -p -r -s -t -u -w -x -G -L -N -O -S -z -n -o -v -R".split())
COND_BINARY = frozenset("== = != < > =~ -eq -ne -lt -le -gt -ge -nt -ot -ef".split())
ANSI_C = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f",
          "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN_HEAD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\+?=|\[)")
_SPECIAL = "@*#?$!-0123456789_"
_LITERAL = re.compile(r"[^ \t\n;&|<>()\\'\"$`]+")
_IONUM = re.compile(r"\d+(?=[<>])")


class _Tok:
    __slots__ = ("kind", "text", "word", "line", "items")

    def __init__(self, kind: str, line: int, text: str | None = None, word: Word = (),
                 items: tuple[Word, ...] | None = None) -> None:
        self.kind = kind          # word, op, ionum, nl, eof
        self.text = text          # an op, an ionum's digits, or a word's text when it is one literal
        self.word = word
        self.line = line
        self.items = items        # NAME=( … ): the items


def _merge(parts: list[Part]) -> Word:
    """Adjacent literals of one kind joined (same meaning, smaller tree)."""
    out: list[Part] = []
    for p in parts:
        if out and type(p) is type(out[-1]) and isinstance(p, (Lit, Quoted)):
            out[-1] = type(p)(out[-1].text + p.text)      # type: ignore[union-attr]
        else:
            out.append(p)
    return tuple(out)


def assignment_parts(word: Word) -> tuple[str, Word | None, bool, Word] | None:
    """NAME=VALUE, NAME+=VALUE or NAME[INDEX]=VALUE: (name, index, append, value), else None."""
    if not word or not isinstance(word[0], Lit):
        return None
    head = word[0].text
    m = _ASSIGN_HEAD.match(head)
    if not m:
        return None
    name = m.group(1)
    if m.group(2) != "[":
        value = _merge([Lit(head[m.end():])] + list(word[1:])) if head[m.end():] else tuple(word[1:])
        return name, None, m.group(2) == "+=", value
    # NAME[INDEX]=: the index may hold expansions, up to a literal `]=` or `]+=`
    index: list[Part] = []
    rest = head[m.end():]
    parts = [Lit(rest)] + list(word[1:]) if rest else list(word[1:])
    for k, p in enumerate(parts):
        if isinstance(p, Lit):
            em = re.search(r"\](\+?=)", p.text)
            if em:
                if p.text[:em.start()]:
                    index.append(Lit(p.text[:em.start()]))
                tail = p.text[em.end():]
                value = _merge(([Lit(tail)] if tail else []) + parts[k + 1:])
                return name, _merge(index), em.group(1) == "+=", value
        index.append(p)
    return None


class Parser:
    """parse(text) -> Program. Also the scanners of a word's parts, which
    the interpreter reuses for here-document bodies and `eval`."""

    def __init__(self, text: str, source: str = "", line: int = 1, pos: int = 0) -> None:
        self.text = text
        self.n = len(text)
        self.pos = pos
        self.line = line
        self.source = source
        self._peeked: _Tok | None = None
        self._heredocs: list[HereDoc] = []

    # ------------------------------------------------------------ errors
    def error(self, message: str, line: int | None = None) -> ScenarioError:
        return ScenarioError(self.line if line is None else line, message, self.source or None)

    def unexpected(self, tok: _Tok) -> ScenarioError:
        if tok.kind == "eof":
            return self.error("syntax error: unexpected end of file", tok.line)
        shown = "newline" if tok.kind == "nl" else tok.text if tok.text is not None else "word"
        return self.error(f"syntax error near unexpected token `{shown}'", tok.line)

    # ------------------------------------------------------------ scanning
    def _skip_blanks(self) -> None:
        text = self.text
        while self.pos < self.n:
            c = text[self.pos]
            if c in " \t":
                self.pos += 1
            elif c == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2
                self.line += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = self.n if end < 0 else end
            else:
                return

    def peek(self) -> _Tok:
        if self._peeked is None:
            self._peeked = self._scan()
        return self._peeked

    def take(self) -> _Tok:
        tok = self.peek()
        self._peeked = None
        return tok

    def _scan(self) -> _Tok:
        self._skip_blanks()
        if self.pos >= self.n:
            if self._heredocs:
                doc = self._heredocs[0]
                raise self.error(f"here-document at line {doc.line} delimited by end-of-file "
                                 f"(wanted `{doc.delimiter}')", doc.line)
            return _Tok("eof", self.line)
        text, c = self.text, self.text[self.pos]
        line = self.line
        if c == "\n":
            self.pos += 1
            self.line += 1
            if self._heredocs:
                self._read_heredocs()
            return _Tok("nl", line)
        if c in "<>" and text.startswith("(", self.pos + 1):
            if c == ">":
                raise self.error("process substitution >(…) is not supported (only <(…))")
            return self._scan_word()
        if c.isdigit():
            m = _IONUM.match(text, self.pos)
            if m and not text.startswith("(", m.end() + 1):
                self.pos = m.end()
                return _Tok("ionum", line, m.group())
        if c in METACHARS:
            for op in OPERATORS:
                if text.startswith(op, self.pos):
                    self.pos += len(op)
                    return _Tok("op", line, op)
        return self._scan_word()

    def _scan_word(self) -> _Tok:
        line = self.line
        parts: list[Part] = []
        text = self.text
        start = self.pos
        while self.pos < self.n:
            c = text[self.pos]
            if c in "<>" and self.pos == start and text.startswith("(", self.pos + 1):
                self.pos += 2
                parts.append(ProcSub(self._subprogram(")")))
                continue
            if c == "(" and parts and self._array_start(parts):
                items = self._array_items()
                return _Tok("word", line, None, _merge(parts), items)
            if c in METACHARS:
                break
            if c == "\\":
                if text.startswith("\\\n", self.pos):
                    self.pos += 2
                    self.line += 1
                elif self.pos + 1 < self.n:
                    parts.append(Quoted(text[self.pos + 1]))
                    self.pos += 2
                else:
                    parts.append(Lit("\\"))
                    self.pos += 1
            elif c == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error("unexpected EOF while looking for matching `''", line)
                value = text[self.pos + 1:end]
                self.line += value.count("\n")
                parts.append(Quoted(value))
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                parts.append(self._scan_dq(line))
            elif c == "$":
                parts.append(self._scan_dollar(in_dq=False))
            elif c == "`":
                parts.append(self._scan_backquote(in_dq=False))
            elif c == "~" and self.pos == start:
                m = re.compile(r"~([A-Za-z0-9_.-]*)(?=/|$|[\s;&|<>()])").match(text, self.pos)
                if m:
                    parts.append(Tilde(m.group(1)))
                    self.pos = m.end()
                else:
                    parts.append(Lit("~"))
                    self.pos += 1
            else:
                m = _LITERAL.match(text, self.pos)
                assert m
                parts.append(Lit(m.group()))
                self.pos = m.end()
        word = _merge(parts)
        return _Tok("word", line, literal(word), word)

    @staticmethod
    def _array_start(parts: list[Part]) -> bool:
        """NAME=( or NAME+=( : the word so far is that literal."""
        return (len(parts) == 1 and isinstance(parts[0], Lit)
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\+?=", parts[0].text) is not None)

    def _array_items(self) -> tuple[Word, ...]:
        self.pos += 1               # the (
        items: list[Word] = []
        while True:
            tok = self.take()
            if tok.kind == "nl":
                continue
            if tok.kind == "op" and tok.text == ")":
                return tuple(items)
            if tok.kind != "word" or tok.items is not None:
                raise self.unexpected(tok)
            items.append(tok.word)

    def _scan_dq(self, line: int) -> DQ:
        """The inside of "…" up to its closing quote (self.pos is past the opening one)."""
        parts: list[Part] = []
        text = self.text
        while True:
            if self.pos >= self.n:
                raise self.error('unexpected EOF while looking for matching `"\'', line)
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return DQ(_merge(parts))
            if c == "\\" and self.pos + 1 < self.n and text[self.pos + 1] in '$`"\\\n':
                if text[self.pos + 1] == "\n":
                    self.line += 1
                else:
                    parts.append(Quoted(text[self.pos + 1]))
                self.pos += 2
            elif c == "$":
                parts.append(self._scan_dollar(in_dq=True))
            elif c == "`":
                parts.append(self._scan_backquote(in_dq=True))
            else:
                m = re.compile(r'[^"\\$`]+').match(text, self.pos)
                chunk = m.group() if m else c
                self.line += chunk.count("\n")
                parts.append(Quoted(chunk))
                self.pos += len(chunk)

    def scan_template(self, *, arith: bool = False) -> Word:
        """The whole text as the inside of double quotes with `"` an ordinary
        character (a here-document's body), or with `"` removed (arithmetic)."""
        parts: list[Part] = []
        text = self.text
        while self.pos < self.n:
            c = text[self.pos]
            if c == "\\" and self.pos + 1 < self.n and text[self.pos + 1] in "$`\\\n":
                if text[self.pos + 1] == "\n":
                    self.line += 1
                else:
                    parts.append(Quoted(text[self.pos + 1]))
                self.pos += 2
            elif c == "$":
                parts.append(self._scan_dollar(in_dq=True))
            elif c == "`":
                parts.append(self._scan_backquote(in_dq=True))
            elif c == '"' and arith:
                self.pos += 1
            else:
                m = re.compile(r'[^\\$`"]+').match(text, self.pos)
                chunk = m.group() if m else c
                self.line += chunk.count("\n")
                parts.append(Quoted(chunk))
                self.pos += len(chunk)
        return _merge(parts)

    def _scan_dollar(self, in_dq: bool) -> Part:
        text = self.text
        i = self.pos + 1
        nxt = text[i:i + 1]
        if text.startswith("((", i) and (end := self._arith_end(i + 2)) >= 0:
            inner = text[i + 2:end]
            line = self.line
            self.line += inner.count("\n")
            self.pos = end + 2
            return Arith(Parser(inner, self.source, line).scan_template(arith=True))
        if nxt == "(":
            self.pos = i + 1
            return CmdSub(self._subprogram(")"))
        if nxt == "[":                      # $[ … ]: the old spelling of $(( … ))
            end = self._bracket_end(i + 1)
            inner = text[i + 1:end]
            line = self.line
            self.pos = end + 1
            return Arith(Parser(inner, self.source, line).scan_template(arith=True))
        if nxt == "{":
            self.pos = i + 1
            return self._scan_braced(in_dq)
        if nxt == "'" and not in_dq:
            return self._scan_ansi_c(i + 1)
        if nxt == '"' and not in_dq:
            self.pos = i + 1
            return self._scan_dq(self.line)
        m = _NAME.match(text, i)
        if m:
            self.pos = m.end()
            return Param(m.group(), text=f"${m.group()}")
        if nxt and nxt in _SPECIAL:
            self.pos = i + 1
            return Param(nxt, text=f"${nxt}")
        self.pos = i
        return Lit("$") if not in_dq else Quoted("$")

    def _arith_end(self, i: int) -> int:
        """Where the `))` closing a `$((` or `((` starting before i is; -1
        when a lone `)` closes it first (then it is `$( (…) …)`, as bash reads it)."""
        depth = 0
        text = self.text
        while i < self.n:
            c = text[i]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    return i if text.startswith("))", i) else -1
                depth -= 1
            i += 1
        return -1

    def _scan_ansi_c(self, i: int) -> Quoted:
        text, out = self.text, []
        while i < self.n and text[i] != "'":
            c = text[i]
            if c == "\\" and i + 1 < self.n:
                n = text[i + 1]
                if n in ANSI_C:
                    out.append(ANSI_C[n])
                    i += 2
                    continue
                m = re.compile(r"x([0-9a-fA-F]{1,2})|([0-7]{1,3})|u([0-9a-fA-F]{1,4})|c(.)").match(text, i + 1)
                if m:
                    if m.group(1) or m.group(2) or m.group(3):
                        base = 8 if m.group(2) else 16
                        out.append(chr(int(m.group(1) or m.group(2) or m.group(3), base)))
                    else:
                        out.append(chr(ord(m.group(4).upper()) ^ 0x40))
                    i = m.end()
                    continue
                out.append(c + n)
                i += 2
                continue
            if c == "\n":
                self.line += 1
            out.append(c)
            i += 1
        if i >= self.n:
            raise self.error("unexpected EOF while looking for matching `''")
        self.pos = i + 1
        return Quoted("".join(out))

    def _scan_backquote(self, in_dq: bool) -> CmdSub:
        text = self.text
        line = self.line
        i = self.pos + 1
        inner: list[str] = []
        while i < self.n and text[i] != "`":
            if text[i] == "\\" and i + 1 < self.n and (text[i + 1] in "$`\\" or (in_dq and text[i + 1] == '"')):
                inner.append(text[i + 1])
                i += 2
                continue
            inner.append(text[i])
            i += 1
        if i >= self.n:
            raise self.error("unexpected EOF while looking for matching ``'", line)
        body = "".join(inner)
        self.line += body.count("\n")
        self.pos = i + 1
        return CmdSub(Parser(body, self.source, line).parse_program())

    def _scan_braced(self, in_dq: bool) -> Param:
        """${…}; self.pos is past the `{`."""
        text = self.text
        start = self.pos - 2
        line = self.line
        op = ""
        if text.startswith("#", self.pos) and not text.startswith("#}", self.pos):
            op = "length"
            self.pos += 1
        elif text.startswith("!", self.pos) and not text.startswith("!}", self.pos):
            op = "!"
            self.pos += 1
        m = _NAME.match(text, self.pos)
        if m:
            name = m.group()
        elif self.pos < self.n and text[self.pos].isdigit():
            name = re.compile(r"\d+").match(text, self.pos).group()   # type: ignore[union-attr]
        elif self.pos < self.n and text[self.pos] in "@*#?$!-_":
            name = text[self.pos]
        else:
            raise self.error(f"{text[start:self.pos + 1]}: bad substitution")
        self.pos += len(name)
        index: Word | None = None
        if text.startswith("[", self.pos) and _NAME.fullmatch(name):
            close = self._bracket_end(self.pos + 1)
            index = Parser(text[self.pos + 1:close], self.source, self.line).scan_template(arith=True)
            self.pos = close + 1
        if op == "!" and text.startswith(("*}", "@}"), self.pos):
            raise self.error(f"${{!{name}{text[self.pos]}}} (names by prefix) is not supported")
        if op == "!" and index is not None and len(index) == 1 and isinstance(index[0], Quoted) \
                and index[0].text in ("@", "*"):
            op, index = "!@", None
        if text.startswith("}", self.pos):
            self.pos += 1
            return Param(name, index, op, text=text[start:self.pos])
        if op:
            if op == "length":
                raise self.error(f"{text[start:self.pos + 1]}…: bad substitution", line)
        m = re.compile(r":[-=+?]|[-=+?]|##|#|%%|%|//|/#|/%|/|\^\^|\^|,,|,|:").match(text, self.pos)
        if not m:
            if "}" not in text[self.pos:]:
                raise self.error("unexpected EOF while looking for matching `}'", line)
            raise self.error(f"{text[start:text.index('}', self.pos) + 1]}: bad substitution", line)
        op2 = m.group()
        if op == "!":
            raise self.error(f"{text[start:m.end()]}…: indirection with an operator is not supported", line)
        self.pos = m.end()
        if op2 in ("/", "//", "/#", "/%"):
            arg = self._scan_brace_arg(in_dq, stop="/}")
            arg2 = None
            if text.startswith("/", self.pos):
                self.pos += 1
                arg2 = self._scan_brace_arg(in_dq, stop="}")
        elif op2 == ":":
            arg = self._scan_brace_arg(in_dq, stop=":}")
            arg2 = None
            if text.startswith(":", self.pos):
                self.pos += 1
                arg2 = self._scan_brace_arg(in_dq, stop="}")
        else:
            arg, arg2 = self._scan_brace_arg(in_dq, stop="}"), None
        if not text.startswith("}", self.pos):
            raise self.error("unexpected EOF while looking for matching `}'", line)
        self.pos += 1
        return Param(name, index, op2, arg, arg2, text[start:self.pos])

    def _bracket_end(self, i: int) -> int:
        depth = 0
        while i < self.n:
            c = self.text[i]
            if c == "[":
                depth += 1
            elif c == "]":
                if depth == 0:
                    return i
                depth -= 1
            i += 1
        raise self.error("unexpected EOF while looking for matching `]'")

    def _scan_brace_arg(self, in_dq: bool, stop: str) -> Word:
        """The word of a ${NAME OP WORD}: expansions and quotes as in a word,
        blanks literal, up to an unnested character of STOP."""
        parts: list[Part] = []
        text = self.text
        depth = 0
        while True:
            if self.pos >= self.n:
                raise self.error("unexpected EOF while looking for matching `}'")
            c = text[self.pos]
            if depth == 0 and c in stop:
                return _merge(parts)
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if c == "\\" and self.pos + 1 < self.n:
                if text[self.pos + 1] == "\n":
                    self.line += 1
                else:
                    parts.append(Quoted(text[self.pos + 1]))
                self.pos += 2
            elif c == "'" and not in_dq:
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error("unexpected EOF while looking for matching `''")
                parts.append(Quoted(text[self.pos + 1:end]))
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                parts.append(self._scan_dq(self.line))
            elif c == "$":
                parts.append(self._scan_dollar(in_dq=in_dq))
            elif c == "`":
                parts.append(self._scan_backquote(in_dq=in_dq))
            else:
                if c == "\n":
                    self.line += 1
                parts.append(Quoted(c) if in_dq else Lit(c))
                self.pos += 1

    def _subprogram(self, close: str) -> "Program":
        """A program up to the `)` that closes it (self.pos is past the opening)."""
        child = Parser(self.text, self.source, self.line, self.pos)
        body = child.parse_sequence(stop_ops=(close,))
        tok = child.take()
        if tok.kind != "op" or tok.text != close:
            raise child.unexpected(tok) if tok.kind != "eof" else \
                child.error("unexpected EOF while looking for matching `)'", self.line)
        self.pos, self.line = child.pos, child.line
        return Program(body, self.source)

    def _read_heredocs(self) -> None:
        text = self.text
        for doc in self._heredocs:
            lines: list[str] = []
            while True:
                if self.pos >= self.n:
                    raise self.error(f"here-document at line {doc.line} delimited by end-of-file "
                                     f"(wanted `{doc.delimiter}')", doc.line)
                end = text.find("\n", self.pos)
                raw = text[self.pos:] if end < 0 else text[self.pos:end]
                self.pos = self.n if end < 0 else end + 1
                self.line += 1
                if doc.strip_tabs:
                    raw = raw.lstrip("\t")
                if raw == doc.delimiter:
                    break
                lines.append(raw + "\n")
            body = "".join(lines)
            doc.body = (Quoted(body),) if doc.quoted else \
                Parser(body, self.source, doc.line + 1).scan_template()
        self._heredocs = []

    # ------------------------------------------------------------ grammar
    def parse_program(self) -> Program:
        body = self.parse_sequence()
        tok = self.take()
        if tok.kind != "eof":
            raise self.unexpected(tok)
        return Program(body, self.source)

    def _reserved(self, tok: _Tok, *words: str) -> bool:
        return tok.kind == "word" and tok.text in words

    def _linebreak(self) -> None:
        while self.peek().kind == "nl":
            self.take()

    def parse_sequence(self, stop_words: tuple[str, ...] = (), stop_ops: tuple[str, ...] = ()) -> Sequence:
        """Commands separated by ; & or newlines, up to a reserved word of
        STOP_WORDS where a command would start, an operator of STOP_OPS, or the end."""
        items: list[Item] = []
        while True:
            self._linebreak()
            tok = self.peek()
            if tok.kind == "eof" or (tok.kind == "op" and tok.text in stop_ops) \
                    or self._reserved(tok, *stop_words):
                return Sequence(tuple(items))
            if tok.kind == "op" and tok.text in (";", ";;", "&", ";&", ";;&", ")", "|", "||", "&&", "|&"):
                raise self.unexpected(tok)
            command = self.parse_and_or()
            tok = self.peek()
            background = False
            if tok.kind == "op" and tok.text in (";", "&"):
                self.take()
                background = tok.text == "&"
            elif tok.kind == "nl":
                self.take()
            elif not (tok.kind == "eof" or (tok.kind == "op" and tok.text in stop_ops)
                      or self._reserved(tok, *stop_words)):
                raise self.unexpected(tok)
            items.append(Item(command, background))

    def _compound_list(self, stop_words: tuple[str, ...]) -> Sequence:
        """The commands of an if, a loop or a { } group up to STOP_WORDS: at
        least one, as bash's grammar has it (`if then` is an error near `then')."""
        body = self.parse_sequence(stop_words=stop_words)
        if not body.items and self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        return body

    def parse_and_or(self) -> AndOr:
        first = self.parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in ("&&", "||"):
                self.take()
                self._linebreak()
                rest.append((tok.text, self.parse_pipeline()))
            else:
                return AndOr(first.line, first, tuple(rest))

    def parse_pipeline(self) -> Pipeline:
        tok = self.peek()
        line = tok.line
        negate = False
        while self._reserved(tok, "!"):
            self.take()
            negate = not negate
            tok = self.peek()
        commands = [self.parse_command()]
        stderr_too: list[bool] = []
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in ("|", "|&"):
                self.take()
                self._linebreak()
                stderr_too.append(tok.text == "|&")
                commands.append(self.parse_command())
            else:
                return Pipeline(line, tuple(commands), negate, tuple(stderr_too))

    def parse_command(self) -> Command:
        tok = self.peek()
        line = tok.line
        if tok.kind == "op":
            if tok.text == "(":
                self.take()
                body = self.parse_sequence(stop_ops=(")",))
                self._expect_op(")", "(", line)
                return Subshell(line, body, self._redirections())
            if tok.text == "((":
                self._peeked = None
                return ArithCmd(line, self._arith_text(), self._redirections())
            if tok.text in REDIRECT_OPS:
                return self._simple()
            raise self.unexpected(tok)
        if tok.kind == "word" and tok.text is not None and tok.items is None:
            word = tok.text
            if word in UNSUPPORTED_WORDS:
                raise self.error(f"{UNSUPPORTED_WORDS[word]} are not supported", line)
            if word == "if":
                return self._if()
            if word in ("while", "until"):
                return self._loop(word == "until")
            if word == "for":
                return self._for()
            if word == "case":
                return self._case()
            if word == "{":
                self.take()
                body = self._compound_list(("}",))
                self._expect_word("}", "{", line)
                return Group(line, body, self._redirections())
            if word == "[[":
                self.take()
                return Cond(line, self._cond(), self._redirections())
            if word == "function":
                self.take()
                name = self.take()
                if name.kind != "word" or name.text is None:
                    raise self.unexpected(name)
                if self.peek().kind == "op" and self.peek().text == "(":
                    self.take()
                    self._expect_op(")", "(", line)
                return self._function_body(name.text, line)
            if word in ("then", "elif", "else", "fi", "do", "done", "esac", "}"):
                raise self.unexpected(tok)
        if tok.kind in ("word", "ionum"):
            return self._simple()
        raise self.unexpected(tok)

    def _function_body(self, name: str, line: int) -> FunctionDef:
        if not re.fullmatch(r"[^\s$`'\"\\=|&;()<>]+", name):
            raise self.error(f"`{name}': not a valid identifier", line)
        self._linebreak()
        tok = self.peek()
        if not ((tok.kind == "op" and tok.text in ("(", "((")) or self._reserved(
                tok, "{", "if", "while", "until", "for", "case", "[[")):
            raise self.unexpected(tok)
        return FunctionDef(line, name, self.parse_command(), self.source)

    def _expect_op(self, op: str, opened: str, line: int) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            if tok.kind == "eof":
                raise self.error(f"syntax error: unexpected end of file ('{opened}' on line {line} "
                                 f"has no '{op}')", tok.line)
            raise self.unexpected(tok)

    def _expect_word(self, word: str, opened: str, line: int) -> None:
        tok = self.take()
        if not self._reserved(tok, word):
            if tok.kind == "eof":
                raise self.error(f"syntax error: unexpected end of file ('{opened}' on line {line} "
                                 f"has no '{word}')", tok.line)
            raise self.unexpected(tok)

    def _if(self) -> If:
        line = self.take().line
        clauses: list[tuple[Sequence, Sequence]] = []
        orelse: Sequence | None = None
        while True:
            cond = self._compound_list(("then",))
            self._expect_word("then", "if", line)
            body = self._compound_list(("elif", "else", "fi"))
            clauses.append((cond, body))
            tok = self.take()
            if self._reserved(tok, "elif"):
                continue
            if self._reserved(tok, "else"):
                orelse = self._compound_list(("fi",))
                self._expect_word("fi", "if", line)
            elif not self._reserved(tok, "fi"):
                if tok.kind == "eof":
                    raise self.error(f"syntax error: unexpected end of file ('if' on line {line} has no 'fi')",
                                     tok.line)
                raise self.unexpected(tok)
            return If(line, tuple(clauses), orelse, self._redirections())

    def _loop(self, until: bool) -> Loop:
        line = self.take().line
        keyword = "until" if until else "while"
        cond = self._compound_list(("do",))
        self._expect_word("do", keyword, line)
        body = self._compound_list(("done",))
        self._expect_word("done", keyword, line)
        return Loop(line, cond, body, until, self._redirections())

    def _for(self) -> For | ArithFor:
        line = self.take().line
        tok = self.peek()
        if tok.kind == "op" and tok.text == "((":
            self._peeked = None
            expr = self._arith_text()
            pieces = _split_arith_for(expr)
            if pieces is None:
                raise self.error("for ((…)) needs three expressions separated by ';'", line)
            tok = self.peek()
            if tok.kind == "op" and tok.text == ";":
                self.take()
            self._linebreak()
            opened = self.take()
            if not self._reserved(opened, "do", "{"):
                raise self.unexpected(opened)
            close = "done" if opened.text == "do" else "}"
            body = self._compound_list((close,))
            self._expect_word(close, "for", line)
            return ArithFor(line, *pieces, body, self._redirections())
        name = self.take()
        if name.kind != "word" or name.text is None or not _NAME.fullmatch(name.text):
            raise self.error(f"`{name.text or ''}': not a valid identifier", line)
        words: tuple[Word, ...] | None = None
        self._linebreak()
        tok = self.peek()
        if self._reserved(tok, "in"):
            self.take()
            collected: list[Word] = []
            while True:
                tok = self.take()
                if tok.kind == "word":
                    collected.append(tok.word)
                elif (tok.kind == "op" and tok.text == ";") or tok.kind == "nl":
                    break
                else:
                    raise self.unexpected(tok)
            words = tuple(collected)
        elif tok.kind == "op" and tok.text == ";":
            self.take()
        self._linebreak()
        self._expect_word("do", "for", line)
        body = self._compound_list(("done",))
        self._expect_word("done", "for", line)
        return For(line, name.text, words, body, self._redirections())

    def _case(self) -> Case:
        line = self.take().line
        tok = self.take()
        if tok.kind != "word":
            raise self.unexpected(tok)
        word = tok.word
        self._linebreak()
        self._expect_word("in", "case", line)
        items: list[CaseItem] = []
        while True:
            self._linebreak()
            tok = self.peek()
            if self._reserved(tok, "esac"):
                self.take()
                return Case(line, word, tuple(items), self._redirections())
            if tok.kind == "eof":
                raise self.error(f"syntax error: unexpected end of file ('case' on line {line} has no 'esac')",
                                 tok.line)
            if tok.kind == "op" and tok.text == "(":
                self.take()
            patterns: list[Word] = []
            while True:
                tok = self.take()
                if tok.kind != "word":
                    raise self.unexpected(tok)
                patterns.append(tok.word)
                tok = self.take()
                if tok.kind == "op" and tok.text == "|":
                    continue
                if tok.kind == "op" and tok.text == ")":
                    break
                raise self.unexpected(tok)
            body = self.parse_sequence(stop_words=("esac",), stop_ops=(";;", ";&", ";;&"))
            tok = self.peek()
            terminator = ";;"
            if tok.kind == "op" and tok.text in (";;", ";&", ";;&"):
                terminator = self.take().text or ";;"
            items.append(CaseItem(tuple(patterns), body, terminator))

    def _arith_text(self) -> Word:
        """`(( … ))` as a word; self.pos is past the `((`."""
        end = self._arith_end(self.pos)
        if end < 0:
            raise self.error("`(( … ))' without its `))' (nested subshells need a space: `( (…) )')")
        inner = self.text[self.pos:end]
        line = self.line
        self.line += inner.count("\n")
        self.pos = end + 2
        return Parser(inner, self.source, line).scan_template(arith=True)

    # ------------------------------------------------------------ [[ … ]]
    def _cond(self) -> CondExpr:
        line = self.line
        tokens: list[_Tok] = []
        while True:
            tok = self.take()
            if tok.kind == "nl":
                continue
            if tok.kind == "eof":
                raise self.error(f"syntax error: unexpected end of file ('[[' on line {line} has no ']]')", line)
            if self._reserved(tok, "]]"):
                break
            tokens.append(tok)
            if tok.kind == "word" and tok.text == "=~":
                tokens.append(self._regex_word())
        if not tokens:
            raise self.error("syntax error: [[ ]] needs an expression", line)
        parser = _CondParser(tokens, self, line)
        expr = parser.parse_or()
        if parser.k != len(tokens):
            raise self.unexpected(tokens[parser.k])
        return expr

    def _regex_word(self) -> _Tok:
        """The right side of =~: blanks end it, but ( ) | are part of it."""
        self._skip_blanks()
        line = self.line
        start = self.pos
        depth = 0
        parts: list[Part] = []
        text = self.text
        while self.pos < self.n:
            c = text[self.pos]
            if c in " \t\n" and depth == 0:
                break
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            if c == "\\" and self.pos + 1 < self.n:
                parts.append(Quoted(text[self.pos + 1]))
                self.pos += 2
            elif c == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error("unexpected EOF while looking for matching `''")
                parts.append(Quoted(text[self.pos + 1:end]))
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                parts.append(self._scan_dq(line))
            elif c == "$":
                parts.append(self._scan_dollar(in_dq=False))
            else:
                parts.append(Lit(c))
                self.pos += 1
        if self.pos == start:
            raise self.error("syntax error: =~ needs a regular expression", line)
        word = _merge(parts)
        return _Tok("word", line, literal(word), word)

    # ------------------------------------------------------------ simple commands
    def _simple(self) -> Simple:
        line = self.peek().line
        assigns: list[Assign] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        while True:
            tok = self.peek()
            if tok.kind == "ionum" or (tok.kind == "op" and tok.text in REDIRECT_OPS):
                redirs.append(self._redirection())
                continue
            if tok.kind != "word":
                break
            if not words and tok.text is not None and tok.text in RESERVED and tok.text not in ("{", "}", "!",
                                                                                             "[[", "]]", "in"):
                break
            self.take()
            if not words:
                target = assignment_parts(tok.word)
                if tok.items is not None:
                    head = tok.word[0].text if tok.word and isinstance(tok.word[0], Lit) else ""
                    name = head.rstrip("+=")
                    assigns.append(Assign(name, None, None, tok.items, head.endswith("+="), head + "(…)"))
                    continue
                if target is not None:
                    name, index, append, value = target
                    assigns.append(Assign(name, index, value, None, append, _shown(tok.word)))
                    continue
                if tok.text is not None and self.peek().kind == "op" and self.peek().text == "(" \
                        and not assigns and not redirs:
                    self.take()
                    self._expect_op(")", "(", line)
                    return self._function_body(tok.text, line)       # type: ignore[return-value]
            elif tok.items is not None:
                raise self.error("NAME=(…) as an argument (an array given to local or declare) is not supported",
                                 tok.line)
            words.append(tok.word)
        if not (assigns or words or redirs):
            raise self.unexpected(self.peek())
        return Simple(line, tuple(assigns), tuple(words), tuple(redirs))

    def _redirections(self) -> tuple[Redir, ...]:
        redirs: list[Redir] = []
        while True:
            tok = self.peek()
            if tok.kind == "ionum" or (tok.kind == "op" and tok.text in REDIRECT_OPS):
                redirs.append(self._redirection())
            else:
                return tuple(redirs)

    def _redirection(self) -> Redir:
        tok = self.take()
        line = tok.line
        fd: int | None = None
        if tok.kind == "ionum":
            fd = int(tok.text or "0")
            tok = self.take()
        op = tok.text or ""
        if op == "<>":
            raise self.error("the <> redirection (read and write) is not supported", line)
        if op == ">|":
            op = ">"
        target = self.take()
        if target.kind != "word" or target.items is not None:
            raise self.unexpected(target)
        if op in ("<<", "<<-"):
            quoted = any(not isinstance(p, Lit) for p in target.word)
            delimiter = "".join(p.text if isinstance(p, (Lit, Quoted)) else
                                "".join(q.text for q in p.parts if isinstance(q, Quoted))
                                if isinstance(p, DQ) else "$" for p in target.word)
            doc = HereDoc(delimiter, quoted, op == "<<-", line=line)
            self._heredocs.append(doc)
            return Redir(fd, "<<", doc, line)
        return Redir(fd, op, target.word, line)


def _shown(word: Word) -> str:
    out = []
    for p in word:
        out.append(p.text if isinstance(p, (Lit, Quoted, Param)) else "…")
    return "".join(out)


def _split_arith_for(expr: Word) -> tuple[Word, Word, Word] | None:
    """((INIT; COND; STEP)) into its three words."""
    pieces: list[list[Part]] = [[]]
    for p in expr:
        if isinstance(p, Quoted) and ";" in p.text:
            chunks = p.text.split(";")
            for k, chunk in enumerate(chunks):
                if k:
                    pieces.append([])
                if chunk:
                    pieces[-1].append(Quoted(chunk))
        else:
            pieces[-1].append(p)
    if len(pieces) != 3:
        return None
    return tuple(_merge(p) for p in pieces)      # type: ignore[return-value]


class _CondParser:
    """[[ … ]]'s grammar over its tokens: || over && over ! over primaries."""

    def __init__(self, tokens: list[_Tok], outer: Parser, line: int) -> None:
        self.tokens = tokens
        self.k = 0
        self.outer = outer
        self.line = line

    def _peek(self) -> _Tok | None:
        return self.tokens[self.k] if self.k < len(self.tokens) else None

    def _is(self, tok: _Tok | None, *texts: str) -> bool:
        return tok is not None and tok.text in texts and (tok.kind == "op" or tok.kind == "word")

    def parse_or(self) -> CondExpr:
        left = self.parse_and()
        while self._is(self._peek(), "||") and self._peek().kind == "op":     # type: ignore[union-attr]
            self.k += 1
            left = CondOr(left, self.parse_and())
        return left

    def parse_and(self) -> CondExpr:
        left = self.parse_not()
        while self._is(self._peek(), "&&") and self._peek().kind == "op":     # type: ignore[union-attr]
            self.k += 1
            left = CondAnd(left, self.parse_not())
        return left

    def parse_not(self) -> CondExpr:
        tok = self._peek()
        if tok is not None and tok.kind == "word" and tok.text == "!":
            self.k += 1
            return CondNot(self.parse_not())
        return self.primary()

    def _word(self) -> Word:
        tok = self._peek()
        if tok is None:
            raise self.outer.error("syntax error in conditional expression: unexpected end", self.line)
        if tok.kind == "op" and tok.text in ("<", ">"):
            raise self.outer.unexpected(tok)
        if tok.kind != "word":
            raise self.outer.unexpected(tok)
        self.k += 1
        return tok.word

    def primary(self) -> CondExpr:
        tok = self._peek()
        if tok is None:
            raise self.outer.error("syntax error in conditional expression: unexpected end", self.line)
        if tok.kind == "op" and tok.text == "(":
            self.k += 1
            expr = self.parse_or()
            close = self._peek()
            if close is None or close.kind != "op" or close.text != ")":
                raise self.outer.error("syntax error in conditional expression: expected `)'", self.line)
            self.k += 1
            return expr
        if tok.kind == "word" and tok.text in COND_UNARY:
            nxt = self.tokens[self.k + 1] if self.k + 1 < len(self.tokens) else None
            binary_follows = nxt is not None and (nxt.text in COND_BINARY and nxt.kind in ("word", "op"))
            if nxt is not None and nxt.kind == "word" and not binary_follows:
                self.k += 1
                return CondUnary(tok.text, self._word())
        left = self._word()
        op = self._peek()
        if op is not None and op.text in COND_BINARY and op.kind in ("word", "op"):
            self.k += 1
            if op.kind == "op" and op.text in ("<", ">"):
                pass
            return CondBinary(op.text or "", left, self._word())
        return CondWord(left)


def parse(text: str, source: str = "", line: int = 1) -> Program:
    """The program TEXT holds (ScenarioError for a syntax error, or for
    constructs nested deeper than the parser's recursion allows)."""
    parser = Parser(text, source, line)
    try:
        return parser.parse_program()
    except RecursionError:
        raise parser.error("nesting too deep (more than the shell's limit of nested compound commands, "
                           "$( ), quotes or expansions)") from None
