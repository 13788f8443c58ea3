"""Shell arithmetic (`$((…))`, `((…))`, `let`, array subscripts, `[[ A -eq B ]]`),
as bash evaluates it: 64-bit signed integers that wrap, C's operators with
bash's precedence, assignments (`=`, `+=` …), `++`/`--`, `,`, `**`, and
`&&`, `||` and `?:` that leave the side they skip unevaluated (bash's
"noeval"). Constants: decimal, 0x hex, leading-0 octal, BASE#DIGITS. A
variable's value is itself an expression (bash evaluates `x=y+1; $((x))`);
an unset or empty variable is 0.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Protocol

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
            index = self.subscript(live)
            op = self.peek()
            if op in _ASSIGN_OPS:
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
        raw = self.vars.get(name, index).strip()
        if not raw:
            return 0
        if _INTEGER.fullmatch(raw):
            return integer(raw)
        if self.depth >= MAX_DEPTH:
            raise ArithError(f"expression recursion level exceeded (error token is \"{raw}\")")
        return _Evaluator(raw, self.vars, self.depth + 1).run()

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
    stripped = text.strip()
    if _INTEGER.fullmatch(stripped):                  # a constant: the commonest expression there is
        return integer(stripped)
    try:
        return _Evaluator(text, variables, 0).run()
    except RecursionError:                # parentheses nested beyond what recursion allows
        raise ArithError(f"expression recursion level exceeded (error token is \"{text[:40]}\")") from None
