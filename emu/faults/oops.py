"""Oops and lockup reports in the kernel's format, and what follows a fault.

A fault in a task kills that task (the kernel's make_task_dead) and the
machine goes on; a fault in interrupt context or in an idle task is fatal,
as it is for the kernel ("Fatal exception in interrupt"). So is a kernel
stack overflow that leaves no room to deliver the page fault: the CPU
raises a double fault, whose handler runs as an NMI (handle_stack_overflow).
"""
from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import Callable

from emu.abi import THREAD_SIZE, VMAP_STACK_START
from emu.arch.memory import PAGE_4K, VMAP_STACK_END
from emu.arch.cpu import Cpu
from emu.arch.engine import (GPR_INDEX, MSR_GS_BASE, MSR_KERNEL_GS_BASE, RFLAGS_INDEX, RIP_INDEX, CpuFault,
                             FaultKind)
from emu.kernel.printk import KernelLog
from emu.kernel.ptr_hash import hashed_pointer
from emu.kernel.program import Program
from emu.kernel.taint import TaintFlag
from emu.kernel.tasks import TaskView, cpu_curr
from emu.unwind import FrameKind, StackTrace, StartState
from emu.unwind.stack_walker import StackWalker

SIGKILL, SIGSEGV = 9, 11
HARDIRQ_MASK = 0x000F0000
PF_WRITE, PF_USER, PF_INSTR = 0x2, 0x4, 0x10
EXCEPTION_FRAME = 48          # SS, RSP, RFLAGS, CS, RIP and an error code, pushed below RSP & ~15
KERNEL_RELEASE = "6.12.0-klpemu"


def register_lines(prog: Program, cpu: Cpu) -> list[str]:
    """RIP/RSP/registers as the kernel's __show_regs prints them."""
    e = cpu.engine
    r = e.gprs()
    cs = e.reg("cs")
    ss = e.reg("ss")
    where = prog.symbolize(e.reg("rip")) if not cs & 3 else f"{e.reg('rip'):#x}"
    q = lambda n: f"{r[n]:016x}"  # noqa: E731
    return [
        f"RIP: {cs:04x}:{where}",
        f"RSP: {ss:04x}:{q('rsp')} EFLAGS: {e.reg('rflags'):08x}",
        f"RAX: {q('rax')} RBX: {q('rbx')} RCX: {q('rcx')}",
        f"RDX: {q('rdx')} RSI: {q('rsi')} RDI: {q('rdi')}",
        f"RBP: {q('rbp')} R08: {q('r8')} R09: {q('r9')}",
        f"R10: {q('r10')} R11: {q('r11')} R12: {q('r12')}",
        f"R13: {q('r13')} R14: {q('r14')} R15: {q('r15')}",
    ]


def task_line(prog: Program, cpu: Cpu, task: TaskView) -> str:
    """dump_stack_print_info's first line, with print_tainted()."""
    return f"CPU: {cpu.index} UID: 0 PID: {task.pid} Comm: {task.comm} {prog.taint} {KERNEL_RELEASE} #1"


def call_trace(walker: StackWalker, cpu: Cpu, task: TaskView) -> list[str]:
    e = cpu.engine
    start = StartState(e.reg("rip"), e.reg("rsp"), e.reg("rbp"))
    low = max(min(task.stack, start.sp), task.stack - PAGE_4K)    # an overflow's first frame is in the guard
    trace = walker.trace_from(start, (low, task.stack + THREAD_SIZE))
    kernel = StackTrace(tuple(f for f in trace.frames if f.kind != FrameKind.USER), trace.reliable, trace.reason)
    frames = walker.format(kernel)[1:]       # the first is RIP, printed above
    return ["Call Trace:", " <TASK>", *(f" {f}" for f in frames), " </TASK>"]


def lockup_report(prog: Program, walker: StackWalker, cpu: Cpu, headline: str) -> list[str]:
    task = cpu_curr(prog, cpu.index)
    return [headline, task_line(prog, cpu, task), *register_lines(prog, cpu), *call_trace(walker, cpu, task)]


