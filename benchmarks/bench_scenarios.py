"""Scenarios: wall time of every kernel selftest, next to the virtual time
it spans.

Each scenarios/selftests/test-*.sh (the kernel's, beside klpemu's
functions.sh) runs on a fresh 2-CPU machine (native dispatch, seed 0), as
`klpemu run` would; the boot is timed apart. A
selftest that fails makes the benchmark fail (its time would mean nothing).
--quick runs each once and skips the ones listed in SLOW.

Run: python -m benchmarks.bench_scenarios [--quick] [--json PATH]
"""
from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

from emu import Machine
from klpemu.paths import SCENARIOS
from klpemu.scenario import ScenarioRunner

from .common import bench_main, machine_description, svg_bars, table

SELFTESTS = SCENARIOS / "selftests"
TARGET_SET_S = 30.0
SLOW = ("test-syscall",)         # 300,000+ syscalls: ~10 s alone


def run_one(script: Path) -> dict[str, float]:
    start = time.perf_counter()
    m = Machine(cpus=2, seed=0).boot()
    booted = time.perf_counter()
    cpu = time.process_time()
    result = ScenarioRunner(m, io.StringIO()).run_file(script)         # beside its functions.sh
    end = time.perf_counter()
    if result.exit_code != 0:
        raise RuntimeError(f"{script.name} failed (exit code {result.exit_code})")
    return {"boot_s": booted - start, "wall_s": end - booted, "cpu_s": time.process_time() - cpu,
            "virtual_s": m.clock_ns / 1e9}


def run(quick: bool = False) -> dict[str, object]:
    rounds = 1 if quick else 3
    scripts = [p for p in sorted(SELFTESTS.glob("test-*.sh")) if not (quick and p.stem in SLOW)]
    runs: dict[str, list[dict[str, float]]] = {p.stem: [] for p in scripts}
    for _ in range(rounds):
        for p in scripts:
            runs[p.stem].append(run_one(p))
    rows = {name: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for name, rs in runs.items()}
    total = {k: round(sum(r[k] for r in rows.values()), 3) for k in ("boot_s", "wall_s", "cpu_s", "virtual_s")}
    whole = total["boot_s"] + total["wall_s"]
    return {"benchmark": "scenarios", "machine": machine_description(), "rounds": rounds, "selftests": rows,
            "total": total, "whole_set_wall_s": round(whole, 2), "complete_set": not quick}


def report(result: dict[str, object]) -> str:
    rows = [(name, r["wall_s"], r["cpu_s"], r["virtual_s"], r["boot_s"]) for name, r in result["selftests"].items()]
    t = result["total"]
    rows.append(("all (boots included: %.2f s)" % result["whole_set_wall_s"], t["wall_s"], t["cpu_s"],
                 t["virtual_s"], t["boot_s"]))
    return table(("selftest", "wall s", "host CPU s", "virtual s", "boot s"), rows)


def svg(result: dict[str, object]) -> str:
    bars = [(name, r["wall_s"]) for name, r in result["selftests"].items()]
    second = sorted(v for _, v in bars)[-2] if len(bars) > 1 else None
    return svg_bars("Ported selftests: wall time of each (s; the slowest cut to keep the others readable)",
                    bars, " s", clip=second * 1.5 if second else None)


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
