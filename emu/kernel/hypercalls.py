"""Guest -> Python services ("hypercalls"), by HC_* number.

A subsystem marks its handlers with `@hypercall("HC_NAME")` (the C prototype
in the docstring) and the machine registers each subsystem's handlers in its
own table (HypercallTable.register_object), so what a machine serves is
explicit. A handler is `fn(cpu, a0, a1, a2, a3) -> int | None`; a
`blocking` one may call back into the guest: it runs as a continuation and
gets a ServiceContext instead of the CPU (see guestcall.py).

A handler that dereferences a bad guest pointer (BadGuestAddress from the
guarded accessors of emu.arch.memory) faults in the calling task, as the
kernel does on the same pointer: the task is oopsed at the hypercall site
and killed, and the machine goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from emu.abi import HYPERCALLS
from emu.arch.engine import CpuFault, FaultKind
from emu.arch.memory import is_canonical
from emu.errors import BadGuestAddress, EmuError
from emu.kernel.program import Program

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu

Handler = Callable[..., "int | None"]
_MARK = "__klpemu_hypercall__"


@dataclass(frozen=True)
class Hypercall:
    number: int
    name: str
    handler: Handler
    blocking: bool


def hypercall(name: str, *, blocking: bool = False) -> Callable[[Handler], Handler]:
    """Mark a method as the handler of hypercall `name` (an HC_* of abi.h)."""
    if name not in HYPERCALLS:
        raise KeyError(f"{name} is not a hypercall of abi.h")

    def mark(fn: Handler) -> Handler:
        setattr(fn, _MARK, (name, blocking))
        return fn
    return mark


class BlockingRunner(Protocol):
    """Runs a blocking handler as a continuation (emu.kernel.guestcall.GuestCalls)."""

    def start(self, cpu: "Cpu", task: int, handler: Handler, args: tuple[int, ...]) -> int | None: ...


class HypercallTable:
    """The hypercalls one machine serves, and their dispatch."""

    def __init__(self, prog: Program, runner: BlockingRunner,
                 on_fault: Callable[["Cpu", CpuFault], None]) -> None:
        self.prog = prog
        self.runner = runner
        self.on_fault = on_fault
        self.count = 0
        self._calls: dict[int, Hypercall] = {}

    def register(self, name: str, handler: Handler, *, blocking: bool = False) -> None:
        number = HYPERCALLS[name]
        if number in self._calls:
            raise EmuError(f"hypercall {name} registered twice")
        self._calls[number] = Hypercall(number, name, handler, blocking)

    def register_object(self, obj: Any) -> None:
        """Register every method of `obj` marked with @hypercall."""
        for attr in dir(type(obj)):
            mark = getattr(getattr(type(obj), attr), _MARK, None)
            if mark is not None:
                name, blocking = mark
                self.register(name, getattr(obj, attr), blocking=blocking)

    def get(self, number: int) -> Hypercall | None:
        return self._calls.get(number)

    def dispatch(self, cpu: "Cpu", regs: Sequence[int]) -> tuple[int, int, int] | None:
        """The guest reached klpemu_hypercall on `cpu` with `regs` (Engine's
        HYPERCALL_REGS: rax, rdi, rsi, rdx, rcx, rsp): run the service rax
        names. Returns (rax, rip, rsp) to return to the caller with, or None
        when the service left the CPU where it goes on (a guest call, a fault)."""
        self.count += 1
        mem = self.prog.mem
        nr, a0, a1, a2, a3, rsp = regs
        call = self._calls.get(nr)
        if call is None:
            caller = mem.read_u64(rsp)
            raise EmuError(f"the guest made unknown hypercall {nr} at {self.prog.symbolize(caller)}")
        try:
            if call.blocking:
                result = self.runner.start(cpu, self.prog.cpu_curr(cpu.index), call.handler, (a0, a1, a2, a3))
            else:
                result = call.handler(cpu, a0, a1, a2, a3)
        except BadGuestAddress as bad:
            self.on_fault(cpu, host_access_fault(bad, cpu.engine.reg("rip")))
            return None
        if result is None:
            return None
        # Return from klpemu_hypercall here rather than let its `ret` run:
        # a service that stopped the CPU (stop_machine for a code patch)
        # would otherwise resume at the hook and run the hypercall again.
        # (A service that returns a value left rsp where it was; one that
        # called into the guest returned by hand and gives None.)
        return result, mem.read_u64(rsp), rsp + 8


def host_access_fault(bad: BadGuestAddress, pc: int) -> CpuFault:
    """The CPU fault the kernel would take on the access the host could not make."""
    if not is_canonical(bad.address):
        return CpuFault(FaultKind.GENERAL_PROTECTION, bad.access, bad.address, pc, str(bad))
    return CpuFault(FaultKind.PAGE_FAULT, bad.access, bad.address, pc, str(bad))
