"""An emulated CPU: its engine plus what the hardware would track for it
(halted, pending interrupts, the next tick) and interrupt delivery, which
Unicorn does not perform by itself (syscall entry: Engine.hook_syscall)."""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field

from emu.abi import KERNEL_CS, KERNEL_DS, USER_CS, USER_DS
from emu.arch.engine import GPR_INDEX, RFLAGS_FIXED, RFLAGS_INDEX, RIP_INDEX, Engine
from emu.arch.memory import AddressSpace

X86_EFLAGS_IF = 0x200
X86_EFLAGS_TF = 0x100
RSP_INDEX = GPR_INDEX["rsp"]


@dataclass
class Cpu:
    index: int
    engine: Engine
    online: bool = False
    halted: bool = False          # in native_safe_halt: waits for an interrupt
    dead: bool = False            # stopped for good (panic)
    wake_at_ns: int = 0           # halted: the next timer event it asked for (0: none)
    entering_idle: bool = False   # told the emulator it halts next (HC_IDLE), has not halted yet
    next_tick_ns: int = 0
    pending: set[int] = field(default_factory=set)
    irqs_off_since_ns: int | None = None
    preempt_off_since_ns: int | None = None

    @property
    def runnable(self) -> bool:
        return self.online and not self.halted and not self.dead

    def interrupts_enabled(self) -> bool:
        return bool(self.engine.entry_regs()[1] & X86_EFLAGS_IF)

    def in_user_mode(self) -> bool:
        return (self.engine.entry_regs()[3] & 3) == 3

    def deliver_interrupt(self, vector: int, entry: int, mem: AddressSpace, kernel_stack_top: int) -> None:
        """Push an iret frame and enter `entry`, as an interrupt gate does.

        From user mode the CPU first switches to the kernel stack (tss.sp0,
        here the per-CPU top_of_stack) and to CPL 0."""
        e = self.engine
        rip, rflags, rsp, cs = e.entry_regs()
        new_rflags = (rflags & ~(X86_EFLAGS_IF | X86_EFLAGS_TF)) | RFLAGS_FIXED
        if cs & 3 == 3:
            new_rsp = kernel_stack_top - 40

            def to_kernel(regs: "ctypes.Array[ctypes.c_uint64]") -> None:
                regs[RSP_INDEX], regs[RIP_INDEX], regs[RFLAGS_INDEX] = new_rsp, entry, new_rflags
            e.enter_kernel_mode(to_kernel)
            mem.write(new_rsp, struct.pack("<5Q", rip, USER_CS, rflags, rsp, USER_DS))
        else:
            new_rsp = (rsp & ~0xF) - 40
            mem.write(new_rsp, struct.pack("<5Q", rip, KERNEL_CS, rflags, rsp, KERNEL_DS))
            e.jump_to(entry, new_rsp, new_rflags)
        self.halted = False
