"""What a scenario run gives back: the ScenarioResult, with a Step for each
command run, kselftest's exit codes, and ScenarioError, the usage error (a
script line that cannot be run) that the parser, grep and the runner raise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from klpemu.errors import KlpemuError

KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


class ScenarioError(KlpemuError):
    """A script line that cannot be run (a usage error, not a failed check)."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


@dataclass
class Step:
    """One command of the script and how it went."""
    verb: str
    line: int
    ok: bool = True
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return {"verb": self.verb, "line": self.line, "ok": self.ok, "message": self.message}


@dataclass
class ScenarioResult:
    output: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    skipped: str | None = None        # the skip message, when the script skipped
    exit_status: int | None = None    # set by `exit N`

    @property
    def ok(self) -> bool:
        return not self.failures and not self.exit_status

    @property
    def exit_code(self) -> int:
        """kselftest's code: 0 pass, 1 fail, 4 skip."""
        if not self.ok:
            return KSFT_FAIL
        return KSFT_SKIP if self.skipped is not None else KSFT_PASS

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "exit_code": self.exit_code, "skipped": self.skipped,
                "failures": list(self.failures), "steps": [s.to_json() for s in self.steps]}
