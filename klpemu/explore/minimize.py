"""Shrinking a failing schedule: the same outcome (kind and key) with
fewer CPUs, a simpler strategy and fewer or gentler preemptions, tried one
step at a time and kept while the outcome stays (delta debugging, greedy)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from emu.schedule import PARAMS, ScheduleSpec
from klpemu.explore.outcome import Outcome
from klpemu.explore.pool import Run


def simpler(run: Run) -> Iterator[Run]:
    """Candidates one step simpler than `run`, the boldest first."""
    config, spec = run.config, run.schedule
    for cpus in range(1, config.cpus):
        yield replace(run, config=replace(config, cpus=cpus))
    if spec.strategy != "rr":
        yield replace(run, schedule=ScheduleSpec("rr", spec.seed))
    if spec.strategy in ("pct", "targeted"):
        yield replace(run, schedule=ScheduleSpec("random", spec.seed))
    params = dict(spec.params)
    for name, value in sorted({**PARAMS[spec.strategy], **params}.items()):
        gentler = {"depth": value - 1, "p": value / 2, "jitter": 0.0, "slow": 0.0, "starve": value // 2}.get(name)
        if gentler is not None and gentler != value and (name not in ("depth", "starve") or gentler >= 1):
            yield replace(run, schedule=ScheduleSpec(spec.strategy, spec.seed,
                                                     tuple(sorted({**params, name: gentler}.items()))))


def minimize(run: Run, outcome: Outcome, replay: Callable[[Run], Outcome],
             budget: int = 40) -> tuple[Run, int]:
    """The simplest run found that still gives `outcome`'s kind and key, and
    how many runs the search made (at most `budget`)."""
    tries, improved = 0, True
    while improved and tries < budget:
        improved = False
        for candidate in simpler(run):
            if tries >= budget:
                break
            tries += 1
            again = replay(candidate)
            if (again.kind, again.key) == (outcome.kind, outcome.key):
                run, improved = candidate, True
                break
    return run, tries
