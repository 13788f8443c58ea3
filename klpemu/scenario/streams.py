"""Where a command's output goes and where its input comes from: the
terminal (the run's output, stdout and stderr told apart), a capture ($(…),
a pipe), a file of the namespace (each write() one write(2), as a program's
would be), /dev/null; and an input, text read to its end.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from klpemu.errors import KlpemuError

if TYPE_CHECKING:
    from klpemu.scenario.fs import Namespace
    from klpemu.scenario.result import ScenarioResult

STDOUT, STDERR = 1, 2
# What one capture ($( ), a pipe) or the run's terminal keeps in memory at
# most: past it the script stops, as bash does when xmalloc fails, but
# before the host runs out of memory.
MAX_OUTPUT = 256 << 20


class OutputLimitExceeded(KlpemuError):
    """A command's output outgrew MAX_OUTPUT."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} exceeds {MAX_OUTPUT >> 20} MiB: the script stops (bash would run out of memory)")


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
        self.kept = 0

    def write(self, stream: int, text: str) -> None:
        if not text:
            return
        self.kept += len(text)
        if self.kept > MAX_OUTPUT:
            raise OutputLimitExceeded("the script's output")
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
        self.size = 0

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise OutputLimitExceeded("the output of a command substitution or pipe")
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


class Null(Out):
    def write(self, text: str) -> None:
        pass


class FileOut(Out):
    """A file opened for writing: the first write truncates (`>`) or appends (`>>`).

    `>`'s open (O_TRUNC, which a guest file's open handler may act on:
    `trace` clears) can wait for the first write, which then makes it
    together with its write(2) in one round trip; open_now() makes it alone,
    up front for a command that could read the file first, or at the end of
    one that wrote nothing."""

    def __init__(self, ns: "Namespace", path: str, append: bool) -> None:
        self.ns = ns
        self.path = path
        self.append = append

    def write(self, text: str) -> None:
        if text:
            append, self.append = self.append, True      # the attempt opens it, refused or not
            self.ns.write(self.path, text, append=append)

    def open_now(self) -> None:
        """The truncating open, if no write has made it yet (FsError if refused)."""
        if not self.append:
            self.append = True
            self.ns.truncate(self.path)


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
