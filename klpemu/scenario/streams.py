"""Where a command's output goes and where its input comes from: the
terminal (the run's output, stdout and stderr told apart), a capture ($(…),
a pipe), a file of the namespace (each write() one write(2), as a program's
would be), /dev/null; and an input, text read to its end.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from klpemu.scenario.fs import Namespace
    from klpemu.scenario.result import ScenarioResult

STDOUT, STDERR = 1, 2


class Out:
    """An output stream; write() may raise FsError (a refused write)."""

    def write(self, text: str) -> None:
        raise NotImplementedError


class Terminal:
    """The run's terminal: what a user would see, stdout and stderr in the
    order they were written, each chunk also kept with its stream."""

    def __init__(self, out: TextIO, result: "ScenarioResult") -> None:
        self.out = out
        self.result = result

    def write(self, stream: int, text: str) -> None:
        if not text:
            return
        self.result.output.append(text)
        self.result.streams.append((stream, text))
        self.out.write(text)
        self.out.flush()


class TerminalOut(Out):
    def __init__(self, terminal: Terminal, stream: int) -> None:
        self.terminal = terminal
        self.stream = stream

    def write(self, text: str) -> None:
        self.terminal.write(self.stream, text)


class Capture(Out):
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


class Null(Out):
    def write(self, text: str) -> None:
        pass


class FileOut(Out):
    """A file opened for writing: the first write truncates (`>`) or appends (`>>`)."""

    def __init__(self, ns: "Namespace", path: str, append: bool) -> None:
        self.ns = ns
        self.path = path
        self.append = append

    def write(self, text: str) -> None:
        if text:
            self.ns.write(self.path, text, append=self.append)
            self.append = True


class In:
    """Standard input: a text, read once."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.pos = 0

    def read(self) -> str:
        rest = self.text[self.pos:]
        self.pos = len(self.text)
        return rest

    def readline(self) -> str | None:
        """The next line with its newline, or None at the end."""
        if self.pos >= len(self.text):
            return None
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end + 1
        line = self.text[self.pos:end]
        self.pos = end
        return line


Stream = Out | In
