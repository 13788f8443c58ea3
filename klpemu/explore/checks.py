"""What a sweep is refused for before any run: a script that does not parse
(every run would fail the same way) and counts below one."""
from __future__ import annotations

from emu.errors import EmuError
from klpemu.scenario.interp import parse_program


def check_script(text: str, source: str) -> None:
    """ScenarioError (bash's message, with the line) if TEXT does not parse."""
    parse_program(text, source)


def check_counts(runs: int | None, jobs: int | None, prefix: str = "--") -> None:
    """EmuError naming the option (PREFIX + its name: `--runs` on the command
    line, `runs` to klp.explore) when there would be no run or no worker."""
    if runs is not None and runs < 1:
        raise EmuError(f"{prefix}runs wants at least 1 run, not {runs}")
    if jobs is not None and jobs < 1:
        raise EmuError(f"{prefix}jobs wants at least 1 worker process, not {jobs}")
