"""Running many schedules: in this process (jobs=1) or over a local pool
of worker processes, each keeping one booted Zygote per configuration and
forking a child per schedule. Results come back in the order of the runs,
whoever ran them, so that a sweep gives the same table however it is split.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from emu.schedule import ScheduleSpec
from klpemu.explore.fork import Script, Zygote
from klpemu.explore.outcome import Outcome
from klpemu.session import RunConfig


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its configuration and its schedule."""
    index: int
    config: RunConfig
    schedule: ScheduleSpec


_ZYGOTES: dict[tuple[RunConfig, Script], Zygote] = {}       # per worker process: (config, script) -> its zygote
MAX_ZYGOTES = 8


def run_one(run: Run, script: Script) -> Outcome:
    """The run's outcome, forked from this process's zygote of its configuration."""
    zygote = _ZYGOTES.pop((run.config, script), None)
    if zygote is None:
        zygote = Zygote(run.config, script)
        while len(_ZYGOTES) >= MAX_ZYGOTES:            # a booted machine each: keep the newest
            del _ZYGOTES[next(iter(_ZYGOTES))]
    _ZYGOTES[run.config, script] = zygote             # the most recently used last
    return zygote.run(run.schedule)


def run_batch(batch: list[Run], script: Script) -> list[tuple[int, Outcome]]:
    return [(run.index, run_one(run, script)) for run in batch]


def run_local(runs: list[Run], script: Script, jobs: int | None = None,
              stop: Callable[[Outcome], bool] | None = None,
              progress: Callable[[int], None] | None = None) -> Iterator[tuple[Run, Outcome]]:
    """Every run's outcome, in run order; after one for which stop() is true
    the rest are not started (those already running still finish).
    `jobs`: worker processes (default: every core); 1 runs here."""
    jobs = jobs or os.cpu_count() or 1
    by_index = {run.index: run for run in runs}
    if jobs == 1:
        done = 0
        for run in runs:
            outcome = run_one(run, script)
            done += 1
            if progress:
                progress(done)
            yield run, outcome
            if stop and stop(outcome):
                return
        return
    results: dict[int, Outcome] = {}
    next_index = 0
    ordered = [run.index for run in runs]
    stopped = False
    # a batch per submission: a worker keeps its zygotes, and a batch of a
    # few runs pays the pickling of the script once
    feed_batches = batches(runs, jobs)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending: set[Future[list[tuple[int, Outcome]]]] = set()
        feed = iter(feed_batches)
        for batch in _take(feed, 2 * jobs):
            pending.add(pool.submit(run_batch, batch, script))
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                for index, outcome in future.result():
                    results[index] = outcome
                    if stop and stop(outcome):
                        stopped = True
                if progress:
                    progress(len(results))
            if not stopped:
                for batch in _take(feed, len(finished)):
                    pending.add(pool.submit(run_batch, batch, script))
            while next_index < len(ordered) and ordered[next_index] in results:
                index = ordered[next_index]
                yield by_index[index], results.pop(index)
                next_index += 1
    for index in ordered[next_index:]:              # after a stop: what did finish, in order
        if index in results:
            yield by_index[index], results.pop(index)


def batches(runs: list[Run], workers: int) -> list[list[Run]]:
    """The runs in batches of a few each (at least four batches per worker)."""
    size = max(1, min(16, len(runs) // (4 * workers) or 1))
    return [runs[i:i + size] for i in range(0, len(runs), size)]


def _take(it: Iterator[list[Run]], n: int) -> Iterable[list[Run]]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return
