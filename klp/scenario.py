"""Scenario scripts: a bash subset that would also run on a real kernel.

Each line is a command; its output goes to stdout as a shell would print it,
and the kernel log is printed at the end. Supported so far: comments,
`cat PATH`, `echo TEXT > PATH`, `sleep SECONDS` (virtual time).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable, TextIO

from emu import Machine, ShellError


class ScenarioError(Exception):
    """A script line that cannot be run (a usage error, not a failed check)."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


@dataclass
class ScenarioResult:
    output: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


Verb = Callable[["ScenarioRunner", list[str], int], None]
VERBS: dict[str, Verb] = {}


def verb(name: str) -> Callable[[Verb], Verb]:
    def register(fn: Verb) -> Verb:
        VERBS[name] = fn
        return fn
    return register


class ScenarioRunner:
    def __init__(self, machine: Machine, out: TextIO) -> None:
        self.machine = machine
        self.out = out
        self.result = ScenarioResult()

    def emit(self, text: str) -> None:
        self.result.output.append(text)
        self.out.write(text)
        self.out.flush()

    def fail(self, message: str) -> None:
        self.result.failures.append(message)
        self.emit(f"{message}\n")

    def run_text(self, text: str) -> ScenarioResult:
        for lineno, line in enumerate(text.splitlines(), 1):
            self.run_line(line, lineno)
        return self.result

    def run_line(self, line: str, lineno: int) -> None:
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ScenarioError(lineno, f"cannot parse: {exc}") from None
        if not words:
            return
        handler = VERBS.get(words[0])
        if handler is None:
            raise ScenarioError(lineno, f"unknown command {words[0]!r}")
        handler(self, words[1:], lineno)


@verb("cat")
def _cat(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    if not args:
        raise ScenarioError(lineno, "cat needs a path")
    for path in args:
        try:
            r.emit(r.machine.read_file(path))
        except ShellError as exc:
            r.fail(str(exc))


@verb("echo")
def _echo(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    if len(args) >= 2 and args[-2] == ">":
        text, path = " ".join(args[:-2]), args[-1]
        try:
            r.machine.write_file(path, text + "\n")
        except ShellError as exc:
            r.fail(str(exc))
    elif ">" in args:
        raise ScenarioError(lineno, "echo redirects as: echo TEXT > PATH")
    else:
        r.emit(" ".join(args) + "\n")


@verb("sleep")
def _sleep(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    try:
        seconds = float(args[0])
    except (IndexError, ValueError):
        raise ScenarioError(lineno, "sleep needs a number of seconds") from None
    if seconds < 0:
        raise ScenarioError(lineno, "sleep needs a non-negative number of seconds")
    r.machine.run(seconds)
