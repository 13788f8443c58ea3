"""Python services that call back into the guest, as continuations.

A hypercall handler that needs guest code (a module's init, a livepatch
callback) runs in its own greenlet. `ServiceContext.call()` builds a call
frame on the current task's kernel stack, points the CPU at the function and
switches back to the run loop: the hook returns and emulation goes on, with
no nested emu_start. The function returns into `klpemu_call_return`, whose
hypercall switches back into the service with the return value; when the
service finishes, the task resumes after its original hypercall with the
service's result. The called code is genuine guest code: it may sleep, be
preempted and migrate like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import greenlet

from emu.errors import BadGuestAddress, GuestCallError
from emu.kernel.hypercalls import hypercall
from emu.kernel.program import Program

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu

_ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
_SUSPENDED = object()


@dataclass
class _Suspended:
    glet: greenlet.greenlet
    ctx: "ServiceContext"


class ServiceContext:
    """What a blocking service sees: the CPU and task it runs on, and call()."""

    def __init__(self, calls: "GuestCalls", cpu: "Cpu", task: int, site_rsp: int) -> None:
        self.calls = calls
        self.cpu = cpu
        self.task = task
        self.site_rsp = site_rsp

    def call(self, function: int | str, *args: int) -> int:
        """Run a guest function on this task and return its return value (rax)."""
        if len(args) > len(_ARG_REGS):
            raise GuestCallError(f"guest calls take at most {len(_ARG_REGS)} arguments")
        prog = self.calls.prog
        addr = prog.symbol_address(function) if isinstance(function, str) else function
        # the frame klpemu_call_return's unwind hint describes (see entry.S);
        # site_rsp is 8 mod 16, so the callee starts with rsp+8 16-aligned
        rsp = self.site_rsp - 16
        prog.mem.write_u64(rsp, self.calls.return_site)
        e = self.cpu.engine
        for reg, value in zip(_ARG_REGS, args):
            e.set_reg(reg, value)
        e.set_reg("rsp", rsp)
        e.set_reg("rip", addr)
        self.calls.suspend(self)
        value = greenlet.getcurrent().parent.switch(_SUSPENDED)
        if isinstance(value, BaseException):
            raise value
        return value


class GuestCalls:
    """The services waiting for a guest call to return, by task.

    Services nest on one task (insmod's service calls the module's init,
    which calls klp_enable_patch, whose service calls a callback): calls
    return in LIFO order, so each task has a stack of waiting services.
    """

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        self.return_site = prog.symbol_address("klpemu_call_return_site")
        self.hypercall_site = prog.symbol_address("klpemu_hypercall_site")
        self._waiting: dict[int, list[_Suspended]] = {}

    def start(self, cpu: "Cpu", task: int, handler: Callable[..., int], args: tuple[Any, ...]) -> int | None:
        """Run `handler(ctx, *args)`; its result, or None while it waits on the guest."""
        ctx = ServiceContext(self, cpu, task, cpu.engine.reg("rsp"))
        glet = greenlet.greenlet(handler)
        return self._finish_or_wait(ctx, self._run(ctx, glet.switch, ctx, *args))

    def suspend(self, ctx: ServiceContext) -> None:
        self._waiting.setdefault(ctx.task, []).append(_Suspended(greenlet.getcurrent(), ctx))

    @hypercall("HC_CALL_RETURN")
    def hc_call_return(self, cpu: "Cpu", value: int, *_: int) -> int | None:
        """void klpemu_call_return(long value): a Python->guest call returned."""
        self.resume(cpu, self.prog.cpu_curr(cpu.index), value)
        return None

    def resume(self, cpu: "Cpu", task: int, value: int) -> None:
        """klpemu_call_return reached on `task`: continue its innermost service."""
        stack = self._waiting.get(task)
        if not stack:
            raise GuestCallError(f"a guest call returned on task {task:#x}, which made none")
        waiter = stack.pop()
        if not stack:
            del self._waiting[task]
        waiter.ctx.cpu = cpu
        self._finish_or_wait(waiter.ctx, self._run(waiter.ctx, waiter.glet.switch, value))

    def _run(self, ctx: ServiceContext, switch: Callable[..., Any], *args: Any) -> Any:
        """Switch into a service; if it faults on a guest address, the task is
        put back at its hypercall site (as it was when it called the service),
        where the caller of this reports the fault."""
        try:
            return switch(*args)
        except BadGuestAddress:
            e = ctx.cpu.engine
            e.set_reg("rsp", ctx.site_rsp)
            e.set_reg("rip", self.hypercall_site)
            raise

    def task_died(self, task: int) -> None:
        for waiter in reversed(self._waiting.pop(task, [])):
            try:
                waiter.glet.throw(GuestCallError(f"task {task:#x} died during a guest call"))
            except GuestCallError:
                pass                       # the service did not handle it: it ends here

    def _finish_or_wait(self, ctx: ServiceContext, outcome: Any) -> int | None:
        if outcome is _SUSPENDED:
            return None
        result = int(outcome or 0)
        e = ctx.cpu.engine
        if e.reg("rsp") != ctx.site_rsp:
            # a guest call happened: return from the original hypercall by hand
            e.return_to(result, self.prog.mem.read_u64(ctx.site_rsp), ctx.site_rsp + 8)
            return None
        return result
