"""Machine overhead and start-up, measured side by side in one run.

- boot: Machine() + boot() to a running 2-CPU kernel (after imports);
- MIPS of the same guest code on bare Unicorn with nothing attached, vs the
  whole machine on 2 CPUs running the `klpemu.demo=compute` kthreads
  (quanta, timer interrupts, hooks). Those alternate between a tight
  4-instruction loop (demo_compute) and call-heavy code shaped like most of
  the kernel (demo_calls: a small traced function called in a loop); bare
  Unicorn runs the same two functions alternately.

Run: python -m benchmarks.bench_machine [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

from emu import Machine
from emu.engine import CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, MSR_EFER
from emu.image import ElfImage
from emu.machine import resolve_kernel
from emu.memory import PAGE_OFFSET, Ram, build_page_tables, write_gdt

PARK = 0x22000
STACK_TOP = PAGE_OFFSET + 0x80000


def bare_unicorn(function: str) -> tuple[Uc, int, int]:
    """A bare Uc with the kernel loaded under the same paging; returns (uc,
    the function's address, instructions per call)."""
    kernel = ElfImage(resolve_kernel("modern"))
    ram = Ram()
    for seg in kernel.segments:
        ram.write(seg.vaddr - 0xFFFFFFFF80000000, seg.data)
    ram.write(PARK, b"\xf4" * 0x1000)
    cr3 = build_page_tables(ram)
    base, limit = write_gdt(ram)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.base)
    uc.reg_write(x86.UC_X86_REG_GDTR, (0, base, limit, 0))
    uc.reg_write(x86.UC_X86_REG_CR3, cr3)
    uc.reg_write(x86.UC_X86_REG_CR4, uc.reg_read(x86.UC_X86_REG_CR4) | CR4_PAE)
    uc.msr_write(MSR_EFER, EFER_LME | EFER_LMA)
    uc.reg_write(x86.UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
    uc.reg_write(x86.UC_X86_REG_CS, 0x10)
    uc.bare_ram = ram  # keep the buffer alive with the engine
    fn = kernel.get_symbol(function).address
    count = [0]

    def counter(uc: Uc, addr: int, size: int, data: object) -> None:
        count[0] += 1
    hook = uc.hook_add(UC_HOOK_CODE, counter)
    call_bare(uc, fn)
    uc.hook_del(hook)
    uc.ctl_flush_tb()
    return uc, fn, count[0]


def call_bare(uc: Uc, fn: int, seed: int = 1) -> None:
    ram: Ram = uc.bare_ram
    ram.write(STACK_TOP - 8 - PAGE_OFFSET, struct.pack("<Q", PAGE_OFFSET + PARK))
    uc.reg_write(x86.UC_X86_REG_RSP, STACK_TOP - 8)
    uc.reg_write(x86.UC_X86_REG_RDI, seed)
    uc.emu_start(fn, PAGE_OFFSET + PARK + 0x800)


def bare_mips(uc: Uc, fn: int, per_call: int, seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            call_bare(uc, fn, calls)
        calls += 100
    return calls * per_call / (time.perf_counter() - start) / 1e6


def machine_mips(m: Machine, virtual_s: float) -> float:
    before, start = m.stats.instructions, time.perf_counter()
    m.run(virtual_s)
    return (m.stats.instructions - before) / (time.perf_counter() - start) / 1e6


def boot_seconds(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        Machine(cpus=2, seed=0).boot()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    rounds, seconds, virtual = (3, 0.5, 0.2) if args.quick else (5, 1.5, 0.8)

    boot = boot_seconds(rounds)
    loops = {name: bare_unicorn(name) for name in ("demo_compute", "demo_calls")}
    m = Machine(cpus=2, seed=0, cmdline="console=ttyS0 klpemu.demo=compute").boot()
    m.run(0.05)
    bare: dict[str, list[float]] = {name: [] for name in loops}
    whole = []
    for _ in range(rounds):                       # interleaved: the machine is noisy
        for name, (uc, fn, per_call) in loops.items():
            bare[name].append(bare_mips(uc, fn, per_call, seconds / 2))
        whole.append(machine_mips(m, virtual))
    # the kthreads alternate the two loops call by call: compare with the
    # harmonic mix of the bare speeds (equal time per instruction share)
    mixed = [1 / (0.5 / a + 0.5 / b) for a, b in zip(bare["demo_compute"], bare["demo_calls"])]
    result = {
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "boot_s_median": round(boot, 4),
        **{f"bare_unicorn_mips_{name}": round(statistics.median(v), 1) for name, v in bare.items()},
        "bare_unicorn_mips_mix": round(statistics.median(mixed), 1),
        "whole_machine_mips": round(statistics.median(whole), 1),
        "whole_vs_bare_mix_ratio": round(statistics.median([w / b for w, b in zip(whole, mixed)]), 3),
        "instructions_per_call": {name: v[2] for name, v in loops.items()},
        "stats": m.stats.__dict__,
    }
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
