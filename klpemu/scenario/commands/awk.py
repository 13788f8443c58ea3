"""awk (POSIX), small but honest: a program of `pattern { action }` items
(BEGIN and END, expressions, /regex/, ranges), over records of standard
input or files split into fields by FS (" ": runs of blanks; one other
character; else an extended regex, as -F'[: ]').

Statements: print and printf (to standard output), expressions and
assignments (= += -= *= /= %= ^=, ++, --), if/else, while, do, for (both
forms), break, continue, next, exit, delete, { … }, user functions.
Expressions: awk's precedence, string concatenation, comparisons with
awk's number/string rules (fields and -v values that look numeric compare
as numbers), ~ and !~, `in`, ?:, $N and NF, NR, FNR, FS, OFS, ORS,
FILENAME, RSTART, RLENGTH, SUBSEP. Functions: length substr index split
sub gsub match sprintf tolower toupper int sqrt exp log sin cos atan2.
Anything else (getline, output redirection, system …) is an error naming it.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

from klpemu.scenario import formats
from klpemu.scenario.fs import FsError
from klpemu.scenario.patterns import PatternError, ere_to_python

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc


class AwkError(Exception):
    """A program awk cannot run; the message names the construct."""


class StrNum(str):
    """A string from input (a field, a -v value): a number if it looks like one
    (decided when first asked)."""
    __slots__ = ("_numeric",)
    _UNKNOWN = object()

    def __new__(cls, text: str, numeric: float | None = None, force: bool = False) -> "StrNum":
        obj = super().__new__(cls, text)
        obj._numeric = numeric if force else StrNum._UNKNOWN
        return obj

    @property
    def numeric(self) -> float | None:
        if self._numeric is StrNum._UNKNOWN:
            self._numeric = _looks_numeric(self)
        return self._numeric          # type: ignore[return-value]


_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|0[xX][0-9a-fA-F]+)\s*\Z")
_PREFIX = re.compile(r"\s*[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")


_HEX = re.compile(r"0[xX]")
_NUMBER_START = frozenset("0123456789+-.")


def _looks_numeric(text: str) -> float | None:
    first = text[:1]
    if first and first not in _NUMBER_START and not first.isspace():
        return None                   # (what _NUMBER cannot match: a log line, a name)
    if _NUMBER.match(text) and not _HEX.search(text):
        return float(text)
    return None


UNINIT = StrNum("", 0.0, force=True)
_ASSIGN_OPERAND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
Value = Any        # float | str | StrNum


def num(v: Value) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, StrNum) and v.numeric is not None:
        return v.numeric
    m = _PREFIX.match(v)
    return float(m.group()) if m else 0.0


def fmt_number(v: float, convfmt: str = "%.6g") -> str:
    if v == int(v) and abs(v) < 1e16:
        return str(int(v))
    return convfmt % v


def text(v: Value) -> str:
    if isinstance(v, float):
        return fmt_number(v)
    return str(v)


def truth(v: Value) -> bool:
    if isinstance(v, float):
        return v != 0
    if isinstance(v, StrNum) and v.numeric is not None:
        return v.numeric != 0
    return v != ""


def _is_numeric(v: Value) -> bool:
    return isinstance(v, float) or (isinstance(v, StrNum) and v.numeric is not None)


def compare(a: Value, b: Value) -> int:
    if _is_numeric(a) and _is_numeric(b):
        x, y = num(a), num(b)
    else:                            # (a string, a field's StrNum too, compares as it is)
        x = a if isinstance(a, str) else text(a)
        y = b if isinstance(b, str) else text(b)
    return (x > y) - (x < y)


# ---------------------------------------------------------------- lexing
_KEYWORDS = {"BEGIN", "END", "function", "func", "if", "else", "while", "for", "do", "break", "continue",
             "next", "nextfile", "exit", "return", "delete", "in", "print", "printf", "getline"}
_BUILTINS = {"length", "substr", "index", "split", "sub", "gsub", "match", "sprintf", "tolower", "toupper",
             "int", "sqrt", "exp", "log", "sin", "cos", "atan2", "rand", "srand", "system", "close", "fflush"}
_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+|\\\n|\#[^\n]*)
  | (?P<nl>\n)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<funcname>[A-Za-z_][A-Za-z0-9_]*\()
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\+\+|--|\+=|-=|\*=|/=|%=|\^=|\*\*=|\*\*|==|<=|>=|!=|!~|&&|\|\||>>|[-+*/%^!<>=~?:,;{}()\[\]$|])
""", re.X)


