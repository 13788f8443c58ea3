"""The benchmark suite: every benchmark (or the ones named), their tables,
one dated JSON of all results and an SVG chart per benchmark.

Run: klpemu bench [--quick] [--out DIR] [NAME ...]
 or: python -m benchmarks.run [--quick] [--out DIR] [NAME ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from types import ModuleType

from klpemu.paths import SOURCE_TREE

from . import bench_dispatch, bench_explore, bench_machine, bench_scenarios, bench_startup, bench_transition
from .common import machine_description

BENCHMARKS: dict[str, ModuleType] = {
    "dispatch": bench_dispatch, "machine": bench_machine, "transition": bench_transition,
    "startup": bench_startup, "scenarios": bench_scenarios, "explore": bench_explore,
}
# in a source tree the results are committed beside the code; installed, they go to the cwd
RESULTS = SOURCE_TREE / "benchmarks" / "results" if SOURCE_TREE else Path("klpemu-bench-results")


def targets(results: dict[str, dict]) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for every target of the issue that was measured."""
    out: list[tuple[str, str, bool | None]] = []
    if "dispatch" in results:
        for name, row in results["dispatch"]["cases"].items():
            if row["target"]:
                out.append((f"dispatch: {name} <= {row['target']}x", f"{row['vs_unpatched']:.2f}x",
                            row["vs_unpatched"] <= row["target"]))
    if "machine" in results:
        r = results["machine"]
        out.append(("whole machine >= 0.45x bare Unicorn", f"{r['whole_vs_bare']:.2f}x", r["met"]))
    if "transition" in results:
        for row in results["transition"]["rows"]:
            if row["tasks"] == 10_000:
                out.append((f"10,000 tasks, {row['funcs']} funcs: pass <= 0.5 s", f"{row['pass_s']:.3f} s",
                            row["pass_s"] <= 0.5))
                out.append((f"10,000 tasks, {row['funcs']} funcs: >= 200,000 frames/s",
                            f"{row['frames_per_s']:,}", row["frames_per_s"] >= 200_000))
                out.append((f"10,000 tasks, {row['funcs']} funcs: peak memory <= 2 GiB",
                            f"{row['peak_rss_mib']:.0f} MiB", row["peak_rss_mib"] <= 2048))
    if "startup" in results:
        r = results["startup"]
        out.append(("boot <= 0.3 s after imports", f"{r['first_boot_s']:.3f} s", r["met"]))
        out.append((f"import emu <= {r['target_import_s']} s, cold", f"{r['import_emu_s']:.3f} s",
                    r["import_emu_s"] <= r["target_import_s"]))
        out.append((f"klpemu run of basic function patching <= {r['target_run_s']} s, cold",
                    f"{r['klpemu_run_s']:.3f} s", r["klpemu_run_s"] <= r["target_run_s"]))
    if "scenarios" in results:
        r = results["scenarios"]
        what = "whole ported selftest set <= 30 s" + ("" if r["complete_set"] else " (--quick: a subset)")
        out.append((what, f"{r['whole_set_wall_s']:.1f} s", r["met"]))
    if "explore" in results:
        r = results["explore"]
        out.append(("explore test-livepatch.sh >= 50 schedules/s per core", f"{r['livepatch_per_s_cpu']:.1f}/s",
                     r["met"]))
        rows = {row["strategy"].split(",")[0]: row for row in r["race"]["rows"]}
        pct, rand = rows["pct"], rows["random"]
        out.append(("planted race: PCT's find rate >= its bound 1/(n k^(d-1))",
                    f"{pct['rate'] * 100:.2f}% vs {pct['bound'] * 100:.2f}%", r["pct_meets_bound"]))
        out.append(("planted race: PCT needs fewer runs than random (median to first find)",
                    f"{pct['median_runs_to_first'] or '>' + str(pct['cap'])} vs "
                    f"{rand['median_runs_to_first'] or '>' + str(rand['cap'])}", r["pct_before_random"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="klpemu bench", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="fewer rounds and sizes: under a minute")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and SVGs go (default: %(default)s)")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat() + ("-quick" if args.quick else "")
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for name in names:
        bench = BENCHMARKS[name]
        t0 = time.perf_counter()
        results[name] = bench.run(args.quick)
        sys.stdout.write(f"\n## {name} ({time.perf_counter() - t0:.1f} s)\n\n{bench.report(results[name])}")
        sys.stdout.flush()
        (args.out / f"{stamp}-{name}.svg").write_text(bench.svg(results[name]))
    met = targets(results)
    sys.stdout.write("\n## targets\n\n")
    for what, measured, ok in met:
        sys.stdout.write(f"{'met   ' if ok else 'MISSED' if ok is False else '  -   '}  {what}: {measured}\n")
    out = args.out / f"{stamp}.json"
    for r in results.values():
        r.pop("machine", None)                    # once, at the top
    out.write_text(json.dumps({"date": stamp, "quick": args.quick, "machine": machine_description(),
                               "seconds": round(time.perf_counter() - start, 1),
                               "targets": [{"what": w, "measured": m, "met": ok} for w, m, ok in met],
                               "results": results}, indent=1) + "\n")
    sys.stdout.write(f"\nwrote {out} and its charts ({time.perf_counter() - start:.0f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
