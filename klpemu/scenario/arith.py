"""Shell arithmetic (`$((…))`, `((…))`, `let`, array subscripts, `[[ A -eq B ]]`),
as bash evaluates it: 64-bit signed integers that wrap, C's operators with
bash's precedence, assignments (`=`, `+=` …), `++`/`--`, `,`, `**`, and
`&&`, `||` and `?:` that leave the side they skip unevaluated (bash's
"noeval"). Constants: decimal, 0x hex, leading-0 octal, BASE#DIGITS. A
variable's value is itself an expression (bash evaluates `x=y+1; $((x))`);
an unset or empty variable is 0.
"""
from __future__ import annotations

import operator
import re
from functools import lru_cache
from typing import Callable, Protocol

from klpemu.errors import KlpemuError


class ArithError(KlpemuError, ValueError):
    """A malformed expression; the message reads like bash's. `expression`:
    what bash names as the expression, when not the whole text (a bad constant)."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.expression = expression


class _DivisionByZero(ArithError):
    pass


class Variables(Protocol):
    def get(self, name: str, index: int | None) -> str: ...
    def set(self, name: str, index: int | None, value: int) -> None: ...


_TOKEN = re.compile(r"\s*(?:(\d+#[0-9A-Za-z@_]+|0[xX][0-9a-fA-F]*|\d+)|([A-Za-z_][A-Za-z0-9_]*)|"
                    r"(\*\*=|<<=|>>=|\*\*|<<|>>|<=|>=|==|!=|&&|\|\||\+\+|--|[-+*/%&^|]=|[-+*/%<>&^|!~?:()=,\[\]]))")
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "^=", "|=", "**="}
_BINARY = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, "<=": 7, ">": 7, ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}
_INTEGER = re.compile(r"-?\d+")
MAX_DEPTH = 1024                  # bash: "expression recursion level exceeded"


def wrap(v: int) -> int:
    if -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF:
        return v
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def number(text: str) -> int:
    """An integer constant as bash reads it."""
    try:
        if "#" in text:
            base_text, digits = text.split("#", 1)
            base = int(base_text)
            if not 2 <= base <= 64:
                raise ArithError(f"invalid arithmetic base (error token is \"{text}\")")
            value = 0
            for ch in digits:
                d = (int(ch, 36) if base <= 36 else
                     "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ@_".index(ch))
                if d >= base:
                    raise ValueError
                value = value * base + d
            return wrap(value)
        if text[:2] in ("0x", "0X"):
            return wrap(int(text[2:] or "0", 16))
        if len(text) > 1 and text[0] == "0":
            return wrap(int(text, 8))
        return wrap(int(text))
    except ValueError:
        raise ArithError(f"value too great for base (error token is \"{text}\")", text) from None


def integer(text: str) -> int:
    """An optionally negative constant: -010 is -8, as bash's unary minus makes it."""
    return wrap(-number(text[1:])) if text.startswith("-") else number(text)


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%"):
        if b == 0:
            raise _DivisionByZero("division by 0")
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return q if op == "/" else a - q * b
    if op == "**":
        if b < 0:
            raise ArithError("exponent less than 0")
        return wrap(pow(a, b, 1 << 64))
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "<<":
        return a << (b & 63)
    if op == ">>":
        return a >> (b & 63)
    if op == "&":
        return a & b
    if op == "|":
        return a | b
    if op == "^":
        return a ^ b
    if op == "==":
        return int(a == b)
    if op == "!=":
        return int(a != b)
    if op == "<":
        return int(a < b)
    if op == "<=":
        return int(a <= b)
    if op == ">":
        return int(a > b)
    if op == ">=":
        return int(a >= b)
    raise ArithError(f"unknown operator {op}")