def _tokens(program: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(program):
        # a regex literal where an operand may start
        if program[i] == "/" and _regex_allowed(out):
            j = i + 1
            buf = []
            while j < len(program) and program[j] != "/":
                if program[j] == "\\" and j + 1 < len(program):
                    buf.append(program[j:j + 2] if program[j + 1] != "/" else "/")
                    j += 2
                    continue
                if program[j] == "\n":
                    raise AwkError("newline in regex")
                buf.append(program[j])
                j += 1
            if j >= len(program):
                raise AwkError("non-terminated regular expression")
            out.append(("regex", "".join(buf)))
            i = j + 1
            continue
        m = _TOKEN.match(program, i)
        if not m:
            raise AwkError(f"syntax error at source line 1: unexpected character '{program[i]}'")
        kind = m.lastgroup or ""
        value = m.group()
        i = m.end()
        if kind == "ws":
            continue
        if kind == "funcname":
            name = value[:-1]
            out.append(("kw" if name in _KEYWORDS else "builtin" if name in _BUILTINS else "call", name))
            out.append(("op", "("))
            continue
        if kind == "name" and value in _KEYWORDS:
            kind = "kw"
        elif kind == "name" and value in _BUILTINS:
            kind = "builtin"
        out.append((kind, value))
    out.append(("eof", ""))
    return out


def _regex_allowed(tokens: list[tuple[str, str]]) -> bool:
    if not tokens:
        return True
    kind, value = tokens[-1]
    if kind in ("number", "string", "name", "regex", "builtin"):
        return False
    if kind == "op" and value in (")", "]", "$", "++", "--"):
        return False
    return True


def _unescape(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "/": "/",
                                       "a": "\a", "b": "\b", "f": "\f", "v": "\v"}.get(m.group(1),
                                                                                   "\\" + m.group(1)), body)


# ---------------------------------------------------------------- runtime
class _Next(Exception):
    pass


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Value) -> None:
        self.value = value


class Env:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.vars: dict[str, Value] = {"FS": " ", "OFS": " ", "ORS": "\n", "NR": 0.0, "NF": 0.0, "FNR": 0.0,
                                       "SUBSEP": "\x1c", "RSTART": 0.0, "RLENGTH": -1.0, "FILENAME": "",
                                       "CONVFMT": "%.6g", "OFMT": "%.6g", "RS": "\n"}
        self.arrays: dict[str, dict[str, Value]] = {}
        self.fields: list[Value] = [UNINIT]
        self.split_done = True
        self.out = out
        self.functions: dict[str, tuple[list[str], Callable[["Env"], None]]] = {}
        self.frames: list[dict[str, Any]] = []
        self.regexes: dict[str, re.Pattern[str]] = {}

    # fields, split when first wanted
    def set_record(self, line: str) -> None:
        self.fields = [StrNum(line)]
        self.split_done = False

    def _ensure_split(self) -> None:
        if not self.split_done:
            self._split()

    def _split(self) -> None:
        self.split_done = True
        record = str(self.fields[0])
        fs = text(self.vars["FS"])
        if fs == " ":
            parts = record.split()
        elif record == "":
            parts = []
        elif len(fs) == 1 and fs not in "\\^$.[]|()*+?{}":
            parts = record.split(fs)
        else:
            parts = self.regex(fs).split(record)
        self.fields = [self.fields[0], *(StrNum(p) for p in parts)]
        self.vars["NF"] = float(len(parts))

    def field(self, k: int) -> Value:
        if k < 0:
            raise AwkError(f"trying to access out of range field {k}")
        if k:
            self._ensure_split()
        return self.fields[k] if k < len(self.fields) else UNINIT

    def set_field(self, k: int, value: Value) -> None:
        if k == 0:
            self.fields = [StrNum(text(value))]
            self._split()
            return
        self._ensure_split()
        while len(self.fields) <= k:
            self.fields.append(UNINIT)
        self.fields[k] = value
        self.vars["NF"] = float(len(self.fields) - 1)
        self._rebuild()

    def set_nf(self, n: int) -> None:
        self._ensure_split()
        self.fields = (self.fields + [UNINIT] * n)[:n + 1]
        self._rebuild()

    def _rebuild(self) -> None:
        self.fields[0] = StrNum(text(self.vars["OFS"]).join(text(f) for f in self.fields[1:]))

    # variables (function parameters first)
    def get(self, name: str) -> Value:
        if self.frames and name in self.frames[-1]:
            v = self.frames[-1][name]
            return v if not isinstance(v, dict) else UNINIT
        if name == "NF":
            self._ensure_split()
        return self.vars.get(name, UNINIT)

    def set(self, name: str, value: Value) -> None:
        if self.frames and name in self.frames[-1]:
            self.frames[-1][name] = value
            return
        self.vars[name] = value
        if name == "NF":
            self.set_nf(int(num(value)))
        elif name == "RS" and text(value) != "\n":
            raise AwkError("RS other than a newline is not supported")

    def array(self, name: str) -> dict[str, Value]:
        if self.frames and name in self.frames[-1]:
            v = self.frames[-1][name]
            if not isinstance(v, dict):
                if v is not UNINIT:
                    raise AwkError(f"can't use scalar {name} as array")
                v = self.frames[-1][name] = {}
            return v
        return self.arrays.setdefault(name, {})

    def regex(self, source: str) -> re.Pattern[str]:
        rx = self.regexes.get(source)
        if rx is None:
            try:
                rx = self.regexes[source] = re.compile(ere_to_python(source))
            except (re.error, PatternError) as exc:
                raise AwkError(f"bad regex '{source}': {exc}") from None
        return rx


