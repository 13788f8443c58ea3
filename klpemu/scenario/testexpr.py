"""Conditional tests: the file and string tests [[ … ]] and test/[ share,
and the test builtin's POSIX argument-count algorithm (with -a, -o, !,
parentheses), exit status 0 true, 1 false, 2 a malformed expression.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from klpemu.scenario.fs import FsError

if TYPE_CHECKING:
    from klpemu.scenario.process import Fds, Proc, ShellView

UNARY = frozenset("-a -b -c -d -e -f -g -h -k -p -r -s -t -u -w -x -G -L -N -O -S -z -n -o -v -R".split())
BINARY = frozenset("= == != < > -eq -ne -lt -le -gt -ge -nt -ot -ef".split())
CHAR_DEVICES = frozenset(("/dev/null", "/dev/zero", "/dev/kmsg"))


class TestSyntaxError(Exception):
    """A malformed test expression (bash's message)."""


def unary_test(sh: "ShellView", op: str, operand: str, fds: "Fds | None" = None) -> bool:
    ns = sh.ns
    if op == "-n":
        return operand != ""
    if op == "-z":
        return operand == ""
    if op == "-v":
        return sh.variable(operand) is not None or bool(sh.vars.array(operand))
    if op == "-o":
        return operand in sh.options
    if op == "-t":
        return False                     # no descriptor is a terminal
    if operand == "":
        return False
    if op in ("-e", "-a"):
        return ns.exists(operand)
    if op == "-f":
        return ns.is_file(operand)
    if op == "-d":
        return ns.is_dir(operand)
    if op in ("-r", "-w", "-O", "-G"):
        return ns.exists(operand) or ns.is_device(operand)     # the shell runs as root
    if op == "-x":
        try:
            mode, is_dir = ns.mode(operand)
        except FsError:
            return False
        return is_dir or bool(mode & 0o111)
    if op == "-s":
        try:
            return ns.size(operand) > 0
        except FsError:
            return False
    if op == "-c":
        return ns.resolve(operand) in CHAR_DEVICES
    if op in ("-h", "-L", "-p", "-S", "-b", "-g", "-u", "-k", "-N", "-R"):
        return False                     # no links, pipes, sockets, block devices or set-id bits here
    raise TestSyntaxError(f"{op}: unary operator expected")


def _integer(text: str) -> int:
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        raise TestSyntaxError(f"{text}: integer expression expected") from None


def binary_test(op: str, left: str, right: str) -> bool:
    if op in ("=", "=="):
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right
    if op == ">":
        return left > right
    if op in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
        a, b = _integer(left), _integer(right)
        return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b, "-ge": a >= b}[op]
    raise TestSyntaxError(f"{op}: binary operator (file time or identity) is not supported")


class _Test:
    """test's grammar: expr -o expr, expr -a expr, ! expr, ( expr ), primaries."""

    def __init__(self, sh: "ShellView", args: list[str]) -> None:
        self.sh = sh
        self.args = args
        self.k = 0

    def run(self) -> bool:
        n = len(self.args)
        a = self.args
        # POSIX's rules by argument count come first
        if n == 0:
            return False
        if n == 1:
            return a[0] != ""
        if n == 2:
            if a[0] == "!":
                return a[1] == ""
            if a[0] in UNARY:
                return unary_test(self.sh, a[0], a[1])
            raise TestSyntaxError(f"{a[0]}: unary operator expected")
        if n == 3:
            if a[1] in BINARY:
                return binary_test(a[1], a[0], a[2])
            if a[0] == "!":
                return not _Test(self.sh, a[1:]).run()
            if a[0] == "(" and a[2] == ")":
                return a[1] != ""
            if a[1] not in ("-a", "-o"):
                raise TestSyntaxError(f"{a[1]}: binary operator expected")
        if n == 4 and a[0] == "!":
            return not _Test(self.sh, a[1:]).run()
        if n == 4 and a[0] == "(" and a[3] == ")":
            return _Test(self.sh, a[1:3]).run()
        value = self.or_expr()
        if self.k != n:
            raise TestSyntaxError(f"{a[self.k]}: syntax error" if self.k < n else "syntax error")
        return value

    def _peek(self) -> str | None:
        return self.args[self.k] if self.k < len(self.args) else None

    def or_expr(self) -> bool:
        value = self.and_expr()
        while self._peek() == "-o":
            self.k += 1
            right = self.and_expr()
            value = value or right
        return value

    def and_expr(self) -> bool:
        value = self.not_expr()
        while self._peek() == "-a":
            self.k += 1
            right = self.not_expr()
            value = value and right
        return value

    def not_expr(self) -> bool:
        if self._peek() == "!":
            self.k += 1
            return not self.not_expr()
        return self.primary()

    def primary(self) -> bool:
        a = self.args
        tok = self._peek()
        if tok is None:
            raise TestSyntaxError("argument expected")
        if tok == "(":
            self.k += 1
            value = self.or_expr()
            if self._peek() != ")":
                raise TestSyntaxError("`)' expected")
            self.k += 1
            return value
        if self.k + 2 < len(a) and a[self.k + 1] in BINARY:
            left, op, right = a[self.k], a[self.k + 1], a[self.k + 2]
            self.k += 3
            return binary_test(op, left, right)
        if tok in UNARY and self.k + 1 < len(a):
            self.k += 2
            return unary_test(self.sh, tok, a[self.k - 1])
        self.k += 1
        return tok != ""


def test_command(proc: "Proc") -> int:
    """test EXPR / [ EXPR ]."""
    args = proc.args
    if proc.name == "[":
        if not args or args[-1] != "]":
            return proc.builtin_error("missing `]'", 2)
        args = args[:-1]
    try:
        return 0 if _Test(proc.sh, args).run() else 1
    except TestSyntaxError as exc:
        return proc.builtin_error(str(exc), 2)