@lru_cache(maxsize=1024)
def _tokenize(text: str) -> tuple[tuple[tuple[str, str, int], ...], tuple[str | None, ...]]:
    """TEXT's tokens (kind, text, position), and each token's operator (None
    for a number or a name, and once more None past the end): an expression is
    tokenized once per process however often it is evaluated."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if not m:
            raise ArithError(f"syntax error: invalid arithmetic operator (error token is \"{text[pos:]}\")")
        kind = "num" if m.group(1) else "name" if m.group(2) else "op"
        tokens.append((kind, m.group(m.lastindex or 0), m.start(m.lastindex or 0)))
        pos = m.end()
    return tuple(tokens), (*(t if kind == "op" else None for kind, t, _ in tokens), None)


class _Evaluator:
    def __init__(self, text: str, variables: Variables, depth: int) -> None:
        self.text = text
        self.vars = variables
        self.depth = depth
        self.tokens, self.ops = _tokenize(text)
        self.k = 0

    # ------------------------------------------------------------ tokens
    def peek(self) -> str | None:
        return self.ops[self.k]

    def rest(self) -> str:
        """bash's "error token": the text from the offending token on (the
        last token when the expression ended too early)."""
        if self.k < len(self.tokens):
            return self.text[self.tokens[self.k][2]:]
        return self.text[self.tokens[-1][2]:] if self.tokens else ""

    def expect(self, op: str) -> None:
        if self.peek() != op:
            raise ArithError(f"syntax error: `{op}' expected (error token is \"{self.rest()}\")")
        self.k += 1

    # ------------------------------------------------------------ grammar
    def comma(self, live: bool) -> int:
        value = self.assignment(live)
        while self.peek() == ",":
            self.k += 1
            value = self.assignment(live)
        return value

    def assignment(self, live: bool) -> int:
        if self.k + 1 < len(self.tokens) and self.tokens[self.k][0] == "name":
            save = self.k
            name = self.tokens[self.k][1]
            self.k += 1
            index = self.subscript(False)              # a look-ahead for `=`: no effects yet
            op = self.peek()
            if op in _ASSIGN_OPS:
                if index is not None:                  # the subscript, evaluated once, for real
                    self.k = save + 1
                    index = self.subscript(live)
                self.k += 1
                value = self.assignment(live)
                if not live:
                    return 0
                if op != "=":
                    value = wrap(_apply(op[:-1], self.variable(name, index), value))
                self.vars.set(name, index, value)
                return value
            self.k = save
        return self.ternary(live)

    def ternary(self, live: bool) -> int:
        cond = self.binary(1, live)
        if self.peek() != "?":
            return cond
        self.k += 1
        yes = self.assignment(live and bool(cond))
        self.expect(":")
        no = self.assignment(live and not cond)
        return yes if cond else no

    def binary(self, min_prec: int, live: bool) -> int:
        left = self.power(live)
        while (op := self.peek()) in _BINARY and _BINARY[op] >= min_prec:
            self.k += 1
            if op == "&&":
                right = self.binary(_BINARY[op] + 1, live and bool(left))
                left = int(bool(left) and bool(right))
            elif op == "||":
                right = self.binary(_BINARY[op] + 1, live and not left)
                left = int(bool(left) or bool(right))
            else:
                start = self.k
                right = self.binary(_BINARY[op] + 1, live)
                try:
                    left = wrap(_apply(op, left, right)) if live else 0
                except _DivisionByZero:
                    token = self.text[self.tokens[start][2]:] if start < len(self.tokens) else ""
                    raise ArithError(f"division by 0 (error token is \"{token}\")") from None
        return left

    def power(self, live: bool) -> int:
        base = self.unary(live)
        if self.peek() == "**":
            self.k += 1
            exponent = self.power(live)        # right-associative
            return _apply("**", base, exponent) if live else 0
        return base

    def unary(self, live: bool) -> int:
        op = self.peek()
        if op in ("+", "-", "!", "~"):
            self.k += 1
            v = self.unary(live)
            return {"+": v, "-": wrap(-v), "!": int(not v), "~": ~v}[op]
        if op in ("++", "--"):
            self.k += 1
            if self.k >= len(self.tokens) or self.tokens[self.k][0] != "name":
                raise ArithError(f"syntax error: operand expected (error token is \"{self.rest()}\")")
            name = self.tokens[self.k][1]
            self.k += 1
            index = self.subscript(live)
            if not live:
                return 0
            value = wrap(self.variable(name, index) + (1 if op == "++" else -1))
            self.vars.set(name, index, value)
            return value
        return self.postfix(live)

    def postfix(self, live: bool) -> int:
        if self.k >= len(self.tokens):
            raise ArithError(f"syntax error: operand expected (error token is \"{self.rest()}\")")
        kind, text, _ = self.tokens[self.k]
        if kind == "num":
            self.k += 1
            return number(text)
        if kind == "name":
            self.k += 1
            index = self.subscript(live)
            if not live:
                if self.peek() in ("++", "--"):
                    self.k += 1
                return 0
            value = self.variable(text, index)
            if self.peek() in ("++", "--"):
                step = 1 if self.peek() == "++" else -1
                self.k += 1
                self.vars.set(text, index, wrap(value + step))
            return value
        if text == "(":
            self.k += 1
            value = self.comma(live)
            self.expect(")")
            return value
        raise ArithError(f"syntax error: operand expected (error token is \"{self.rest()}\")")

    def subscript(self, live: bool) -> int | None:
        if self.peek() != "[":
            return None
        self.k += 1
        index = self.comma(live)
        self.expect("]")
        return index

    def variable(self, name: str, index: int | None) -> int:
        return _variable(self.vars, self.depth, name, index)

    def run(self) -> int:
        if not self.tokens:
            return 0
        value = self.comma(True)
        if self.k != len(self.tokens):
            raise ArithError(f"syntax error in expression (error token is \"{self.rest()}\")")
        return wrap(value)


def evaluate(text: str, variables: Variables) -> int:
    """The value of TEXT (already expanded: no $ left), with bash's side effects
    on VARIABLES."""
    try:
        return _evaluate(text, variables, 0)
    except RecursionError:                # parentheses nested beyond what recursion allows
        raise ArithError(f"expression recursion level exceeded (error token is \"{text[:40]}\")") from None


def _evaluate(text: str, variables: Variables, depth: int) -> int:
    compiled = _compiled(text)
    if compiled is not None:
        return compiled(variables, depth)
    return _Evaluator(text, variables, depth).run()


# ---------------------------------------------------------------- compiled expressions
# An expression that parses is compiled once per process into closures
# (each takes the variables and the depth of the expansion of a variable's
# value); evaluating it walks no tokens. What the evaluator does while it
# parses, the closures do in the same order: the operands left to right,
# the side a short-circuit or ?: skips left unevaluated (the evaluator's
# "not live" parse has no effect, and no error but those of parsing).
# An expression with a syntax error, a bad constant or trailing tokens is
# left to the evaluator, whose error and partial side effects it then is.
Compiled = Callable[[Variables, int], int]


class _NotCompiled(Exception):
    """TEXT is the evaluator's (see above)."""


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Compiled | None:
    try:
        tokens, _ = _tokenize(text)
    except ArithError:
        return None
    if not tokens:
        return lambda variables, depth: 0
    try:
        compiler = _Compiler(text, tokens)
        fn = compiler.comma()
        if compiler.k != len(tokens):
            return None
    except (_NotCompiled, ArithError, RecursionError):
        return None
    return lambda variables, depth: wrap(fn(variables, depth))


