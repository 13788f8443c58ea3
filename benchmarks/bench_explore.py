"""Explore: schedules per second per core, where a forked run's time goes,
and how soon each strategy finds the planted race.

- throughput: each ported selftest (scenarios/selftests/test-*.sh) explored
  over random schedules the way `klpemu explore --jobs 1` does (one zygote
  booted in this process, a fork per schedule): schedules per second of wall
  time on one core, and per second of host CPU (this process and its
  children, so that other processes' load does not count);
- profile, per selftest: fork + exit of an empty child of the zygote, the
  run in the child, the rest (classify, pickle, pipe: the total less the run and the fork); within the run, the
  emulation (Unicorn's emu_start, from a cProfile'd run of the same
  schedule) and the Python around it, split by package;
- race: scenarios/race-callback.sh (fixtures/modules/klpemu_race_*.c) under
  random, PCT (depth 2, k = 100 steps: about the rounds a run takes) and
  targeted, on every core: in each of several disjoint blocks of seeds, the
  runs up to the first find (an oops in klpemu_race_report), then the find
  rate over every run made and PCT's bound 1/(n k^(d-1)) for n CPUs.
--quick: test-livepatch.sh only, fewer schedules, 3 race trials of at most
100 runs.

Run: python -m benchmarks.bench_explore [--quick] [--json PATH]
"""
from __future__ import annotations

import cProfile
import math
import os
import pstats
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from emu.schedule import ScheduleSpec
from klpemu.explore.fork import Script, Zygote, run_session
from klpemu.explore.outcome import OOPS, Outcome
from klpemu.explore.pool import Run, run_local
from klpemu.paths import SCENARIOS
from klpemu.session import RunConfig

from .common import bench_main, machine_description, svg_bars, table

SELFTESTS = SCENARIOS / "selftests"
RACE = SCENARIOS / "race-callback.sh"
RACE_FUNCTION = "klpemu_race_report"          # where the planted race oopses
TARGET_PER_CORE = 50.0
SLOW = ("test-syscall",)                       # ~2 s a run: left out of --quick
# where the Python time of a run goes: the first prefix that matches a frame's file
PACKAGES = (("emu/arch/", "emu.arch (engine, CPUs)"), ("emu/unwind/", "emu.unwind"),
            ("emu/kernel/", "emu.kernel (hypercalls, shell, services)"), ("emu/module/", "emu.module + elf"),
            ("emu/elf/", "emu.module + elf"), ("emu/", "emu (run loop, rest)"), ("klp/", "klp"),
            ("klpemu/scenario/", "klpemu.scenario"), ("klpemu/", "klpemu (session, explore)"),
            ("unicorn/", "unicorn bindings (Python)"))


# ---------------------------------------------------------------- throughput
def throughput(script: Path, runs: int) -> dict[str, object]:
    """`runs` random schedules of `script` forked from one zygote, one at a time."""
    zygote = Zygote(RunConfig(), Script(script.read_text(), str(script)))
    zygote.run(ScheduleSpec("random", 0))             # warm: the first fork pays for this process's imports
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    kinds = Counter(zygote.run(ScheduleSpec("random", seed)).kind for seed in range(runs))
    wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    return {"runs": runs, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "per_s_wall": round(runs / wall, 1), "per_s_cpu": round(runs / cpu, 1), "outcomes": dict(kinds),
            "profile": profile(zygote)}


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def profile(zygote: Zygote, rounds: int = 3) -> dict[str, object]:
    """Where a forked run's time goes (medians over `rounds` runs of one schedule)."""
    schedule = ScheduleSpec("random", 1)
    empty = [_fork_empty() for _ in range(5 * rounds)]
    phases = [_timed_child(zygote, schedule, profiled=False) for _ in range(rounds)]
    profiled = _timed_child(zygote, schedule, profiled=True)
    total = statistics.median(p["total_s"] for p in phases)
    run = statistics.median(p["run_s"] for p in phases)
    fork = statistics.median(empty)
    emulation = min(profiled["emulation_s"], run)
    python = run - emulation
    shares = profiled["python_by_package"]
    whole = sum(shares.values()) or 1.0
    return {"fork_exit_ms": round(fork * 1e3, 2), "total_ms": round(total * 1e3, 2),
            "run_ms": round(run * 1e3, 2), "rest_ms": round(max(0.0, total - run - fork) * 1e3, 2),
            "emulation_ms": round(emulation * 1e3, 2), "python_ms": round(python * 1e3, 2),
            "python_by_package_ms": {k: round(python * v / whole * 1e3, 2)
                                     for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}}


def _fork_empty() -> float:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - start


def _timed_child(zygote: Zygote, schedule: ScheduleSpec, profiled: bool) -> dict[str, object]:
    """Zygote.run, with the child timing its run (and, if `profiled`, its cProfile split)."""
    def timed_run(_: object) -> dict[str, object]:
        prof = cProfile.Profile() if profiled else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        outcome = run_session(zygote.session, zygote.out, zygote.script, schedule)
        if prof:
            prof.disable()
        return {"run_s": time.perf_counter() - t0, "kind": outcome.kind, **(_split(prof) if prof else {})}
    start = time.perf_counter()
    report = zygote.snapshot.run(timed_run)
    report["total_s"] = time.perf_counter() - start
    return report


