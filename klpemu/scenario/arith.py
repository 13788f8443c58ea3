"""Shell arithmetic, `$((…))` and array subscripts: bash's integer
expressions without assignments.

Operators, by binding strength: unary `+ - ! ~`; `* / %`; `+ -`; `<< >>`;
`< <= > >=`; `== !=`; `&`; `^`; `|`; `&&`; `||`; `?:`; parentheses.
Operands are integers (decimal, 0x hex, leading-0 octal) and variable names,
whose values must be integers. Results wrap to 64-bit signed, as in bash;
division truncates toward zero.
"""
from __future__ import annotations

import re
from typing import Callable

from klpemu.errors import KlpemuError

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)|([A-Za-z_][A-Za-z0-9_]*)|"
                    r"(<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||\+\+|--|[-+*/%&^|]=|[-+*/%<>&^|!~?:()=,]))")
_UNSUPPORTED = {"<<=", ">>=", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "^=", "|=", "=", ","}
_BINARY = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, "<=": 7, ">": 7, ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}


class ArithError(KlpemuError, ValueError):
    """A malformed or unsupported expression (the message says which)."""


def _wrap(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def _number(text: str) -> int:
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if len(text) > 1 and text[0] == "0":
        try:
            return int(text, 8)
        except ValueError:
            raise ArithError(f"value too great for base (error token is \"{text}\")") from None
    return int(text)


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%"):
        if b == 0:
            raise ArithError("division by 0")
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return q if op == "/" else a - q * b
    return {
        "||": lambda: int(bool(a) or bool(b)), "&&": lambda: int(bool(a) and bool(b)),
        "|": lambda: a | b, "^": lambda: a ^ b, "&": lambda: a & b,
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
        "<=": lambda: int(a <= b), ">": lambda: int(a > b), ">=": lambda: int(a >= b),
        "<<": lambda: a << (b & 63), ">>": lambda: a >> (b & 63),
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
    }[op]()


def evaluate(text: str, variable: Callable[[str], str]) -> int:
    """The value of TEXT; VARIABLE(name) gives a variable's value (or raises)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ArithError(f"syntax error (error token is \"{text[pos:].strip()}\")")
        kind = "num" if m.group(1) else "name" if m.group(2) else "op"
        if m.group(3) in _UNSUPPORTED:
            raise ArithError(f"'{m.group(3)}' (assignment, increment or comma) is not supported")
        tokens.append((kind, m.group(m.lastindex or 0)))
        pos = m.end()
    if not tokens:
        return 0
    k = 0

    def peek() -> str | None:
        return tokens[k][1] if k < len(tokens) and tokens[k][0] == "op" else None

    def take(op: str) -> None:
        nonlocal k
        if peek() != op:
            found = tokens[k][1] if k < len(tokens) else "end of expression"
            raise ArithError(f"expected '{op}' before {found!r}")
        k += 1

    def operand() -> int:
        nonlocal k
        if k == len(tokens):
            raise ArithError("operand expected")
        kind, value = tokens[k]
        k += 1
        if kind == "num":
            return _number(value)
        if kind == "name":
            raw = variable(value).strip()
            try:
                return _number(raw) if raw else 0
            except ValueError:
                raise ArithError(f"${value} is not a number: {raw!r}") from None
        if value == "(":
            v = ternary()
            take(")")
            return v
        if value in "+-!~":
            v = operand()
            return {"+": v, "-": -v, "!": int(not v), "~": ~v}[value]
        raise ArithError(f"operand expected (error token is \"{value}\")")

    def binary(min_prec: int) -> int:
        nonlocal k
        left = operand()
        while (op := peek()) in _BINARY and _BINARY[op] >= min_prec:
            k += 1
            left = _wrap(_apply(op, left, binary(_BINARY[op] + 1)))
        return left

    def ternary() -> int:
        nonlocal k
        cond = binary(1)
        if peek() != "?":
            return cond
        k += 1
        yes = ternary()
        take(":")
        no = ternary()
        return yes if cond else no

    value = ternary()
    if k != len(tokens):
        raise ArithError(f"syntax error (error token is \"{tokens[k][1]}\")")
    return _wrap(value)