Expr = Callable[[Env], Value]
Stmt = Callable[[Env], None]


def _subscript(v: Value) -> str:
    return fmt_number(v) if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- parsing (to closures)
class _Parser:
    def __init__(self, program: str) -> None:
        self.toks = _tokens(program)
        self.k = 0
        self.in_print = 0              # `>` is redirection at the top of print's list
        self.begin: list[Stmt] = []
        self.end: list[Stmt] = []
        self.items: list[tuple[Any, Stmt | None]] = []
        self.functions: dict[str, tuple[list[str], Any]] = {}

    def peek(self, offset: int = 0) -> tuple[str, str]:
        return self.toks[min(self.k + offset, len(self.toks) - 1)]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.k]
        self.k += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        kind, value = self.peek()
        return kind == "op" and value in ops

    def is_kw(self, *words: str) -> bool:
        kind, value = self.peek()
        return kind == "kw" and value in words

    def expect(self, value: str) -> None:
        kind, got = self.take()
        if got != value or kind not in ("op", "kw"):
            raise AwkError(f"syntax error: expected '{value}' near '{got or 'end of program'}'")

    def newlines(self) -> None:
        while self.peek()[0] == "nl" or self.is_op(";"):
            self.take()

    def opt_newlines(self) -> None:
        while self.peek()[0] == "nl":
            self.take()

    # program
    def program(self) -> None:
        self.newlines()
        while self.peek()[0] != "eof":
            if self.is_kw("BEGIN"):
                self.take()
                self.opt_newlines()
                self.begin.append(self.block())
            elif self.is_kw("END"):
                self.take()
                self.opt_newlines()
                self.end.append(self.block())
            elif self.is_kw("function", "func"):
                self.function()
            else:
                pattern: Any = None
                if not self.is_op("{"):
                    first = self.expr()
                    if self.is_op(","):
                        self.take()
                        self.opt_newlines()
                        pattern = ("range", first, self.expr())
                    else:
                        pattern = first
                action = self.block() if self.is_op("{") else None
                self.items.append((pattern, action))
            self.newlines()

    def function(self) -> None:
        self.take()
        kind, name = self.take()
        if kind not in ("name", "call"):
            raise AwkError(f"syntax error: bad function name '{name}'")
        self.expect("(")
        params: list[str] = []
        while not self.is_op(")"):
            kind, p = self.take()
            if kind != "name":
                raise AwkError(f"syntax error in the parameters of function {name}")
            params.append(p)
            if self.is_op(","):
                self.take()
                self.opt_newlines()
        self.take()
        self.opt_newlines()
        self.functions[name] = (params, None)
        body = self.block()
        self.functions[name] = (params, body)

    def block(self) -> Stmt:
        self.expect("{")
        stmts = self.statements("}")
        self.expect("}")
        return _seq(stmts)

    def statements(self, close: str) -> list[Stmt]:
        stmts: list[Stmt] = []
        self.newlines()
        while not self.is_op(close) and self.peek()[0] != "eof":
            stmts.append(self.statement())
            self.newlines()
        return stmts

    def simple_end(self) -> None:
        if self.is_op(";") or self.peek()[0] == "nl":
            self.take()
        elif not (self.is_op("}") or self.peek()[0] == "eof"):
            raise AwkError(f"syntax error near '{self.peek()[1]}'")

    def statement(self) -> Stmt:
        kind, value = self.peek()
        if kind == "op" and value == "{":
            return self.block()
        if kind == "op" and value == ";":
            self.take()
            return lambda env: None
        if kind == "kw":
            if value == "if":
                self.take()
                self.expect("(")
                cond = self.expr()
                self.expect(")")
                self.opt_newlines()
                then = self.statement()
                save = self.k
                self.newlines()
                if self.is_kw("else"):
                    self.take()
                    self.opt_newlines()
                    other = self.statement()
                    return lambda env: then(env) if truth(cond(env)) else other(env)
                self.k = save
                return lambda env: then(env) if truth(cond(env)) else None
            if value == "while":
                self.take()
                self.expect("(")
                cond = self.expr()
                self.expect(")")
                if self.is_op(";"):
                    self.take()
                    return _while(cond, lambda env: None)
                self.opt_newlines()
                return _while(cond, self.statement())
            if value == "do":
                self.take()
                self.opt_newlines()
                body = self.statement()
                self.newlines()
                if not self.is_kw("while"):
                    raise AwkError("syntax error: do without while")
                self.take()
                self.expect("(")
                cond = self.expr()
                self.expect(")")
                self.simple_end()
                return _do(body, cond)
            if value == "for":
                return self.for_statement()
            if value in ("break", "continue"):
                self.take()
                self.simple_end()
                exc = _Break if value == "break" else _Continue

                def jump(env: Env, exc: type[Exception] = exc) -> None:
                    raise exc()
                return jump
            if value == "next":
                self.take()
                self.simple_end()

                def nxt(env: Env) -> None:
                    raise _Next()
                return nxt
            if value == "exit":
                self.take()
                code = None if self.is_op(";", "}") or self.peek()[0] in ("nl", "eof") else self.expr()
                self.simple_end()

                def leave(env: Env) -> None:
                    raise _Exit(int(num(code(env))) if code else 0)
                return leave
            if value == "return":
                self.take()
                result = None if self.is_op(";", "}") or self.peek()[0] in ("nl", "eof") else self.expr()
                self.simple_end()

                def ret(env: Env) -> None:
                    raise _Return(result(env) if result else UNINIT)
                return ret
            if value == "delete":
                self.take()
                kind, name = self.take()
                if kind != "name":
                    raise AwkError("syntax error: delete needs an array")
                if self.is_op("["):
                    index = self.subscript()
                    self.simple_end()
                    return lambda env: env.array(name).pop(index(env), None) and None
                self.simple_end()
                return lambda env: env.array(name).clear()
            if value in ("print", "printf"):
                stmt = self.print_statement(value)
                self.simple_end()
                return stmt
            if value == "getline":
                raise AwkError("getline is not supported")
        e = self.expr()
        self.simple_end()
        return lambda env: (e(env), None)[1]

    def for_statement(self) -> Stmt:
        self.take()
        self.expect("(")
        if self.peek()[0] == "name" and self.peek(1) == ("kw", "in") and self.peek(3) == ("op", ")"):
            var = self.take()[1]
            self.take()
            kind, array = self.take()
            if kind != "name":
                raise AwkError("syntax error: for (k in ARRAY)")
            self.expect(")")
            self.opt_newlines()
            body = self.statement()

            def loop(env: Env) -> None:
                for key in list(env.array(array)):
                    env.set(var, StrNum(key))
                    try:
                        body(env)
                    except _Continue:
                        continue
                    except _Break:
                        break
            return loop
        init = None if self.is_op(";") else self.expr()
        self.expect(";")
        self.opt_newlines()
        cond = None if self.is_op(";") else self.expr()
        self.expect(";")
        self.opt_newlines()
        step = None if self.is_op(")") else self.expr()
        self.expect(")")
        if self.is_op(";"):
            self.take()
            body: Stmt = lambda env: None     # noqa: E731
        else:
            self.opt_newlines()
            body = self.statement()

        def c_loop(env: Env) -> None:
            if init:
                init(env)
            while cond is None or truth(cond(env)):
                try:
                    body(env)
                except _Continue:
                    pass
                except _Break:
                    break
                if step:
                    step(env)
        return c_loop

    def print_statement(self, which: str) -> Stmt:
        self.take()
        self.in_print += 1
        try:
            args: list[Expr] = []
            if self.is_op("(") and self._paren_list_follows():
                self.take()
                args = self.expr_list()
                self.expect(")")
            elif not (self.is_op(";", "}", ">", "|") or self.peek()[0] in ("nl", "eof")):
                args = self.expr_list()
            if self.is_op(">", "|") or (self.peek() == ("op", ">>")):
                raise AwkError(f"output redirection ({self.peek()[1]}) is not supported")
        finally:
            self.in_print -= 1
        if which == "print":
            def do_print(env: Env) -> None:
                ofs, ors = text(env.vars["OFS"]), text(env.vars["ORS"])
                if not args:
                    env.out(text(env.field(0)) + ors)
                    return
                env.out(ofs.join(_output(a(env), env) for a in args) + ors)
            return do_print
        if not args:
            raise AwkError("printf: no format")

        def do_printf(env: Env) -> None:
            values = [a(env) for a in args]
            env.out(_sprintf(values))
        return do_printf

    def _paren_list_follows(self) -> bool:
        """print (a, b) …: the parenthesis holds the whole list."""
        depth = 0
        j = self.k
        while j < len(self.toks):
            kind, value = self.toks[j]
            if kind == "op" and value in "([":
                depth += 1
            elif kind == "op" and value in ")]":
                depth -= 1
                if depth == 0:
                    nxt = self.toks[j + 1] if j + 1 < len(self.toks) else ("eof", "")
                    return nxt[0] in ("nl", "eof") or (nxt[0] == "op" and nxt[1] in (";", "}", ">", "|", ">>"))
            elif kind in ("nl", "eof"):
                return False
            j += 1
        return False

    def expr_list(self) -> list[Expr]:
        items = [self.expr()]
        while self.is_op(","):
            self.take()
            self.opt_newlines()
            items.append(self.expr())
        return items

    # expressions, loosest first
    def expr(self) -> Expr:
        return self.ternary()

    def ternary(self) -> Expr:
        cond = self.or_expr()
        if self.is_op("?"):
            self.take()
            self.opt_newlines()
            yes = self.ternary()
            self.opt_newlines()
            self.expect(":")
            self.opt_newlines()
            no = self.ternary()
            return lambda env: yes(env) if truth(cond(env)) else no(env)
        if self.is_op("=", "+=", "-=", "*=", "/=", "%=", "^=", "**="):
            return self.assignment(cond)
        return cond

    def assignment(self, target: Expr) -> Expr:
        lvalue = getattr(target, "lvalue", None)
        if lvalue is None:
            raise AwkError(f"syntax error: cannot assign to this expression ('{self.peek()[1]}')")
        op = self.take()[1]
        self.opt_newlines()
        value = self.ternary()
        get, put = lvalue
        if op == "=":
            def assign(env: Env) -> Value:
                v = value(env)
                v = v if not isinstance(v, StrNum) or v is not UNINIT else UNINIT
                put(env, v)
                return v
            return assign
        arith = _ARITH[op.rstrip("=") if op != "**=" else "^"]

        def update(env: Env) -> Value:
            v = arith(num(get(env)), num(value(env)))
            put(env, v)
            return v
        return update

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.is_op("||"):
            self.take()
            self.opt_newlines()
            right = self.and_expr()
            left = (lambda a, b: lambda env: 1.0 if truth(a(env)) or truth(b(env)) else 0.0)(left, right)
        return left

    def and_expr(self) -> Expr:
        left = self.in_expr()
        while self.is_op("&&"):
            self.take()
            self.opt_newlines()
            right = self.in_expr()
            left = (lambda a, b: lambda env: 1.0 if truth(a(env)) and truth(b(env)) else 0.0)(left, right)
        return left

    def in_expr(self) -> Expr:
        left = self.match_expr()
        while self.is_kw("in"):
            self.take()
            kind, name = self.take()
            if kind != "name":
                raise AwkError("syntax error: `in' needs an array")
            left = (lambda key, name: lambda env: 1.0 if _subscript(key(env)) in env.array(name) else 0.0)(
                left, name)
        return left

    def match_expr(self) -> Expr:
        left = self.comparison()
        while self.is_op("~", "!~"):
            negate = self.take()[1] == "!~"
            right = self.comparison()
            left = (lambda a, b, neg: lambda env: 1.0 if (_match(env, b, a(env)) is not None) != neg else 0.0)(
                left, right, negate)
        return left

    def comparison(self) -> Expr:
        left = self.concatenation()
        ops = ("<", "<=", "==", "!=", ">=") + ((">",) if not self.in_print else ())
        if self.is_op(*ops):
            op = self.take()[1]
            right = self.concatenation()
            test = _COMPARE[op]
            return lambda env: 1.0 if test(compare(left(env), right(env))) else 0.0
        return left

    def _starts_operand(self) -> bool:
        kind, value = self.peek()
        if kind in ("number", "string", "regex", "name", "builtin", "call"):
            return True
        return kind == "op" and value in ("$", "!", "(", "-", "+", "++", "--")

    def concatenation(self) -> Expr:
        left = self.additive()
        while self._starts_operand() and not self.is_kw("in"):
            right = self.additive()
            left = (lambda a, b: lambda env: text(a(env)) + text(b(env)))(left, right)
        return left

    def additive(self) -> Expr:
        left = self.multiplicative()
        while self.is_op("+", "-"):
            f = _ARITH[self.take()[1]]
            right = self.multiplicative()
            left = (lambda a, b, f: lambda env: f(num(a(env)), num(b(env))))(left, right, f)
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while self.is_op("*", "/", "%"):
            f = _ARITH[self.take()[1]]
            right = self.unary()
            left = (lambda a, b, f: lambda env: f(num(a(env)), num(b(env))))(left, right, f)
        return left

    def unary(self) -> Expr:
        if self.is_op("!"):
            self.take()
            inner = self.unary()
            return lambda env: 0.0 if truth(inner(env)) else 1.0
        if self.is_op("-", "+"):
            sign = -1.0 if self.take()[1] == "-" else 1.0
            inner = self.unary()
            return lambda env: sign * num(inner(env))
        return self.power()

    def power(self) -> Expr:
        base = self.increment()
        if self.is_op("^", "**"):
            self.take()
            exponent = self.unary()          # right-associative, binds -x
            return lambda env: _ARITH["^"](num(base(env)), num(exponent(env)))
        return base

    def increment(self) -> Expr:
        if self.is_op("++", "--"):
            step = 1.0 if self.take()[1] == "++" else -1.0
            target = self.primary()
            lvalue = getattr(target, "lvalue", None)
            if lvalue is None:
                raise AwkError("syntax error: ++/-- needs a variable")
            get, put = lvalue

            def pre(env: Env) -> Value:
                v = num(get(env)) + step
                put(env, v)
                return v
            return pre
        target = self.primary()
        if self.is_op("++", "--") and getattr(target, "lvalue", None) is not None:
            step = 1.0 if self.take()[1] == "++" else -1.0
            get, put = target.lvalue          # type: ignore[attr-defined]

            def post(env: Env) -> Value:
                v = num(get(env))
                put(env, v + step)
                return v
            return post
        return target

    def subscript(self) -> Expr:
        self.expect("[")
        parts = self.expr_list()
        self.expect("]")
        if len(parts) == 1:
            only = parts[0]
            return lambda env: _subscript(only(env))
        return lambda env: text(env.vars["SUBSEP"]).join(_subscript(p(env)) for p in parts)

    def primary(self) -> Expr:
        kind, value = self.take()
        if kind == "number":
            number = float(value)
            constant = lambda env: number                             # noqa: E731
            constant.number = number                                  # type: ignore[attr-defined]
            return constant
        if kind == "string":
            s = _unescape(value)
            return lambda env: s
        if kind == "regex":
            source = value

            def matches_record(env: Env) -> Value:
                return 1.0 if env.regex(source).search(text(env.field(0))) else 0.0
            matches_record.regex_source = source       # type: ignore[attr-defined]
            return matches_record
        if kind == "op" and value == "(":
            self.in_print, saved = 0, self.in_print
            try:
                inner = self.expr()
                if self.is_op(","):
                    raise AwkError("grouping (a, b) is only supported in print and `in'")
                self.expect(")")
            finally:
                self.in_print = saved
            return inner
        if kind == "op" and value == "$":
            index = self.increment_operand()
            known = getattr(index, "number", None)
            if known is not None and known >= 0:           # $0, $1 …: the field known when parsed
                k = int(known)

                def known_field(env: Env) -> Value:
                    return env.field(k)
                known_field.lvalue = (known_field, lambda env, v: env.set_field(k, v))  # type: ignore[attr-defined]
                return known_field

            def field(env: Env) -> Value:
                return env.field(int(num(index(env))))
            field.lvalue = (field, lambda env, v: env.set_field(int(num(index(env))), v))  # type: ignore[attr-defined]
            return field
        if kind == "name":
            name = value
            if self.is_op("["):
                index = self.subscript()

                def element(env: Env) -> Value:
                    return env.array(name).setdefault(index(env), UNINIT)

                def put(env: Env, v: Value) -> None:
                    env.array(name)[index(env)] = v
                element.lvalue = (element, put)     # type: ignore[attr-defined]
                return element

            def variable(env: Env) -> Value:
                return env.get(name)
            variable.lvalue = (variable, lambda env, v: env.set(name, v))   # type: ignore[attr-defined]
            return variable
        if kind == "builtin":
            return self.builtin(value)
        if kind == "call":
            return self.call(value)
        if kind == "kw" and value == "getline":
            raise AwkError("getline is not supported")
        raise AwkError(f"syntax error near '{value or 'end of program'}'")

    def increment_operand(self) -> Expr:
        """What follows $: a primary (with ++/-- before it)."""
        if self.is_op("++", "--", "-", "!"):
            return self.unary()
        return self.primary()

    def args(self) -> list[Expr]:
        self.expect("(")
        if self.is_op(")"):
            self.take()
            return []
        self.in_print, saved = 0, self.in_print
        try:
            items = self.expr_list()
        finally:
            self.in_print = saved
        self.expect(")")
        return items

    def builtin(self, name: str) -> Expr:
        if name in ("system", "close", "fflush", "srand", "rand"):
            raise AwkError(f"{name}() is not supported")
        if name == "length" and not self.is_op("("):
            return lambda env: float(len(text(env.field(0))))
        if name in ("split", "sub", "gsub"):
            return self.array_builtin(name)
        args = self.args()
        n = len(args)
        arity = {"length": (0, 1), "substr": (2, 3), "index": (2, 2), "match": (2, 2), "sprintf": (1, 99),
                 "tolower": (1, 1), "toupper": (1, 1), "int": (1, 1), "sqrt": (1, 1), "exp": (1, 1),
                 "log": (1, 1), "sin": (1, 1), "cos": (1, 1), "atan2": (2, 2)}[name]
        if not arity[0] <= n <= arity[1]:
            raise AwkError(f"{name}: wrong number of arguments ({n})")
        if name == "length":
            return (lambda env: float(len(text(env.field(0))))) if n == 0 else \
                (lambda env: float(len(text(args[0](env)))))
        if name == "substr":
            return lambda env: _substr(text(args[0](env)), num(args[1](env)),
                                       num(args[2](env)) if n == 3 else None)
        if name == "index":
            return lambda env: float(text(args[0](env)).find(text(args[1](env))) + 1)
        if name == "match":
            def match(env: Env) -> Value:
                m = _match(env, args[1], args[0](env))
                env.vars["RSTART"] = float(m.start() + 1) if m else 0.0
                env.vars["RLENGTH"] = float(m.end() - m.start()) if m else -1.0
                return env.vars["RSTART"]
            return match
        if name == "sprintf":
            return lambda env: _sprintf([a(env) for a in args])
        if name in ("tolower", "toupper"):
            f = str.lower if name == "tolower" else str.upper
            return lambda env: f(text(args[0](env)))
        if name == "int":
            return lambda env: float(math.trunc(num(args[0](env))))
        if name == "atan2":
            return lambda env: math.atan2(num(args[0](env)), num(args[1](env)))
        f = {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "sin": math.sin, "cos": math.cos}[name]
        return lambda env: f(num(args[0](env)))

    def array_builtin(self, name: str) -> Expr:
        self.expect("(")
        first = self.expr()
        self.expect(",")
        if name == "split":
            kind, array = self.take()
            if kind != "name":
                raise AwkError("split: the second argument must be an array")
            sep = None
            if self.is_op(","):
                self.take()
                sep = self.expr()
            self.expect(")")

            def split(env: Env) -> Value:
                s = text(first(env))
                fs = text(sep(env)) if sep is not None else text(env.vars["FS"])
                if fs == " ":
                    parts = s.split()
                elif not s:
                    parts = []
                elif len(fs) == 1 and fs not in "\\^$.[]|()*+?{}":
                    parts = s.split(fs)
                else:
                    parts = env.regex(fs).split(s)
                target = env.array(array)
                target.clear()
                target.update({str(k + 1): StrNum(p) for k, p in enumerate(parts)})
                return float(len(parts))
            return split
        replacement = self.expr()
        target: Expr | None = None
        if self.is_op(","):
            self.take()
            target = self.expr()
        self.expect(")")
        if target is not None and getattr(target, "lvalue", None) is None:
            raise AwkError(f"{name}: the third argument must be a variable or field")
        lvalue = target.lvalue if target is not None else None     # type: ignore[attr-defined]
        every = name == "gsub"

        def substitute(env: Env) -> Value:
            get, put = lvalue if lvalue is not None else (lambda e: e.field(0), lambda e, v: e.set_field(0, v))
            s = text(get(env))
            rx = _as_regex(env, first)
            rep = text(replacement(env))
            count = 0

            def repl(m: re.Match[str]) -> str:
                nonlocal count
                count += 1
                return re.sub(r"\\&|&", lambda x: "&" if x.group() == "\\&" else m.group(), rep)
            result = rx.sub(repl, s, count=0 if every else 1)
            if count:
                put(env, result)
            return float(count)
        return substitute

    def call(self, name: str) -> Expr:
        args = self.args()
        functions = self.functions

        def call(env: Env) -> Value:
            if name not in functions or functions[name][1] is None:
                raise AwkError(f"calling undefined function {name}")
            params, body = functions[name]
            if len(args) > len(params):
                raise AwkError(f"function {name} called with {len(args)} args, accepts only {len(params)}")
            frame: dict[str, Any] = {p: UNINIT for p in params}
            for p, a in zip(params, args):
                v = a(env)
                frame[p] = v
            env.frames.append(frame)
            try:
                body(env)
            except _Return as r:
                return r.value
            finally:
                env.frames.pop()
            return UNINIT
        return call


