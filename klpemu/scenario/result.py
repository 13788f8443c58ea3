"""What a scenario run gives back: the ScenarioResult (its output as a
terminal shows it, each stream apart, a Step for each command of the
script's top level, the exit status, kselftest's exit code), and
ScenarioError, a script that cannot be run (bad syntax, a construct or a
command option this shell does not have), with the file and line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from klpemu.errors import KlpemuError

KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


class ScenarioError(KlpemuError):
    """A script that cannot be run (a usage error, not a failed check)."""

    def __init__(self, lineno: int, message: str, source: str | None = None) -> None:
        where = f"{source}: line {lineno}" if source else f"line {lineno}"
        super().__init__(f"{where}: {message}")
        self.lineno = lineno
        self.source = source
        self.message = message


@dataclass
class Step:
    """One command of the script's top level (what functions or sourced
    files run inside it is not a step) and how it went: a step fails when
    its exit status would stop a `set -e` script (not in a condition, not
    before && or ||, not negated); `message` is the last line it wrote to
    standard error; `output`, all it wrote, both streams as a terminal shows them."""
    verb: str
    line: int
    ok: bool = True
    message: str = ""
    output: str = ""

    def to_json(self) -> dict[str, object]:
        return {"verb": self.verb, "line": self.line, "ok": self.ok, "message": self.message,
                "output": self.output}


@dataclass
class ScenarioResult:
    output: list[str] = field(default_factory=list)                 # as a terminal shows it
    streams: list[tuple[int, str]] = field(default_factory=list)    # (1 stdout | 2 stderr, text)
    failures: list[str] = field(default_factory=list)               # why the run failed
    steps: list[Step] = field(default_factory=list)
    skipped: str | None = None        # why, when the script exited with kselftest's skip code (4)
    exit_status: int | None = None    # the script's exit status

    @property
    def stdout(self) -> str:
        return "".join(t for s, t in self.streams if s == 1)

    @property
    def stderr(self) -> str:
        return "".join(t for s, t in self.streams if s == 2)

    @property
    def ok(self) -> bool:
        return not self.failures and self.exit_status in (None, KSFT_PASS, KSFT_SKIP)

    @property
    def exit_code(self) -> int:
        """kselftest's code: 0 pass, 1 fail, 4 skip."""
        if not self.ok:
            return KSFT_FAIL
        return KSFT_SKIP if self.skipped is not None else KSFT_PASS

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "exit_code": self.exit_code, "skipped": self.skipped,
                "failures": list(self.failures), "steps": [s.to_json() for s in self.steps]}