def _split(prof: cProfile.Profile) -> dict[str, object]:
    """Unicorn's own time (emu_start's: the C emulation under it is not a
    Python call) and every other function's own time, by package."""
    stats = pstats.Stats(prof).stats                   # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    emulation = 0.0
    by_package: Counter[str] = Counter()
    for (file, _, name), (_, _, tottime, _, _) in stats.items():
        path = file.replace("\\", "/")
        if name == "emu_start" and "unicorn" in path:
            emulation += tottime
            continue
        by_package[next((label for prefix, label in PACKAGES if f"/{prefix}" in path), "Python (stdlib, rest)")] \
            += tottime
    return {"emulation_s": emulation, "python_by_package": dict(by_package)}


# ---------------------------------------------------------------- the race
RACE_STRATEGIES = ("random", "pct,depth=2,steps=100", "targeted")


def race(trials: int, cap: int, jobs: int | None) -> dict[str, object]:
    """Runs to the first find of the planted race, per strategy, over
    `trials` disjoint blocks of seeds (block t: seeds t*cap .. t*cap+cap-1),
    each stopped at its first find (None: not within `cap` runs)."""
    script = Script(RACE.read_text(), str(RACE))
    rows = []
    for text in RACE_STRATEGIES:
        spec = ScheduleSpec.parse(text)
        start, firsts, ran, finds, rounds = time.perf_counter(), [], 0, 0, []
        for t in range(trials):
            plan = [Run(t * cap + i, RunConfig(), ScheduleSpec(spec.strategy, t * cap + i, spec.params))
                    for i in range(cap)]
            results = list(run_local(plan, script, jobs=jobs, stop=is_race))
            hits = [run.index - t * cap for run, o in results if is_race(o)]
            firsts.append(hits[0] + 1 if hits else None)
            ran, finds = ran + len(results), finds + len(hits)
            rounds += [o.rounds for _, o in results]
        bound = None
        if spec.strategy == "pct":
            bound = 1 / (RunConfig().cpus * int(spec.param("steps")) ** (int(spec.param("depth")) - 1))
        found = sorted(f for f in firsts if f is not None)
        rows.append({"strategy": text, "trials": trials, "cap": cap, "runs_to_first": firsts,
                     "median_runs_to_first": _median(firsts),
                     "found_in": len(found), "runs": ran, "finds": finds, "rate": round(finds / ran, 5),
                     "bound": round(bound, 5) if bound else None, "rounds_median": statistics.median(rounds),
                     "seconds": round(time.perf_counter() - start, 1)})
    return {"cpus": RunConfig().cpus, "rows": rows}


def _median(firsts: list[int | None]) -> float | None:
    """The median of runs to a first find, a trial without one counting as
    more than any; None when that is where the median falls."""
    m = statistics.median(f if f is not None else math.inf for f in firsts)
    return None if m == math.inf else m


def is_race(outcome: Outcome) -> bool:
    """The planted race's failure: the reader's call through the freed configuration."""
    return outcome.kind == OOPS and outcome.key.startswith(f"{RACE_FUNCTION}:")


# ---------------------------------------------------------------- the benchmark
def run(quick: bool = False) -> dict[str, object]:
    scripts = [SELFTESTS / "test-livepatch.sh"] if quick else sorted(SELFTESTS.glob("test-*.sh"))
    per = {p.stem: throughput(p, 2 if p.stem in SLOW else (10 if quick else 40)) for p in scripts}
    races = race(3, 100, jobs=None) if quick else race(6, 1000, jobs=None)
    return {"benchmark": "explore", "machine": machine_description(), "selftests": per,
            "livepatch_per_s_cpu": per["test-livepatch"]["per_s_cpu"], "race": races}


def report(result: dict[str, object]) -> str:
    rows = []
    for name, r in result["selftests"].items():
        p = r["profile"]
        rows.append((name, r["per_s_wall"], r["per_s_cpu"], p["total_ms"], p["fork_exit_ms"], p["rest_ms"],
                     p["emulation_ms"], p["python_ms"], ", ".join(f"{k} {v:g}" for k, v in
                                                                  list(p["python_by_package_ms"].items())[:3])))
    out = table(("selftest", "sched/s wall", "sched/s CPU", "ms/run", "fork+exit ms", "rest ms", "emulation ms",
                 "Python ms", "Python: top packages (ms)"), rows)
    race_rows = [(r["strategy"], r["trials"], r["cap"], " ".join("-" if f is None else str(f) for f in r["runs_to_first"]),
                  r["median_runs_to_first"] or f">{r['cap']}", f"{r['found_in']}/{r['trials']}", r["runs"],
                  r["finds"],
                  f"{r['rate'] * 100:.2f}%", f"{r['bound'] * 100:.2f}%" if r["bound"] else "", r["rounds_median"])
                 for r in result["race"]["rows"]]
    out += f"\nplanted race (scenarios/race-callback.sh, {result['race']['cpus']} CPUs): runs to the first find\n\n"
    out += table(("strategy", "trials", "cap", "runs to first find, per trial (-: none)", "median", "found",
                  "runs", "finds", "rate", "PCT bound", "rounds"), race_rows)
    return out


def svg(result: dict[str, object]) -> str:
    bars = [(name, r["per_s_cpu"]) for name, r in result["selftests"].items()]
    bars += [(f"race: {r['strategy']} (finds %)", max(r["rate"] * 100, 1e-3)) for r in result["race"]["rows"]]
    return svg_bars("Explore: schedules/s per core (CPU); the race: finds per 100 runs", bars, "",
                    marks=[(TARGET_PER_CORE, f"{TARGET_PER_CORE:g}/s target")])


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