_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else _div0(), "%": lambda a, b: math.fmod(a, b) if b else _div0(),
    "^": lambda a, b: a ** b,
}
_COMPARE: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0, "<=": lambda c: c <= 0, "==": lambda c: c == 0, "!=": lambda c: c != 0,
    ">=": lambda c: c >= 0, ">": lambda c: c > 0,
}


def _div0() -> float:
    raise AwkError("division by zero")


def _seq(stmts: list[Stmt]) -> Stmt:
    if len(stmts) == 1:
        return stmts[0]

    def run(env: Env) -> None:
        for s in stmts:
            s(env)
    return run


def _while(cond: Expr, body: Stmt) -> Stmt:
    def loop(env: Env) -> None:
        while truth(cond(env)):
            try:
                body(env)
            except _Continue:
                continue
            except _Break:
                break
    return loop


def _do(body: Stmt, cond: Expr) -> Stmt:
    def loop(env: Env) -> None:
        while True:
            try:
                body(env)
            except _Continue:
                pass
            except _Break:
                break
            if not truth(cond(env)):
                break
    return loop


def _as_regex(env: Env, e: Expr) -> re.Pattern[str]:
    source = getattr(e, "regex_source", None)
    if source is not None:
        return env.regex(source)
    return env.regex(text(e(env)))


