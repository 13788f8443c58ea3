"""What a command sees of the shell running it: Proc (its arguments, its
file descriptors, how it writes and says what went wrong), ShellView (the
shell's state and services the builtins, the commands and the expansions
use; interp.Shell is the one), and the signals by which exit, return,
break and continue leave the commands that run them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from klpemu.scenario.fs import FsError, Namespace
from klpemu.scenario.streams import STDERR, STDOUT, In, Out, Stream
from klpemu.scenario.variables import Variables

if TYPE_CHECKING:
    from random import Random

    from emu import Machine
    from klpemu.scenario.arith import Variables as ArithVariables
    from klpemu.scenario.nodes import FunctionDef, Program
    from klpemu.scenario.result import ScenarioError
    from klpemu.selftest.procps import Syslog

Fds = dict[int, Stream]
CommandFn = Callable[["Proc"], int]


class ShellView(Protocol):
    """The shell as commands and expansions use it."""
    SPECIAL: frozenset[str]
    machine: "Machine"
    ns: Namespace
    vars: Variables
    positional: list[str]
    options: set[str]
    traps: dict[str, str]
    functions: dict[str, "FunctionDef"]
    jobs: dict
    stdio: Fds
    script_name: str
    last_status: int
    last_bg: str | None
    depth: int
    function_depth: int
    source_depth: int
    subshells: int
    loops: int
    ignore_errexit: int
    random: "Random"
    arith_vars: "ArithVariables"
    syslog: "Syslog"
    extensions: dict[str, object]

    def where(self, line: int | None = None) -> str: ...
    def unsupported(self, message: str) -> "ScenarioError": ...
    def shell_error(self, message: str, fds: Fds | None = None) -> None: ...
    def special(self, name: str) -> str | None: ...
    def variable(self, name: str) -> str | None: ...
    def assign(self, name: str, value: str, index: int | None = None, append: bool = False) -> None: ...
    def command_substitution(self, body: "Program") -> str: ...
    def process_substitution(self, body: "Program") -> str: ...
    def lookup(self, name: str) -> tuple[str, object] | None: ...
    def call(self, argv: list[str], fds: Fds, line: int) -> int: ...
    def eval_text(self, text: str, fds: Fds) -> int: ...
    def source_file(self, path: str, shown: str, args: list[str] | None, fds: Fds) -> int: ...
    def sleep(self, seconds: float) -> int: ...
    def with_deadline(self, seconds: float, body: Callable[[], int]) -> int: ...


class ExitSignal(Exception):
    def __init__(self, status: int) -> None:
        self.status = status & 0xFF


class ReturnSignal(Exception):
    def __init__(self, status: int) -> None:
        self.status = status & 0xFF


class LoopSignal(Exception):
    def __init__(self, kind: str, levels: int) -> None:
        self.kind = kind
        self.levels = levels


class Proc:
    """A command being run: its arguments, its file descriptors, the shell."""
    __slots__ = ("sh", "argv", "fds", "line", "write_error")

    def __init__(self, sh: ShellView, argv: list[str], fds: Fds, line: int) -> None:
        self.sh = sh
        self.argv = argv
        self.fds = fds
        self.line = line
        self.write_error: FsError | None = None

    @property
    def name(self) -> str:
        return self.argv[0]

    @property
    def args(self) -> list[str]:
        return self.argv[1:]

    def _write(self, fd: int, text: str) -> None:
        stream = self.fds.get(fd)
        if not isinstance(stream, Out) or not text:
            if stream is None and text and fd == STDOUT:
                self.write_error = FsError(9, f"fd {fd}")
            return
        if self.write_error is not None and fd == STDOUT:
            return
        try:
            stream.write(text)
        except FsError as exc:
            if fd == STDOUT:
                self.write_error = exc

    def out(self, text: str) -> None:
        self._write(STDOUT, text)

    def err(self, text: str) -> None:
        self._write(STDERR, text)

    def error(self, message: str, status: int = 1) -> int:
        """An external command's error line (`grep: x: No such file or directory`)."""
        self.err(f"{self.name}: {message}\n")
        return status

    def builtin_error(self, message: str, status: int = 1) -> int:
        """A builtin's error line, as bash prints it (`./x.sh: line 3: kill: …`)."""
        self.err(f"{self.sh.where(self.line)}{self.name}: {message}\n")
        return status

    def stdin(self) -> str:
        stream = self.fds.get(0)
        return stream.read() if isinstance(stream, In) else ""

    def stdin_stream(self) -> In | None:
        stream = self.fds.get(0)
        return stream if isinstance(stream, In) else None