@dataclass
class Oops:
    lines: list[str]
    fatal: str | None
    pc: int
    address: int | None
    task_pid: int
    user_fault: bool
    signal: int = SIGSEGV     # what the task dies of: die()'s SIGSEGV, page_fault_oops's SIGKILL
    task_comm: str = ""
    t_ns: int = 0             # virtual time of the fault

    @property
    def headline(self) -> str:
        """The report's first line (what went wrong, as the log says it)."""
        return self.lines[0] if self.lines else ""

    @classmethod
    def from_fault(cls, prog: Program, walker: StackWalker, cpu: Cpu, fault: CpuFault, number: int) -> "Oops":
        """The report of a fault; `number` counts the kernel oopses so far, this one included."""
        task = cpu_curr(prog, cpu.index)
        if cpu.in_user_mode():
            return cls._user_fault(cpu, fault, task)
        head = []
        double_fault = False
        signal = SIGSEGV
        if fault.kind is FaultKind.PAGE_FAULT and _hits_stack_guard(task, fault.address or 0):
            addr = fault.address or 0
            double_fault = (cpu.engine.reg("rsp") & ~0xF) - EXCEPTION_FRAME < task.stack
            p = lambda a: hashed_pointer(prog, a)  # noqa: E731
            head.append(f"BUG: TASK stack guard page was hit at {p(addr)} "
                        f"(stack is {p(task.stack)}..{p(task.stack + THREAD_SIZE)})")
            head.append(f"Oops: stack guard page: 0000 [#{number}] PREEMPT SMP NOPTI")
        elif fault.kind is FaultKind.PAGE_FAULT:
            signal = SIGKILL
            addr = fault.address or 0
            code = (PF_WRITE if fault.access == "write" else 0) | (PF_INSTR if fault.access == "instruction fetch" else 0)
            head.append(f"BUG: kernel NULL pointer dereference, address: {addr:016x}" if addr < 4096
                        else f"BUG: unable to handle page fault for address: {addr:016x}")
            head.append(f"#PF: supervisor {fault.access} access in kernel mode"
                        if fault.access != "instruction fetch" else "#PF: supervisor instruction fetch in kernel mode")
            head.append(f"#PF: error_code({code:#06x}) - not-present page")
            head.append(f"Oops: Oops: {code:04x} [#{number}] PREEMPT SMP NOPTI")
        elif fault.kind is FaultKind.GENERAL_PROTECTION and fault.address is not None:
            head.append(f"Oops: {fault.kind.value}, probably for non-canonical address {fault.address:#x}: "
                        f"0000 [#{number}] PREEMPT SMP NOPTI")
        else:
            head.append(f"Oops: {fault.kind.value}: 0000 [#{number}] PREEMPT SMP NOPTI")
        lines = [*head, task_line(prog, cpu, task), *register_lines(prog, cpu),
                 *call_trace(walker, cpu, task), "---[ end trace 0000000000000000 ]---"]
        preempt = prog.mem.read_s32(prog.per_cpu(cpu.index, "PCPU_preempt_count"))
        fatal = None
        if preempt & HARDIRQ_MASK or double_fault:
            fatal = "Fatal exception in interrupt"
        elif task.is_idle:
            fatal = "Attempted to kill the idle task!"
        if fatal:
            lines.append(f"Kernel panic - not syncing: {fatal}")
        return cls(lines, fatal, fault.pc, fault.address, task.pid, False, signal, task.comm)

    @classmethod
    def _user_fault(cls, cpu: Cpu, fault: CpuFault, task: TaskView) -> "Oops":
        e = cpu.engine
        code = PF_USER | (PF_WRITE if fault.access == "write" else 0)
        line = (f"{task.comm}[{task.pid}]: segfault at {fault.address or 0:x} ip {e.reg('rip'):016x} "
                f"sp {e.reg('rsp'):016x} error {code:x} in user.elf")
        return cls([line], None, fault.pc, fault.address, task.pid, True, task_comm=task.comm)


def _hits_stack_guard(task: TaskView, address: int) -> bool:
    """An access to the page below a vmap'd task stack (get_stack_guard_info)."""
    return VMAP_STACK_START <= task.stack < VMAP_STACK_END and task.stack - PAGE_4K <= address < task.stack


def kill_task(prog: Program, cpu: Cpu, signo: int) -> None:
    """Send the task running on `cpu` to make_task_dead(signo) on a fresh stack."""
    e = cpu.engine
    target = prog.symbol_address("rewind_stack_and_make_dead")
    if cpu.in_user_mode():
        def to_kernel(regs: MutableSequence[int]) -> None:
            regs[GPR_INDEX["rdi"]], regs[RIP_INDEX], regs[RFLAGS_INDEX] = signo, target, 0x2
        e.enter_kernel_mode(to_kernel)
        kernel_gs = e.msr(MSR_KERNEL_GS_BASE)      # as swapgs on kernel entry
        e.set_msr(MSR_KERNEL_GS_BASE, e.msr(MSR_GS_BASE))
        e.set_msr(MSR_GS_BASE, kernel_gs)
    else:
        e.set_reg("rflags", 0x2)
        e.set_reg("rdi", signo)
        e.set_reg("rip", target)


class FaultHandler:
    """What the machine does with a CPU fault: an oops report in the log,
    then the faulting task dies, or the machine panics (`crash`)."""

    def __init__(self, prog: Program, walker: StackWalker, log: KernelLog, crash: Callable[[str], None]) -> None:
        self.prog = prog
        self.walker = walker
        self.log = log
        self.crash = crash
        self.oopses: list[Oops] = []

    def __call__(self, cpu: Cpu, fault: CpuFault) -> None:
        number = sum(1 for o in self.oopses if not o.user_fault) + 1
        oops = Oops.from_fault(self.prog, self.walker, cpu, fault, number)
        oops.t_ns = self.log.clock.ns
        self.oopses.append(oops)
        for line in oops.lines:
            self.log.log(line, level=4)
        if not oops.user_fault:
            self.prog.taint.add(TaintFlag.DIE)       # oops_end(), after the report
        if oops.fatal:
            self.crash(oops.fatal)
            return
        kill_task(self.prog, cpu, oops.signal)