def _match(env: Env, pattern: Expr, subject: Value) -> re.Match[str] | None:
    return _as_regex(env, pattern).search(text(subject))


def _output(v: Value, env: Env) -> str:
    if isinstance(v, float):
        return fmt_number(v, text(env.vars["OFMT"]))
    return str(v)


def _substr(s: str, m: float, n: float | None) -> str:
    start = round(m)
    end = len(s) + 1 if n is None else start + round(n)
    start = max(start, 1)
    end = min(end, len(s) + 1)
    return s[start - 1:end - 1] if end > start else ""


def _sprintf(values: list[Value]) -> str:
    fmt = text(values[0])
    args = [text(v) if not isinstance(v, float) else repr(v) if v != int(v) else str(int(v)) for v in values[1:]]
    return formats.printf(fmt, args, lambda message: None) if args or "%" in fmt else fmt


@lru_cache(maxsize=256)
def compile_program(source: str) -> _Parser:
    """SOURCE parsed once per process: the parsed program keeps no state of
    a run (a range pattern's on/off is the run's, in _records)."""
    parser = _Parser(source)
    parser.program()
    return parser


def awk(proc: "Proc") -> int:
    args = list(proc.args)
    fs: str | None = None
    assigns: list[tuple[str, str]] = []
    program: str | None = None
    while args:
        a = args[0]
        if a == "--":
            args.pop(0)
            break
        if a.startswith("-F"):
            args.pop(0)
            fs = a[2:] or (args.pop(0) if args else "")
            fs = "\t" if fs == "t" else fs
        elif a.startswith("-v"):
            args.pop(0)
            spec = a[2:] or (args.pop(0) if args else "")
            name, sep, value = spec.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                return proc.error(f"fatal: `{spec}' argument to `-v' not in `var=value' form", 2)
            assigns.append((name, _unescape(f'"{value}"') if "\\" in value else value))
        elif a.startswith("-") and len(a) > 1:
            return proc.error(f"option {a} is not supported (supported: -F FS, -v VAR=VALUE)", 2)
        else:
            break
    if not args:
        proc.err("usage: awk [-F fs][-v var=value][prog | -f progfile][file ...]\n")
        return 2
    program = args.pop(0)
    try:
        compiled = compile_program(program)
    except AwkError as exc:
        return proc.error(f"{exc}\n source: {program!r}", 2)
    out: list[str] = []
    env = Env(out.append)
    env.functions = compiled.functions    # type: ignore[assignment]
    if fs is not None:
        env.vars["FS"] = fs
    for name, value in assigns:
        env.vars[name] = StrNum(value)
    status = 0
    try:
        try:
            for stmt in compiled.begin:
                stmt(env)
            if compiled.items or compiled.end:
                status = _records(proc, compiled, env, args)
        except _Exit as e:
            status = e.status
            try:
                for stmt in compiled.end:
                    stmt(env)
            except _Exit as e2:
                status = e2.status
        else:
            try:
                for stmt in compiled.end:
                    stmt(env)
            except _Exit as e:
                status = e.status
    except AwkError as exc:
        if out:
            proc.out("".join(out))
        return proc.error(f"fatal: {exc}", 2)
    if out:
        proc.out("".join(out))
    return status


