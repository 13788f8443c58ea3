"""Stack switches in machine code, and where the task switched to resumes.

A function switches stacks where it loads rsp from memory (`mov rsp,
[next->thread.sp]`). When the code after that load only pops and leaves
(`ret`, or a tail `jmp`), the task switched to resumes at a return address
saved on its own stack: x86-64 since 4.9, `__switch_to_asm`. Otherwise no
resume address is saved: the task goes on with the code after the load, in
whichever copy of the function made the switch, and that code must find the
task's frame as the task's own copy left it (x86-64 before 4.9, switch_to()
inline in `__schedule`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from emu.unwind.cfa import rsp_offset, track_states
from emu.unwind.hints import Hint
from emu.unwind.tables import FunctionSym, ReadCode

CALLEE_SAVED = ("rbp", "rbx", "r12", "r13", "r14", "r15")

# mov rsp, r/m64 with a memory operand: REX.W 8B, ModRM.reg = 4 (rsp), mod != 3
_LOAD_RSP = re.compile(rb"[\x48\x49\x4c\x4d]\x8b[\x20-\x27\x60-\x67\xa0-\xa7]", re.DOTALL)
_LEAVE_OK = re.compile(r"pop|nop")


@dataclass(frozen=True, slots=True)
class StackSwitch:
    """One stack switch: the instructions, and the frame a sleeping task keeps.

    `frame_size` is CFA - rsp where the outgoing task's rsp is stored (the
    bytes of its frame above its saved stack pointer, return address
    included); `saved_regs` the callee-saved registers pushed by then, as
    (register, offset from the CFA), outermost first.
    """

    function: FunctionSym
    load_ip: int
    resume_ip: int
    saves_rip: bool
    save_ip: int | None
    frame_size: int | None
    saved_regs: tuple[tuple[str, int], ...]

    def frame(self) -> str:
        """The frame at the resume point, as a message shows it."""
        size = "?" if self.frame_size is None else str(self.frame_size)
        regs = " ".join(f"{r}@CFA{off}" for r, off in self.saved_regs)
        return f"{size} bytes, {regs or 'no registers saved'}"


def find_stack_switches(functions: Iterable[FunctionSym], read_code: ReadCode,
                        hints: Iterable[Hint] = ()) -> Iterator[StackSwitch]:
    """Every stack switch in `functions` (hints: those of their image)."""
    hints = tuple(hints)
    for sym in functions:
        code = read_code(sym.start, sym.size)
        if _LOAD_RSP.search(code) is None:
            continue
        mine = [h for h in hints if sym.start <= h.ip < sym.end]
        yield from _switches_in(sym, code, mine)


def _switches_in(sym: FunctionSym, code: bytes, hints: list[Hint]) -> Iterator[StackSwitch]:
    insns, states = track_states(code, sym.start, hints)
    order = sorted(insns)
    for i, addr in enumerate(order):
        _size, mnem, ops = insns[addr]
        if mnem != "mov" or not ops.startswith("rsp, qword ptr ["):
            continue
        resume = addr + insns[addr][0]
        save = next((a for a in reversed(order[:i])
                     if insns[a][1] == "mov" and insns[a][2].endswith("], rsp")), None)
        state = states.get(save) if save is not None else None
        size = rsp_offset(state) if state is not None else None
        regs = _pushed_before(insns, states, order[:i]) if size is not None else ()
        yield StackSwitch(sym, addr, resume, _leaves_by_return(insns, resume, sym),
                          save, size, regs)


def _pushed_before(insns, states, addrs: list[int]) -> tuple[tuple[str, int], ...]:
    """Callee-saved pushes among `addrs` with a known CFA offset."""
    out = []
    for a in addrs:
        _size, mnem, ops = insns[a]
        state = states.get(a)
        off = rsp_offset(state) if state is not None else None
        if mnem == "push" and ops in CALLEE_SAVED and off is not None:
            out.append((ops, -(off + 8)))
    return tuple(sorted(out, key=lambda r: -r[1]))


def _leaves_by_return(insns, ip: int, sym: FunctionSym) -> bool:
    """Does every instruction from `ip` on only pop, then ret or jump out?"""
    seen = set()
    while ip in insns and ip not in seen:
        seen.add(ip)
        size, mnem, ops = insns[ip]
        if mnem == "ret":
            return True
        if mnem == "jmp":
            target = int(ops, 16) if ops.startswith("0x") else None
            if target is None or not sym.start <= target < sym.end:
                return True
            ip = target
            continue
        if not _LEAVE_OK.match(mnem):
            return False
        ip += size
    return False
