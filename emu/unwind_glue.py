"""Stack traces of guest tasks: where to start a walk, and the walk itself.

A task on a CPU starts from that CPU's live registers (the machine is
stopped between quanta); a sleeping task starts, as the kernel's unwinder
does, at the return address of the frame __switch_to_asm saved on its
stack. That address is looked up exactly, not at address-1: for a task
that never ran it is ret_from_fork_asm's first instruction.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .abi import THREAD_SIZE
from .unwind import (FrameKind, StackTrace, StartState, UnwindTables, tables_from_elf, walk,
                     walk_best_effort)

if TYPE_CHECKING:
    from .cpu import Cpu
    from .machine import Machine
    from .modules import Module
    from .tasks import TaskView

# struct inactive_task_frame: r15 r14 r13 r12 bx bp ret_addr
SAVED_BP_OFFSET, RET_ADDR_OFFSET, FRAME_SIZE = 40, 48, 56


class StackWalker:
    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.tables: UnwindTables = tables_from_elf(machine.kernel.path)
        self.rule = "orc"

    def start_of(self, task: "TaskView") -> tuple[StartState, "Cpu | None"]:
        cpu = self.machine.running_on(task)
        if cpu is not None:
            e = cpu.engine
            return StartState(e.reg("rip"), e.reg("rsp"), e.reg("rbp")), cpu
        sp, read = task.thread_sp, self.machine.mem.read_u64
        return StartState(read(sp + RET_ADDR_OFFSET), sp + FRAME_SIZE, read(sp + SAVED_BP_OFFSET)), None

    def add_module(self, module: "Module") -> None:
        """Tables for a module's functions, from its bytes before any patching."""
        image = module.image
        functions = [(s.name, s.address, s.size) for s in image.symbols if s.is_function and s.size]

        def read_code(addr: int, size: int) -> bytes:
            off = addr - image.base
            return image.image[off:off + size]
        self.tables.add_functions(functions, read_code)

    def remove_module(self, module: "Module") -> None:
        self.tables.remove_functions(module.image.base, module.image.base + module.image.size)

    def bounds(self, task: "TaskView") -> tuple[int, int]:
        return task.stack, task.stack + THREAD_SIZE

    def trace(self, task: "TaskView", reliable: bool = True) -> StackTrace:
        """Walk a task's kernel stack (reliably, or best effort for printing).

        A task executing in user mode has nothing on its kernel stack: its
        trace is empty and reliable.
        """
        start, cpu = self.start_of(task)
        if cpu is not None and cpu.in_user_mode():
            return StackTrace((), True, None)
        read = self.machine.mem.read_u64
        if reliable:
            return walk(self.tables, read, start, self.bounds(task), self.rule)
        return walk_best_effort(self.tables, read, start, self.bounds(task))

    def trace_from(self, start: StartState, bounds: tuple[int, int]) -> StackTrace:
        return walk_best_effort(self.tables, self.machine.mem.read_u64, start, bounds)

    def format(self, trace: StackTrace) -> list[str]:
        """Symbolised frames, one per line, '? ' before guessed ones."""
        ks = self.machine.kallsyms
        out = []
        for i, f in enumerate(trace.frames):
            exact = i == 0 or f.kind != FrameKind.NORMAL
            name = ks.symbolize(f.ip) if exact else ks.symbolize_return(f.ip)
            out.append(f"{'? ' if f.guessed else ''}{name}")
        return out
