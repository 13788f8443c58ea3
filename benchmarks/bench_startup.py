"""Start-up: boot, unwind tables, module load.

- boot: Machine(cpus=2) + boot() to a running 2-CPU kernel whose shell waits
  for commands, after imports: the first in a fresh process (which parses
  the kernel's ELF symbols) and again in the same process;
- unwind tables of the kernel image, per function: cold (every function
  disassembled and tracked, no cache) and cached (rows loaded from the
  on-disk cache written by the cold build; the in-process copy dropped);
- a cold process: `python -c 'import emu'`, and `klpemu run` of a scenario
  the size of the selftests' basic function patching (load a livepatch,
  read /proc/cmdline, disable, unload), wall time from exec to exit; with
  the modules' bytecode cached, as after the first run of an install (a
  PYTHONDONTWRITEBYTECODE in the environment is dropped for these: it makes
  every process compile every module again, ~0.1 s);
- module load: the loader alone (parse, lay out, relocate klpemu_bench_tasks,
  105 functions) and a whole insmod + rmmod through the guest (syscall,
  loader, unwind tables, ftrace sites, init);
- a run from a snapshot (emu.snapshot, issue #15's target: <= 20 ms plus
  the run's own work): the basic function patching scenario started from
  a snapshot of a booted machine (fork, the run in the child, its result
  pickled back, the child's exit), beside the same scenario on a freshly
  booted machine in this process (the run's own work: the same guest
  work, byte for byte, checked) and boot + scenario; the overhead is the
  median over rounds of (snapshot run - own work), so the child's
  copy-on-write faults count as the snapshot's.
Host wall time, medians, rounds interleaved.

Run: python -m benchmarks.bench_startup [--quick] [--json PATH]
"""
from __future__ import annotations

import gc
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from emu import Machine
from emu.elf.module_loader import load_module
from emu.machine import resolve_kernel
from emu.module.manager import module_name_field
from emu.unwind import cache, tables_from_elf
from klpemu.scenario import ScenarioRunner

from .common import MODULES, bench_main, machine_description, median_ratio, spread, svg_bars, table

TARGET_BOOT_S = 0.3
TARGET_IMPORT_S = 0.15
TARGET_RUN_S = 0.25
TARGET_SNAPSHOT_OVERHEAD_MS = 20.0      # a run from a snapshot: at most this plus its own work
BASIC_FUNCTION_PATCHING = """\
insmod test_klp_livepatch.ko
cat /proc/cmdline
echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled
while [[ -e /sys/kernel/livepatch/test_klp_livepatch ]]; do sleep 0.1; done
rmmod test_klp_livepatch
"""
KLPEMU = "import sys; from klpemu.cli import main; sys.exit(main())"   # what the console script runs
MODULE = MODULES / "klpemu_bench_tasks.ko"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


FIRST_BOOT = ("import time; from emu import Machine; start = time.perf_counter(); "
              "Machine(cpus=2, seed=0).boot(); print(time.perf_counter() - start)")