def _variable(variables: Variables, depth: int, name: str, index: int | None) -> int:
    """A variable's value as an operand (_Evaluator.variable)."""
    raw = variables.get(name, index).strip()
    if not raw:
        return 0
    if raw.isdigit() and raw.isascii() and (raw[0] != "0" or len(raw) == 1):
        return wrap(int(raw))                        # (number()'s decimal case)
    if _INTEGER.fullmatch(raw):
        return integer(raw)
    if depth >= MAX_DEPTH:
        raise ArithError(f"expression recursion level exceeded (error token is \"{raw}\")")
    return _evaluate(raw, variables, depth + 1)


class _Compiler:
    """_Evaluator's grammar, making closures instead of values."""

    def __init__(self, text: str, tokens: tuple[tuple[str, str, int], ...]) -> None:
        self.text = text
        self.tokens = tokens
        self.k = 0

    def peek(self) -> str | None:
        if self.k < len(self.tokens):
            kind, text, _ = self.tokens[self.k]
            return text if kind == "op" else None
        return None

    def expect(self, op: str) -> None:
        if self.peek() != op:
            raise _NotCompiled
        self.k += 1

    def comma(self) -> Compiled:
        parts = [self.assignment()]
        while self.peek() == ",":
            self.k += 1
            parts.append(self.assignment())
        if len(parts) == 1:
            return parts[0]

        def comma(v: Variables, d: int) -> int:
            value = 0
            for part in parts:
                value = part(v, d)
            return value
        return comma

    def assignment(self) -> Compiled:
        if self.k + 1 < len(self.tokens) and self.tokens[self.k][0] == "name":
            save = self.k
            name = self.tokens[self.k][1]
            self.k += 1
            index = self.subscript()
            op = self.peek()
            if op in _ASSIGN_OPS:
                self.k += 1
                rhs = self.assignment()
                return _assign(name, index, op, rhs)
            self.k = save
        return self.ternary()

    def ternary(self) -> Compiled:
        cond = self.binary(1)
        if self.peek() != "?":
            return cond
        self.k += 1
        yes = self.assignment()
        self.expect(":")
        no = self.assignment()
        return lambda v, d: yes(v, d) if cond(v, d) else no(v, d)

    def binary(self, min_prec: int) -> Compiled:
        left = self.power()
        while (op := self.peek()) in _BINARY and _BINARY[op] >= min_prec:
            self.k += 1
            start = self.k
            right = self.binary(_BINARY[op] + 1)
            token = self.text[self.tokens[start][2]:] if start < len(self.tokens) else ""
            left = _binary(op, left, right, token)
        return left

    def power(self) -> Compiled:
        base = self.unary()
        if self.peek() == "**":
            self.k += 1
            exponent = self.power()
            return lambda v, d: _apply("**", base(v, d), exponent(v, d))
        return base

    def unary(self) -> Compiled:
        op = self.peek()
        if op in ("+", "-", "!", "~"):
            self.k += 1
            operand = self.unary()
            if op == "+":
                return operand
            if op == "-":
                return lambda v, d: wrap(-operand(v, d))
            if op == "!":
                return lambda v, d: int(not operand(v, d))
            return lambda v, d: ~operand(v, d)
        if op in ("++", "--"):
            self.k += 1
            if self.k >= len(self.tokens) or self.tokens[self.k][0] != "name":
                raise _NotCompiled
            name = self.tokens[self.k][1]
            self.k += 1
            index = self.subscript()
            step = 1 if op == "++" else -1

            def pre_step(v: Variables, d: int) -> int:
                i = index(v, d) if index is not None else None
                value = wrap(_variable(v, d, name, i) + step)
                v.set(name, i, value)
                return value
            return pre_step
        return self.postfix()

    def postfix(self) -> Compiled:
        if self.k >= len(self.tokens):
            raise _NotCompiled
        kind, text, _ = self.tokens[self.k]
        if kind == "num":
            self.k += 1
            value = number(text)
            return lambda v, d: value
        if kind == "name":
            self.k += 1
            index = self.subscript()
            op = self.peek()
            if op in ("++", "--"):
                self.k += 1
                step = 1 if op == "++" else -1

                def post_step(v: Variables, d: int) -> int:
                    i = index(v, d) if index is not None else None
                    value = _variable(v, d, text, i)
                    v.set(text, i, wrap(value + step))
                    return value
                return post_step
            if index is None:
                return lambda v, d: _variable(v, d, text, None)
            return lambda v, d: _variable(v, d, text, index(v, d))
        if text == "(":
            self.k += 1
            inner = self.comma()
            self.expect(")")
            return inner
        raise _NotCompiled

    def subscript(self) -> Compiled | None:
        if self.peek() != "[":
            return None
        self.k += 1
        index = self.comma()
        self.expect("]")
        return index


def _assign(name: str, index: Compiled | None, op: str, rhs: Compiled) -> Compiled:
    def assign(v: Variables, d: int) -> int:
        i = index(v, d) if index is not None else None
        value = rhs(v, d)
        if op != "=":
            value = wrap(_apply(op[:-1], _variable(v, d, name, i), value))
        v.set(name, i, value)
        return value
    return assign


def _binary(op: str, left: Compiled, right: Compiled, token: str) -> Compiled:
    if op == "&&":
        return lambda v, d: int(bool(left(v, d)) and bool(right(v, d)))
    if op == "||":
        return lambda v, d: int(bool(left(v, d)) or bool(right(v, d)))

    compare = _COMPARISONS.get(op)
    if compare is not None:
        return lambda v, d: int(compare(left(v, d), right(v, d)))

    def binary(v: Variables, d: int) -> int:
        a = left(v, d)
        b = right(v, d)
        try:
            return wrap(_apply(op, a, b))
        except _DivisionByZero:
            raise ArithError(f"division by 0 (error token is \"{token}\")") from None
    return binary


_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
