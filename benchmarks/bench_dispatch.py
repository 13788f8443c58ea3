"""The cost of a livepatched call, measured side by side in one run.

1-CPU machines load `klpemu_bench`, whose kthreads run bench_loop(n) (n
calls of bench_target, a 3-instruction function) or bench_loop50/500 (n
calls of a 50- or 500-instruction function) on request, and differ in what
else is loaded (modules of fixtures/modules/klpemu_bench_*.c):

- unpatched: the fentry site is a 5-byte NOP;
- native: klpemu_bench_patch, no transition: the site is `jmp new_func`;
- direct jmp: the same patch disabled, and `jmp new_func` written at the
  site by hand (the floor of any ftrace-style redirect);
- transition: klpemu_bench_hold, whose transition the "bench_held" worker
  holds open (asleep in a function it patches, so unpatched): the site
  jumps to the trampoline; "bench_held" runs the loop as an unpatched task,
  "bench_free" (switched at the first try) as a patched one;
- NOP: klpemu_bench_patch, then the atomic replace klpemu_bench_replace,
  held open the same way: bench_target's head func is a NOP;
- NOP discarded: the same, the replace completed (its NOPs are dropped);
- func_stack of 3: klpemu_bench_patch, _stack2 and _stack3 on bench_target;
- python: klpemu_bench_patch on the python backend (a code hook per call).

Host CPU time per call is (t(run n) - t(run 0)) / n, so the fixed cost of
the request cancels; rounds alternate the machines (in alternating order)
and every ratio is the median of per-round ratios. Extra guest instructions per call are counted
by a code hook over the module area (klpemu_bench, the patches and the
trampolines), not timed. Every run's result is checked: a patched
bench_target returns x + 2 (x + 4 on a func_stack of 3), the original x + 1.

Run: python -m benchmarks.bench_dispatch [--quick] [--json PATH]
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

from unicorn import UC_HOOK_CODE, Uc

from emu import Machine
from emu.abi import MODULES_VADDR
from emu.arch.memory import MODULES_SIZE
from emu.trace.ftrace import JMP, rel32_insn
from klp import Livepatch
from klp.objects import KlpState

from .common import MODULES, bench_main, machine_description, median_ratio, spread, svg_bars, table

FREE, HELD = 0, 1                     # the two workers (klpemu_bench.c)
SIZES = {"tiny": 0, "50": 1, "500": 2}   # loop number -> function size
SYSFS = "/sys/kernel/livepatch"
TARGETS = {"native": 1.2, "transition, task unpatched": 2.2, "transition, task patched": 2.2,
           "NOP func (replace transition, task patched)": 1.2}


def boot(backend: str = "native") -> Machine:
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m, backend)
    m.insmod(MODULES / "klpemu_bench.ko")
    return m


def load_lp(m: Machine, name: str, complete: bool = True) -> None:
    m.insmod(MODULES / f"{name}.ko")
    if complete:
        m.run_until(lambda: m.read_file(f"{SYSFS}/{name}/transition") == "0\n", 30, f"{name} to complete")
    else:
        m.run(1.5)          # a retry: the free worker switches, the held one stays
        assert m.read_file(f"{SYSFS}/{name}/transition") == "1\n", f"{name}'s transition is not held open"


def bench_call(m: Machine, name: str, *args: int, returns: str = "long") -> int:
    return m.call(m.kallsyms.find(name, "klpemu_bench").address, *args, returns=returns)


def worker_state(m: Machine, worker: int) -> int:
    comm = ("bench_free", "bench_held")[worker]
    return next(t.patch_state for t in m.tasks() if t.comm == comm)


# ---------------------------------------------------------------- the set-ups
def m_unpatched() -> Machine:
    return boot()


def m_native(backend: str = "native") -> Machine:
    m = boot(backend)
    load_lp(m, "klpemu_bench_patch")
    return m


def m_direct_jmp() -> Machine:
    m = m_native()
    m.write_file(f"{SYSFS}/klpemu_bench_patch/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/klpemu_bench_patch"), 30, "the patch to go")
    site = m.kallsyms.find("bench_target", "klpemu_bench").address
    new = m.kallsyms.find("livepatch_bench_target", "klpemu_bench_patch").address
    m.text_poke(site, rel32_insn(JMP, site, new))
    return m


def m_transition() -> Machine:
    m = boot()
    load_lp(m, "klpemu_bench_hold", complete=False)
    assert worker_state(m, HELD) == KlpState.UNPATCHED and worker_state(m, FREE) == KlpState.PATCHED
    return m


def m_nop() -> Machine:
    m = m_native()
    load_lp(m, "klpemu_bench_replace", complete=False)
    return m


def m_nop_discarded() -> Machine:
    m = m_native()
    bench_call(m, "bench_release", returns="void")
    load_lp(m, "klpemu_bench_replace")
    return m


def m_stack3() -> Machine:
    m = m_native()
    load_lp(m, "klpemu_bench_stack2")
    load_lp(m, "klpemu_bench_stack3")
    return m


@dataclass(frozen=True)
class Case:
    """One measured row: a set-up, the worker that runs the loop, the size."""
    name: str
    setup: str
    worker: int = FREE
    size: str = "tiny"
    per_call: int = 3       # the result bench_target adds per call (+1 original, +2 patched, +4 stack)
    slow: bool = False      # python backend: fewer calls


SETUPS: dict[str, Callable[[], Machine]] = {
    "unpatched": m_unpatched, "native": m_native, "direct jmp": m_direct_jmp,
    "transition": m_transition, "nop": m_nop, "nop discarded": m_nop_discarded,
    "func_stack": m_stack3, "python": lambda: m_native("python"),
}

CASES = [
    Case("unpatched", "unpatched", per_call=1),
    Case("direct jmp to new_func", "direct jmp", per_call=2),
    Case("native", "native", per_call=2),
    Case("transition, task unpatched", "transition", HELD, per_call=1),
    Case("transition, task patched", "transition", per_call=2),
    Case("NOP func (replace transition, task patched)", "nop", per_call=1),
    Case("NOP func (replace transition, task unpatched)", "nop", HELD, per_call=2),
    Case("NOP discarded (replace completed)", "nop discarded", per_call=1),
    Case("func_stack of 3", "func_stack", per_call=4),
    Case("python backend", "python", per_call=2, slow=True),
    *(Case(f"{kind} {size}", kind if kind != "python backend" else "python", size=size, per_call=0,
           slow=kind == "python backend")
      for size in ("50", "500") for kind in ("unpatched", "native", "python backend")),
]


def run_loop(m: Machine, case: Case, n: int) -> int:
    return bench_call(m, "bench_run", case.worker, SIZES[case.size], n)


def per_call_ns(m: Machine, case: Case, n: int) -> float:
    start = time.process_time()
    run_loop(m, case, 0)
    empty = time.process_time() - start
    start = time.process_time()
    run_loop(m, case, n)
    return (time.process_time() - start - empty) / n * 1e9


def count_instructions(m: Machine, case: Case, n: int) -> float:
    """Guest instructions per call executed in the module area (bench code,
    patches, trampolines), counted by a code hook: (count(2n) - 2 count(n)) / n."""
    count = [0]

    def on_code(uc: Uc, addr: int, size: int, data: object) -> None:
        count[0] += 1
    hooks = [(cpu.engine, cpu.engine.uc.hook_add(UC_HOOK_CODE, on_code, None, MODULES_VADDR,
                                                  MODULES_VADDR + MODULES_SIZE - 1)) for cpu in m.cpus]
    for engine, _ in hooks:
        engine.flush_all()          # hooks apply to code translated after them
    try:                                # runs of n and 2n calls: the fixed part cancels
        run_loop(m, case, n)
        once = count[0]
        run_loop(m, case, 2 * n)
        return (count[0] - 2 * once) / n
    finally:
        for engine, hook in hooks:
            engine.uc.hook_del(hook)
            engine.flush_all()


def check_results(results: dict[str, int], k: int) -> None:
    """Each case ran the function it claims: bench_target's result says which
    one; a patched bench_fn50/500 returns something else than the original."""
    for case in CASES:
        got = results[case.name]
        assert not case.per_call or got == case.per_call * k, f"{case.name}: {got} != {case.per_call * k}"
    for size in ("50", "500"):
        assert results[f"native {size}"] == results[f"python backend {size}"] != results[f"unpatched {size}"]


def run(quick: bool = False) -> dict[str, object]:
    rounds, n = (3, 20_000) if quick else (11, 150_000)
    machines = {name: SETUPS[name]() for name in dict.fromkeys(c.setup for c in CASES)}

    def calls(case: Case) -> int:
        k = n // (10 if case.slow else 1)
        return k // {"tiny": 1, "50": 5, "500": 40}[case.size]

    results, ns = {}, {c.name: [] for c in CASES}
    for case in CASES:                        # what runs (and warm the code up)
        results[case.name] = run_loop(machines[case.setup], case, 1000)
    check_results(results, 1000)
    for i in range(rounds):
        for case in CASES[::-1] if i % 2 else CASES:      # alternate the order: no position bias
            ns[case.name].append(per_call_ns(machines[case.setup], case, calls(case)))
    baseline = {size: ns["unpatched" if size == "tiny" else f"unpatched {size}"] for size in SIZES}
    rows = {}
    for case in CASES:
        ratio = median_ratio(ns[case.name], baseline[case.size])
        insns = count_instructions(machines[case.setup], case, 200)
        rows[case.name] = {
            "size": case.size, "ns_per_call": round(statistics.median(ns[case.name]), 1),
            "calls_per_s": round(1e9 / statistics.median(ns[case.name])),
            "vs_unpatched": round(ratio, 3),
            "vs_unpatched_spread": spread([x / y for x, y in zip(ns[case.name], baseline[case.size])]),
            "instructions_per_call": round(insns, 2),
            "result_of_1000_calls": results[case.name],
        }
    base_insns = {size: rows["unpatched" if size == "tiny" else f"unpatched {size}"]["instructions_per_call"]
                  for size in SIZES}
    for row in rows.values():
        row["extra_instructions_per_call"] = round(row["instructions_per_call"] - base_insns[row["size"]], 2)
    return {"benchmark": "dispatch", "machine": machine_description(), "rounds": rounds, "cases": rows,
            "python_backend_calls_dispatched": machines["python"].extensions["klp"].dispatch.python_calls}


def report(result: dict[str, object]) -> str:
    def band(r: dict) -> str:
        lo, hi = r.get("vs_unpatched_spread") or (None, None)
        return f" ({lo:.2f}-{hi:.2f})" if lo is not None else ""
    rows = [(name, r["ns_per_call"], f"{r['calls_per_s']:,}", f"{r['vs_unpatched']:.2f}x{band(r)}",
             f"{r['extra_instructions_per_call']:+g}", f"<= {TARGETS[name]}x" if name in TARGETS else "")
            for name, r in result["cases"].items()]
    return table(("dispatch", "ns/call", "calls/s", "vs unpatched (min-max)", "extra insns/call", "target"), rows)


def svg(result: dict[str, object]) -> str:
    bars = [(name, r["vs_unpatched"], r.get("vs_unpatched_spread")) for name, r in result["cases"].items()
            if r["size"] == "tiny"]
    return svg_bars("Cost of a call of a tiny function, vs unpatched (median, whisker: min-max over rounds)",
                    bars, "x", marks=[(1.0, "1x")] + [(t, f"{t:g}x") for t in sorted(set(TARGETS.values()))], clip=2.6)


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
