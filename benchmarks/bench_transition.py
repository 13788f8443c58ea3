"""Transition scale: one klp_try_complete_transition pass over many tasks.

A 1-CPU machine with enough RAM starts N kthreads (module
klpemu_bench_tasks, tasks=N) that sleep 8-15 frames deep in
bench_sleep_wait(). A patch of 1, 10 or 100 funcs (klpemu_bench_scale*),
one of them bench_sleep_wait, starts a transition that every sleeper blocks:
each retry (once a virtual second) unwinds every sleeper's stack reliably,
finds bench_sleep_wait on it and reports it blocking. The benchmark times
those passes (Transition.check_tasks, the loop of the real retry, in the
guest's transition work), counts the frames they unwind, and reads the
process's peak memory. Between patches, disabling reverses the transition,
which completes (the sleepers never switched).

Run: python -m benchmarks.bench_transition [--quick] [--json PATH]
"""
from __future__ import annotations

import gc
import statistics
import sys
import time

from emu import Machine
from emu.kernel.guestcall import ServiceContext
from klp import Livepatch
from klp.transition import BlockingTask

from .common import MODULES, bench_main, machine_description, reset_peak_rss, rss_mib, spread, svg_bars, table

SYSFS = "/sys/kernel/livepatch"
TARGET_TASKS = 10_000             # the targets hold for a pass over this many tasks
TARGET_PASS_S, TARGET_FRAMES_PER_S, TARGET_PEAK_MIB = 0.5, 200_000, 2048


def scale_machine(tasks: int) -> Machine:
    """Booted, with `tasks` sleepers asleep in bench_sleep_wait()."""
    ram_mib = 192 + (tasks * 24 + 1023) // 1024       # a 16 KiB stack and a task_struct each
    m = Machine(cpus=1, seed=0, ram_mib=ram_mib).boot()
    Livepatch.attach(m)
    m.insmod(MODULES / "klpemu_bench_tasks.ko", f"tasks={tasks}")
    m.run_until(lambda: sum(t.comm.startswith("bench/") and t.state != 0 for t in m.tasks()) == tasks,
                60, "the sleepers to sleep")
    return m


def timed_passes(m: Machine, patch: str, passes: int) -> tuple[list[float], int, int]:
    """Load `patch`, time `passes` retries after the first; then disable it.
    Returns (seconds per pass, frames unwound per pass, blocking tasks)."""
    t = m.extensions["klp"].transition
    times: list[float] = []
    check = t.check_tasks

    def timed(ctx: ServiceContext) -> list[BlockingTask]:   # the real pass (no guest call on 1 CPU)
        start = time.process_time()
        result = check(ctx)
        times.append(time.process_time() - start)
        return result
    m.insmod(MODULES / f"{patch}.ko")
    t.check_tasks = timed
    try:
        for _ in range(passes):
            before = len(times)
            m.run_until(lambda: len(times) > before, 5, "a transition retry")
    finally:
        del t.check_tasks
    blocking = len(t.blocking)
    frames = sum(len(m.walker.trace(task).frames) for task in m.tasks()
                 if task.patch_state != int(t.target))
    m.write_file(f"{SYSFS}/{patch}/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/{patch}"), 30, f"{patch} to be disabled")
    return times, frames, blocking


def run(quick: bool = False) -> dict[str, object]:
    passes = 2 if quick else 7
    grid = ({100: (1,), 1000: (1, 10, 100), 10_000: (1, 100)} if quick
            else {100: (1, 10, 100), 1000: (1, 10, 100), 10_000: (1, 10, 100)})
    rows = []
    for tasks, funcs_list in grid.items():
        reset_peak_rss()
        start = time.perf_counter()
        m = scale_machine(tasks)
        spawn_s = time.perf_counter() - start
        for funcs in funcs_list:
            gc.collect()                 # not in the passes: the heap just grew by a machine or a patch
            times, frames, blocking = timed_passes(m, f"klpemu_bench_scale{funcs}", passes)
            pass_s = statistics.median(times)
            rows.append({"tasks": tasks, "funcs": funcs, "all_tasks": len(m.tasks()), "blocking": blocking,
                         "frames_per_pass": frames, "pass_s": round(pass_s, 4),
                         "pass_s_spread": spread(times),
                         "frames_per_s": round(frames / pass_s), "us_per_task": round(pass_s / blocking * 1e6, 2),
                         "boot_and_spawn_s": round(spawn_s, 2), "guest_ram_mib": m.config.ram_mib,
                         "peak_rss_mib": round(rss_mib("VmHWM"), 1)})
        del m
        gc.collect()                     # the machine's memory, before the next one's peak
    return {"benchmark": "transition", "machine": machine_description(), "passes": passes, "rows": rows}


def report(result: dict[str, object]) -> str:
    rows = [(r["tasks"], r["funcs"], r["blocking"], r["frames_per_pass"], r["pass_s"], f"{r['frames_per_s']:,}",
             r["us_per_task"], r["peak_rss_mib"]) for r in result["rows"]]
    return table(("tasks", "funcs", "blocking", "frames/pass", "pass s", "frames/s", "us/task", "peak RSS MiB"),
                 rows)


def svg(result: dict[str, object]) -> str:
    bars = [(f"{r['tasks']:,} tasks, {r['funcs']} funcs", r["pass_s"], r.get("pass_s_spread"))
            for r in result["rows"]]
    return svg_bars("One transition pass (CPU seconds; whisker: min-max over passes)", bars, " s",
                    marks=[(TARGET_PASS_S, f"target at {TARGET_TASKS:,} tasks")])


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
