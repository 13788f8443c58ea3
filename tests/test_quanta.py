"""Quanta without per-instruction counting: a budget of block bytes taken by
the native block hook (or its Python fallback, with the same run), and a
precise tail that stops a CPU inside a block, where a budget cannot."""
from __future__ import annotations

import struct

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from emu.abi import PAGE_OFFSET
from emu.arch import native
from emu.kernel.shell import MODE_GETPID_LOOP
from emu.runloop import PARK_PHYS

MASK = (1 << 64) - 1
STACK_TOP = PAGE_OFFSET + 0x80000        # low RAM, unused before boot


def demo_compute(seed: int) -> int:
    """What the guest's demo_compute returns (fixtures/kernel/main.c)."""
    x = seed
    for _ in range(2000):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
    return x


def test_a_tail_stops_inside_a_block_and_the_code_runs_on_correctly() -> None:
    m = Machine(cpus=1)                                  # not booted: CPU 0 is free
    engine, mem = m.cpus[0].engine, m.mem
    park = PAGE_OFFSET + PARK_PHYS                      # a page of hlt: the return address
    mem.write(STACK_TOP - 8, struct.pack("<Q", park))
    engine.set_reg("rsp", STACK_TOP - 8)
    engine.set_reg("rdi", 12345)
    fn = m.prog.symbol_address("demo_compute")
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    stops_inside = 0
    rip = fn
    while rip != park + 1:                              # hlt ran: returned
        assert engine.run(rip, park + 0x800, 1) is None  # one block, stopped at the next's start
        rip = engine.reg("rip")
        if rip == park + 1:
            break
        block_start = rip
        plain = list(cs.disasm_lite(bytes(mem.read(rip, 32)), rip, 2))
        assert engine.run_into_block(2) is None
        rip = engine.reg("rip")
        if rip != block_start:
            stops_inside += 1
            assert rip in {a + s for a, s, _, _ in plain}  # one or two instructions into the block
    assert engine.reg("rax") == demo_compute(12345)
    assert stops_inside > 1000                           # the loop body, stopped inside again and again


def _run(schedule: str) -> tuple[object, ...]:
    m = Machine(cpus=2, seed=5, schedule=schedule).boot()
    for _ in range(2):
        m.shell.spawn(MODE_GETPID_LOOP, "hammer")
    m.run(0.05)
    return (m.clock_ns, m.stats.rounds, m.stats.quanta, m.stats.code_bytes, m.stats.interrupts,
            tuple((t.pid, t.nvcsw, t.nivcsw) for t in m.tasks()), m.dmesg())


def test_the_native_budget_and_its_fallback_give_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = {}
    try:
        for flag in ("0", "1"):
            monkeypatch.setenv("KLPEMU_NATIVE", flag)
            native.library.cache_clear()
            assert (native.library() is not None) == (flag == "1")
            runs[flag] = _run("random")
    finally:
        native.library.cache_clear()
    assert runs["0"] == runs["1"]
    assert runs["1"][3] > 0


def test_the_same_seed_gives_the_same_code_bytes() -> None:
    assert _run("pct") == _run("pct")
