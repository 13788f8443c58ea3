"""Where a runaway task may be killed from outside the guest.

The host kills a task that never returns to the shell by sending it to
make_task_dead, at an instruction of its choosing. Linux has no such kill,
and an instruction chosen at random can be inside a wait: schedule_timeout
with its timer armed on the stack, a completion's wait-queue entry, a mutex
waiter. Killed there, the task leaves the kernel a pointer into a stack that
make_task_dead then reuses, and the next timer tick or wake-up follows it
(a panic in run_local_timers, a dead task woken). So the kill waits for a
point where no frame of the task's stack is a function that calls schedule
or schedule_timeout itself: the waiters, which are the functions that link
their stack into the kernel while they sleep. A function that only calls a
wrapper (schedule_timeout_interruptible) holds nothing and may die; a
wrapper gcc inlined into its caller makes the caller a waiter, which only
makes the kill wait longer.
"""
from __future__ import annotations

from emu.abi import THREAD_SIZE
from emu.arch.cpu import Cpu
from emu.arch.disasm import disassembler
from emu.elf.image import Symbol
from emu.kernel.program import Program
from emu.kernel.tasks import TaskView
from emu.unwind import FrameKind, StartState
from emu.unwind.stack_walker import StackWalker

SLEEPS = ("schedule", "schedule_timeout")


class KillPoints:
    """Tells whether the task running on a CPU may be killed at its current instruction."""

    def __init__(self, prog: Program, walker: StackWalker) -> None:
        self.prog = prog
        self.walker = walker
        self._sleeps = {prog.symbol_address(name) for name in SLEEPS}
        self._waits: dict[tuple[int, int, str | None], bool] = {}   # (address, size, module) -> waits

    def safe(self, cpu: Cpu, task: TaskView) -> bool:
        """True if the stack of `task` (on `cpu`) walks reliably to its
        entry and no frame of it is in a wait."""
        e = cpu.engine
        start = StartState(e.reg("rip"), e.reg("rsp"), e.reg("rbp"))
        trace = self.walker.trace_from(start, (task.stack, task.stack + THREAD_SIZE))
        if not trace.reliable:
            return False
        for depth, frame in enumerate(trace.frames):
            if frame.kind == FrameKind.USER:
                break
            loc = self.prog.kallsyms.lookup(frame.ip if depth == 0 else frame.ip - 1)
            if loc is None or self.is_waiter(loc.symbol, loc.module):
                return False
        return True

    def is_waiter(self, sym: Symbol, module: str | None) -> bool:
        """Whether `sym` is schedule/schedule_timeout or calls one of them directly."""
        key = (sym.address, sym.size, module)
        if key not in self._waits:
            self._waits[key] = sym.address in self._sleeps or any(
                mnemonic == "call" and _target(operand) in self._sleeps
                for _, _, mnemonic, operand in disassembler().disasm_lite(
                    self.prog.mem.read(sym.address, sym.size), sym.address))
        return self._waits[key]


def _target(operand: str) -> int | None:
    """A direct call's target address (Capstone prints it as 0x...); None if indirect."""
    try:
        return int(operand, 16)
    except ValueError:
        return None
