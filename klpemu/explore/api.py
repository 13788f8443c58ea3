"""Exploration from Python (and the pytest plugin's klp.explore): one call,
the summary back, and an exception naming the failing schedule and its
replay line when a run does not pass."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from emu.schedule import ScheduleSpec
from klpemu.errors import KlpemuError
from klpemu.explore.checks import check_counts, check_script
from klpemu.explore.fork import Script
from klpemu.explore.outcome import PASS
from klpemu.explore.pool import Run, run_local
from klpemu.explore.summary import summarize
from klpemu.session import RunConfig


class ExplorationFailed(KlpemuError, AssertionError):
    """Some schedule of an exploration did not pass; .summary has them all."""

    def __init__(self, message: str, summary: dict[str, object]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Exploration:
    summary: dict[str, object]

    @property
    def failing(self) -> list[dict[str, object]]:
        return [c for c in self.summary["classes"] if c["kind"] != PASS]


def explore(script: str | Path, runs: int = 100, strategy: str = "random", cpus: tuple[int, ...] = (2,),
            config: RunConfig = RunConfig(), jobs: int | None = None, check: bool = True,
            name: str | None = None) -> Exploration:
    """Run `script` (a path, or the scenario's text) under `runs` seeds of
    `strategy` on each CPU count; ExplorationFailed when `check` and some
    run did not pass. `name` is the script's name in replay lines."""
    if isinstance(script, Path):
        text, path, label = script.read_text(), str(script), name or str(script)
    else:
        text, path, label = script, None, name or "SCRIPT"
    base = ScheduleSpec.parse(strategy)
    check_counts(runs, jobs, prefix="")
    check_script(text, f"./{Path(path).name}" if path else "bash")
    plan = [Run(i, RunConfig(**{**config.__dict__, "cpus": c}), ScheduleSpec(base.strategy, seed, base.params))
            for i, (c, seed) in enumerate((c, s) for c in cpus for s in range(runs))]
    started = time.perf_counter()
    results = list(run_local(plan, Script(text, path), jobs=jobs))
    result = Exploration(summarize(label, results, time.perf_counter() - started))
    if check and result.failing:
        lines = [f"{result.summary['failing_runs']} of {result.summary['runs']} schedules did not pass:"]
        for c in result.failing:
            lines.append(f"  {c['kind']} x{c['count']} ({c['key'].splitlines()[0][:100] if c['key'] else ''})")
            lines.append(f"    first: {c['first']['schedule']} on {c['first']['cpus']} CPUs; replay: {c['replay']}")
        raise ExplorationFailed("\n".join(lines), result.summary)
    return result