def first_boot_s() -> float:
    """Boot time in a fresh interpreter, after its imports."""
    out = subprocess.run([sys.executable, "-c", FIRST_BOOT], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return float(out.stdout)


def cold_wall_s(args: list[str], stdin: str = "") -> float:
    """Wall time of a fresh interpreter running `args`, from exec to exit
    (bytecode cached: see the docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, check=True,
                   cwd=Path(__file__).resolve().parent.parent, env=env)
    return time.perf_counter() - start


def basic_function_patching(m: Machine) -> tuple[int, str]:
    """The scenario on `m`: its exit code and the kernel log it leaves."""
    result = ScenarioRunner(m, io.StringIO()).run_text(BASIC_FUNCTION_PATCHING)
    return result.exit_code, m.dmesg()


def snapshot_rounds(rounds: int) -> dict[str, list[float]]:
    """Per round, side by side: boot + scenario, the scenario alone (after
    that boot), and the scenario from a snapshot of a booted machine."""
    snap = Machine(cpus=2, seed=0).boot().snapshot()
    expected = snap.run(basic_function_patching)          # warm: the first fork pays for lazy imports
    times: dict[str, list[float]] = {"boot_and_run": [], "scenario": [], "snapshot_run": []}
    for _ in range(rounds):
        gc.collect()                    # the last round's machine freed before, not during, the timing
        start = time.perf_counter()
        m = Machine(cpus=2, seed=0).boot()
        booted = time.perf_counter()
        fresh = basic_function_patching(m)
        end = time.perf_counter()
        del m                           # a fork copies the page tables of every machine alive
        gc.collect()
        start_forked = time.perf_counter()
        forked = snap.run(basic_function_patching)
        times["snapshot_run"].append(time.perf_counter() - start_forked)
        times["boot_and_run"].append(end - start)
        times["scenario"].append(end - booted)
        if not fresh == forked == expected or fresh[0] != 0:
            raise RuntimeError("the scenario from a snapshot is not the fresh boot's run (or it failed)")
    return times


def run(quick: bool = False) -> dict[str, object]:
    rounds = 3 if quick else 7
    kernel = resolve_kernel("modern")
    functions = len(tables_from_elf(kernel, use_cache=False))
    data = MODULE.read_bytes()
    m = Machine(cpus=2, seed=0).boot()
    resolve = m.kallsyms.lookup_name
    base = 0xFFFFFFFFA8000000
    name_field = module_name_field(m.offsets)
    loaded = load_module(data, "klpemu_bench_tasks", base, resolve, name_field=name_field)
    keys = ("import_emu", "klpemu_run", "first_boot", "boot", "tables_cold", "tables_cached", "loader", "insmod")
    times: dict[str, list[float]] = {k: [] for k in keys}
    # fresh processes, with the user's unwind cache (which the boot above filled)
    times["first_boot"] = [first_boot_s() for _ in range(1 if quick else 3)]
    cold_wall_s(["-c", KLPEMU, "run", "-"], BASIC_FUNCTION_PATCHING)      # writes the bytecode cache
    for _ in range(rounds):
        times["import_emu"].append(cold_wall_s(["-c", "import emu"]))
        times["klpemu_run"].append(cold_wall_s(["-c", KLPEMU, "run", "-"], BASIC_FUNCTION_PATCHING))
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = tmp          # a cache of our own, cold at first
        try:
            for _ in range(rounds):
                times["boot"].append(timed(lambda: Machine(cpus=2, seed=0).boot()))
                cache._memory.clear()
                for f in Path(tmp, "klpemu").glob("*"):
                    f.unlink()
                times["tables_cold"].append(timed(lambda: tables_from_elf(kernel)))
                cache._memory.clear()               # from disk, as a new process would
                times["tables_cached"].append(timed(lambda: tables_from_elf(kernel)))
                times["loader"].append(timed(lambda: load_module(data, "klpemu_bench_tasks", base, resolve,
                                                                           name_field=name_field)))
                times["insmod"].append(timed(lambda: (m.insmod(MODULE), m.rmmod("klpemu_bench_tasks"))))
        finally:
            if env is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = env
    times.update(snapshot_rounds(rounds))
    return {"benchmark": "startup", "machine": machine_description(), "rounds": rounds,
            **figures(times, functions), "module": MODULE.name, "module_bytes": len(data),
            "module_functions": len(loaded.mcount_sites)}


def figures(times: dict[str, list[float]], functions: int) -> dict[str, object]:
    """Medians of the timed rounds (seconds, per key of run()'s `times`);
    the targets' figures with their spread over rounds."""
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "import_emu_s": round(median["import_emu"], 4), "import_emu_s_spread": spread(times["import_emu"]),
        "klpemu_run_s": round(median["klpemu_run"], 4), "klpemu_run_s_spread": spread(times["klpemu_run"]),
        "first_boot_s": round(median["first_boot"], 4), "first_boot_s_spread": spread(times["first_boot"]),
        "boot_s": round(median["boot"], 4), "kernel_functions": functions,
        "unwind_tables_cold_s": round(median["tables_cold"], 4),
        "unwind_tables_cached_s": round(median["tables_cached"], 4),
        "unwind_cold_us_per_function": round(median["tables_cold"] / functions * 1e6, 1),
        "unwind_cached_us_per_function": round(median["tables_cached"] / functions * 1e6, 2),
        "module_loader_ms": round(median["loader"] * 1e3, 2),
        "insmod_rmmod_ms": round(median["insmod"] * 1e3, 2),
        **snapshot_figures(times),
    }


def snapshot_figures(times: dict[str, list[float]]) -> dict[str, object]:
    """A run from a snapshot, its own work, boot + run (ms); the overhead
    per round (snapshot run - own work) with its spread; how many times
    faster than boot + run."""
    overhead = [(a - b) * 1e3 for a, b in zip(times["snapshot_run"], times["scenario"])]
    return {"snapshot_run_ms": round(statistics.median(times["snapshot_run"]) * 1e3, 2),
            "scenario_ms": round(statistics.median(times["scenario"]) * 1e3, 2),
            "boot_and_run_ms": round(statistics.median(times["boot_and_run"]) * 1e3, 2),
            "snapshot_overhead_ms": round(statistics.median(overhead), 2),
            "snapshot_overhead_ms_spread": spread(overhead),
            "boot_and_run_vs_snapshot": round(median_ratio(times["boot_and_run"], times["snapshot_run"]), 2)}


def report(result: dict[str, object]) -> str:
    r = result
    rows = [(f"python -c 'import emu', cold process (target <= {TARGET_IMPORT_S} s)", f"{r['import_emu_s']:.3f} s"),
            (f"klpemu run of basic function patching, cold process (target <= {TARGET_RUN_S} s)",
             f"{r['klpemu_run_s']:.3f} s"),
            (f"boot to a running 2-CPU kernel, fresh process (target <= {TARGET_BOOT_S} s)", f"{r['first_boot_s']:.3f} s"),
            ("boot to a running 2-CPU kernel, again", f"{r['boot_s']:.3f} s"),
            (f"unwind tables, cold ({r['kernel_functions']} functions)",
             f"{r['unwind_tables_cold_s']:.3f} s = {r['unwind_cold_us_per_function']} us/function"),
            ("unwind tables, cached",
             f"{r['unwind_tables_cached_s']:.4f} s = {r['unwind_cached_us_per_function']} us/function"),
            (f"module loader: parse, lay out, relocate {r['module']}", f"{r['module_loader_ms']} ms"),
            (f"insmod + rmmod {r['module']} through the guest", f"{r['insmod_rmmod_ms']} ms"),
            ("basic function patching: boot + run, in this process", f"{r['boot_and_run_ms']} ms"),
            ("basic function patching: the run alone (its own work)", f"{r['scenario_ms']} ms"),
            ("basic function patching from a snapshot (fork, run, result, exit)",
             f"{r['snapshot_run_ms']} ms = {r['boot_and_run_vs_snapshot']}x faster than boot + run"),
            (f"a run from a snapshot, beyond its own work (target <= {TARGET_SNAPSHOT_OVERHEAD_MS:g} ms)",
             f"{r['snapshot_overhead_ms']} ms")]
    return table(("start-up", "time"), rows)


def svg(result: dict[str, object]) -> str:
    r = result
    bars = [("import emu, cold", r["import_emu_s"] * 1e3), ("klpemu run, cold", r["klpemu_run_s"] * 1e3),
            ("boot, fresh process", r["first_boot_s"] * 1e3), ("boot, again", r["boot_s"] * 1e3), ("unwind tables, cold", r["unwind_tables_cold_s"] * 1e3),
            ("unwind tables, cached", r["unwind_tables_cached_s"] * 1e3),
            ("module loader", r["module_loader_ms"]), ("insmod + rmmod", r["insmod_rmmod_ms"]),
            ("boot + scenario", r["boot_and_run_ms"]), ("scenario from a snapshot", r["snapshot_run_ms"])]
    return svg_bars("Start-up costs (ms)", bars, " ms", marks=[(TARGET_BOOT_S * 1e3, "boot target")])


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