def _records(proc: "Proc", compiled: _Parser, env: Env, files: list[str]) -> int:
    sources = list(files)                 # operands: files, and VAR=value assignments done in order
    if all(_ASSIGN_OPERAND.match(s) for s in sources):
        sources.append("-")
    status = 0
    items = compiled.items
    in_range = [False] * len(items)             # each range pattern's state: between its start and stop
    for name in sources:
        if _ASSIGN_OPERAND.match(name):
            var, value = name.split("=", 1)
            env.vars[var] = StrNum(value)
            continue
        try:
            data = proc.stdin() if name == "-" else proc.sh.ns.read(name)
        except FsError as exc:
            proc.error(f"fatal: cannot open file `{name}' for reading: {exc.reason}", 2)
            return 2
        env.vars["FILENAME"] = "" if name == "-" else name
        env.vars["FNR"] = 0.0
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        variables = env.vars
        for line in lines:
            variables["NR"] = num(variables["NR"]) + 1
            variables["FNR"] = num(variables["FNR"]) + 1
            env.set_record(line)
            try:
                for k, (pattern, action) in enumerate(items):
                    if pattern is None:
                        hit = True
                    elif isinstance(pattern, tuple):
                        _, start, stop = pattern
                        if in_range[k]:
                            hit = True
                            if truth(stop(env)):
                                in_range[k] = False
                        else:
                            hit = truth(start(env))
                            if hit and not truth(stop(env)):
                                in_range[k] = True
                    else:
                        hit = truth(pattern(env))
                    if not hit:
                        continue
                    if action is None:
                        env.out(text(env.field(0)) + text(env.vars["ORS"]))
                    else:
                        action(env)
            except _Next:
                continue
    return status
