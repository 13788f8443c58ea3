"""Kernel stacks are vmap'd (VMAP_STACK): an unmapped guard page lies below
each, so an overflow faults there instead of running into the heap, with the
report Linux prints (handle_stack_overflow). An overflow that leaves no room
to deliver the page fault is a double fault, run as an NMI: the kernel
panics. A read into the guard page with the stack pointer still inside the
stack is a plain oops of the task."""
import re

import pytest

from emu import EmuError, Machine, ShellError
from emu.abi import THREAD_SIZE, VMAP_STACK_START
from emu.arch.memory import VMAP_STACK_END
from emu.errors import BadGuestAddress
from klp_helpers import MODULES
from ptr_hash import hashed_pointer

GUARD = re.compile(r"BUG: TASK stack guard page was hit at ([0-9a-f]{16}) \(stack is ([0-9a-f]{16})\.\.([0-9a-f]{16})\)")


def test_every_task_stack_is_in_the_vmap_area_over_an_unmapped_guard() -> None:
    m = Machine(cpus=2, seed=0).boot()
    stacks = [t.stack for t in m.tasks() if VMAP_STACK_START <= t.stack < VMAP_STACK_END]
    assert len(stacks) == len(m.tasks()) - 1                 # all but init_task's, in the kernel image
    for stack in stacks:
        assert (stack - VMAP_STACK_START) % (2 * THREAD_SIZE) == THREAD_SIZE
        m.mem.read(stack, THREAD_SIZE)                       # the host reads what the CPU maps
        with pytest.raises(BadGuestAddress):
            m.mem.read_u64(stack - 8)
        with pytest.raises(BadGuestAddress):
            m.mem.read(stack + THREAD_SIZE - 8, 16)          # the next slot's guard
    with pytest.raises(BadGuestAddress):
        m.mem.read(VMAP_STACK_END - 8, 64)                   # past the area: no PTE read beyond its table


def test_a_recursion_that_overflows_the_stack_is_a_double_fault_and_a_panic() -> None:
    m = Machine(cpus=2, seed=0).boot()
    before = len(m.dmesg_lines())
    with pytest.raises(EmuError, match="crashed earlier: Fatal exception in interrupt"):
        m.insmod(MODULES / "klpemu_hostile_recursion.ko")
    log = m.dmesg_lines()[before:]
    task = m.task(1)
    start = next(i for i, line in enumerate(log) if line.startswith("BUG: TASK stack guard page"))
    hit = GUARD.fullmatch(log[start])
    assert hit, log[start]
    assert hit.group(2) == hashed_pointer(m, task.stack)
    assert hit.group(3) == hashed_pointer(m, task.stack + THREAD_SIZE)
    assert hit.group(1) == hashed_pointer(m, m.oopses[0].address)
    assert task.stack - 4096 <= m.oopses[0].address < task.stack
    assert log[start + 1] == "Oops: stack guard page: 0000 [#1] PREEMPT SMP NOPTI"
    assert log[start + 3].startswith("RIP: 0010:klpemu_hostile_recurse+0x")
    assert log[start + 4].startswith("RSP: 0018:ffffc900")
    trace = log[log.index(" <TASK>", start) + 1:log.index(" </TASK>", start)]
    assert len(trace) > 100 and all(f.startswith(" klpemu_hostile_recurse+0x") for f in trace)   # reliable: no '?'
    assert log[-1] == "Kernel panic - not syncing: Fatal exception in interrupt"
    assert m.crashed == "Fatal exception in interrupt"
    with pytest.raises(EmuError, match="crashed earlier: Fatal exception in interrupt"):
        m.read_file("/proc/cmdline")


def test_a_read_into_the_guard_page_oopses_the_task_and_the_machine_goes_on() -> None:
    m = Machine(cpus=2, seed=0).boot()
    pid = m.shell.pid
    with pytest.raises(ShellError, match="died during the command"):
        m.insmod(MODULES / "klpemu_hostile_recursion.ko", "peek=1")
    log = "\n".join(m.dmesg_lines())
    assert GUARD.search(log)
    assert "Oops: stack guard page: 0000 [#1] PREEMPT SMP NOPTI" in log
    assert "RIP: 0010:klpemu_hostile_peek+0x" in log
    assert " klpemu_hostile_recursion_init+0x" in log or " init_module+0x" in log
    assert not m.crashed and "Kernel panic" not in log
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert m.shell.pid != pid


def test_klpemu_run_exits_3_on_a_stack_overflow(tmp_path, capsys) -> None:
    from klpemu.cli import main
    script = tmp_path / "recurse.sh"
    script.write_text("insmod klpemu_hostile_recursion.ko\n")
    assert main(["run", "--module-dir", str(MODULES), str(script)]) == 3
    _, err = capsys.readouterr()
    assert "BUG: TASK stack guard page was hit at" in err, err
    assert "Fatal exception in interrupt" in err


def test_ram_beyond_what_the_stacks_area_maps_is_refused() -> None:
    with pytest.raises(EmuError, match=r"ram_mib must be at most 606 .*not 700"):
        Machine(cpus=1, ram_mib=700)
