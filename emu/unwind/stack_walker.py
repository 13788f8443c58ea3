"""Stack traces of guest tasks: where to start a walk, and the walk itself.

A task on a CPU starts from that CPU's live registers (the machine is
stopped between quanta); a sleeping task starts, as the kernel's unwinder
does, at the return address of the frame __switch_to_asm saved on its
stack. That address is looked up exactly, not at address-1: for a task
that never ran it is ret_from_fork_asm's first instruction. On a kernel
whose switch saves no resume address (legacy: switch_to() inline in
__schedule), a sleeping task starts where the switch resumes, with the
rbp it pushed; a task that never ran (TIF_FORK) as on the modern kernel.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Callable

from emu.abi import THREAD_SIZE
from emu.arch.cpu import Cpu
from emu.elf.module_loader import LoadedModule
from emu.errors import EmuError
from emu.kernel.program import Program
from emu.kernel.tasks import TaskView, running_on
from emu.unwind import (HINTS_SECTION, FrameKind, StackTrace, StartState, UnwindTables, parse_hints,
                        stack_switches_from_elf, tables_from_elf, walk, walk_best_effort)

_U64 = struct.Struct("<Q").unpack_from


class StackWalker:
    def __init__(self, prog: Program, cpus: list[Cpu]) -> None:
        self.prog = prog
        self.cpus = cpus
        self.tables: UnwindTables = tables_from_elf(prog.image)
        self.switches = stack_switches_from_elf(prog.image)
        # struct inactive_task_frame, as __switch_to_asm leaves it
        self._frame_bp, self._frame_ret = prog.offsets["ITF_bp"], prog.offsets["ITF_ret_addr"]
        self._frame_size = prog.offsets["ITF_size"]
        # where a task resumes after a switch that saves no return address
        self.resume_ip = next((s.resume_ip for s in self.switches if not s.saves_rip), None)
        self.rule = "orc" if self.resume_ip is None else "frame-pointer"
        self._names: dict[tuple[int, bool], str] = {}   # format()'s symbols, until modules change

    def start_of(self, task: TaskView) -> tuple[StartState, Cpu | None]:
        cpu = running_on(self.prog, self.cpus, task)
        if cpu is not None:
            e = cpu.engine
            return StartState(e.reg("rip"), e.reg("rsp"), e.reg("rbp")), cpu
        sp, read = task.thread_sp, self.prog.mem.read_u64
        if self.resume_ip is not None and not task.never_ran:
            return StartState(self.resume_ip, sp, read(sp)), None
        return StartState(read(sp + self._frame_ret), sp + self._frame_size, read(sp + self._frame_bp)), None

    def module_loaded(self, name: str, image: LoadedModule) -> None:
        """Tables for a module's functions, from its bytes before any patching."""
        functions = [(s.name, s.address, s.size) for s in image.symbols if s.is_function and s.size]

        def read_code(addr: int, size: int) -> bytes:
            off = addr - image.base
            return image.image[off:off + size]
        hints = []
        if HINTS_SECTION in image.sections:
            addr, size = image.sections[HINTS_SECTION]
            hints = parse_hints(read_code(addr, size))
        # the rows depend on the relocated bytes (load address included) and
        # the symbols: a module loaded again at the same place hits the cache
        key = hashlib.sha256(image.image + repr(functions).encode()).hexdigest()
        self.tables.add_functions(functions, read_code, hints, cache_key=f"module-{key}")
        self._names.clear()

    def module_removed(self, name: str, image: LoadedModule) -> None:
        self.tables.remove_functions(image.base, image.base + image.size)
        self._names.clear()

    def bounds(self, task: TaskView) -> tuple[int, int]:
        return task.stack, task.stack + THREAD_SIZE

    def trace(self, task: TaskView, reliable: bool = True) -> StackTrace:
        """Walk a task's kernel stack (reliably, or best effort for printing).

        A task executing in user mode has nothing on its kernel stack: its
        trace is empty and reliable.
        """
        start, cpu = self.start_of(task)
        if cpu is not None and cpu.in_user_mode():
            return StackTrace((), True, None)
        bounds = self.bounds(task)
        read = self._stack_reader(bounds)
        if reliable:
            return walk(self.tables, read, start, bounds, self.rule)
        return walk_best_effort(self.tables, read, start, bounds)

    def _stack_reader(self, bounds: tuple[int, int]) -> Callable[[int], int]:
        """read_u64 for a walk, which reads only inside the stack's bounds:
        straight from RAM when the stack is mapped (translating each address
        took a third of a transition pass)."""
        low, high = bounds
        mem = self.prog.mem
        try:
            delta = low - mem.v2p(low, high - low)
        except EmuError:                 # not mapped: each read fails as it should
            return mem.read_u64
        buf = mem.ram.buffer
        return lambda addr: _U64(buf, addr - delta)[0]

    def trace_from(self, start: StartState, bounds: tuple[int, int]) -> StackTrace:
        return walk_best_effort(self.tables, self.prog.mem.read_u64, start, bounds)

    def format(self, trace: StackTrace) -> list[str]:
        """Symbolised frames, one per line, '? ' before guessed ones."""
        ks, names, normal = self.prog.kallsyms, self._names, FrameKind.NORMAL
        out = []
        for i, (ip, _, kind, guessed) in enumerate(trace.frames):
            exact = i == 0 or kind != normal
            name = names.get((ip, exact))
            if name is None:
                name = names[ip, exact] = ks.symbolize(ip) if exact else ks.symbolize_return(ip)
            out.append(f"? {name}" if guessed else name)
        return out
