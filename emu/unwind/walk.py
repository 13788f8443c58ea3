"""Stack walks over unwind tables: a reliable walk and a best-effort one for printing.

The reliable walk follows the rules of the kernel's `arch_stack_walk_reliable`
with the ORC unwinder: it passes through kernel-mode interrupt frames while the
tables cover the interrupted ip, ends successfully at user-mode pt_regs at the top
of the task stack or at an END_OF_STACK hint, and calls anything else unreliable.
The "frame-pointer" rule (old kernels) also refuses kernel-mode pt_regs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from emu.errors import EmuError
from emu.unwind.hints import HintType, SpReg
from emu.unwind.tables import UnwindTables

log = logging.getLogger(__name__)

ReadU64 = Callable[[int], int]

RULES = ("orc", "frame-pointer")
DEFAULT_MAX_FRAMES = 128

PT_REGS_SIZE = 168
IRET_FRAME_SIZE = 40
_REGS_BP, _REGS_IP, _REGS_CS, _REGS_SP = 32, 128, 136, 152
_IRET_IP, _IRET_CS, _IRET_SP = 0, 8, 24


class FrameKind(IntEnum):
    """How a frame's ip was found."""

    NORMAL = 0     # the start ip, or a return address read from a call frame
    INTERRUPT = 1  # read from kernel-mode pt_regs or an iret frame
    USER = 2       # user-mode ip/sp from the pt_regs ending the stack (last frame)


class Frame(NamedTuple):
    """One frame: its ip and the stack pointer in it (a tuple: walks make many)."""

    ip: int
    sp: int
    kind: FrameKind = FrameKind.NORMAL
    guessed: bool = False  # best-effort walk only: a text address found by scanning ('?')


@dataclass(frozen=True, slots=True)
class StartState:
    """Registers to start from: a stopped CPU's, or a sleeping task's saved frame."""

    ip: int
    sp: int
    bp: int


@dataclass(frozen=True, slots=True)
class StackTrace:
    """The frames found, innermost first; `reason` says why an unreliable walk stopped."""

    frames: tuple[Frame, ...]
    reliable: bool
    reason: str | None = None

    @property
    def ips(self) -> tuple[int, ...]:
        return tuple([f[0] for f in self.frames])


def walk(tables: UnwindTables, read_u64: ReadU64, start: StartState,
         stack_bounds: tuple[int, int], rule: str = "orc", *,
         max_frames: int = DEFAULT_MAX_FRAMES) -> StackTrace:
    """Walk a task's kernel stack reliably.

    `read_u64(addr)` reads guest memory and may raise for unmapped addresses;
    `stack_bounds` = (low, high) of the task's kernel stack, and every address
    read must lie inside it. `rule` is "orc" or "frame-pointer". The trace is
    reliable only if the walk reached a known, trustworthy end of the stack.
    """
    if rule not in RULES:
        raise EmuError(f"unknown unwind rule {rule!r}; expected one of {RULES}")
    frames: list[Frame] = []
    reason = _walk(tables, read_u64, start, stack_bounds, rule == "frame-pointer",
                   max_frames, frames)
    return StackTrace(tuple(frames), reason is None, reason)


def walk_best_effort(tables: UnwindTables, read_u64: ReadU64, start: StartState,
                     stack_bounds: tuple[int, int], *,
                     max_frames: int = DEFAULT_MAX_FRAMES) -> StackTrace:
    """Walk as far as the tables allow, then add every text address left on the stack.

    For printing (oops backtraces) only. Frames found by the scan have
    `guessed=True` (printed with '?'); the trace keeps the reason the real walk
    stopped.
    """
    frames: list[Frame] = []
    reason = _walk(tables, read_u64, start, stack_bounds, False, max_frames, frames)
    if reason is not None:
        low, high = stack_bounds
        addr = max(frames[-1].sp if frames else start.sp, low)
        addr = (addr + 7) & ~7
        while addr + 8 <= high and len(frames) < max_frames:
            try:
                value = read_u64(addr)
            except Exception:  # unmapped: nothing more to scan
                break
            if tables.find_function(value - 1) is not None:
                frames.append(Frame(value, addr + 8, FrameKind.NORMAL, True))
            addr += 8
    return StackTrace(tuple(frames), reason is None, reason)


def _walk(tables: UnwindTables, read_u64: ReadU64, start: StartState,
          stack_bounds: tuple[int, int], fp_rule: bool, max_frames: int,
          frames: list[Frame]) -> str | None:
    """Append the frames to `frames`; return None on a reliable end, else the reason."""
    low, high = stack_bounds
    ip, sp, bp = start.ip, start.sp, start.bp
    if not low <= sp <= high:
        return f"stack pointer 0x{sp:x} left the task stack"
    lookup = tables.lookup
    memo = tables.memo       # lookup()'s own memo, read inline: walks make many lookups...
    append = frames.append
    new = tuple.__new__      # ... and many frames: Frame(...) without NamedTuple's Python-level __new__
    NORMAL = FrameKind.NORMAL
    CALL, REGS, IRET, END = (HintType.CALL, HintType.REGS, HintType.IRET_REGS,
                             HintType.END_OF_STACK)
    RSP = SpReg.RSP
    kind = FrameKind.NORMAL
    after_call = False  # ip is a return address: look up the call before it
    at = 0  # address of the read in progress, for the failure reason
    try:
        while True:
            if len(frames) >= max_frames:
                return "too many frames"
            append(new(Frame, (ip, sp, kind, False)))
            key = ip - 1 if after_call else ip
            e = memo.get(key, lookup)
            if e is lookup:
                e = lookup(key)
            if e is None:
                return _no_entry_reason(tables, ip, after_call)
            t = e.type
            if t is CALL:
                cfa = (sp if e.base is RSP else bp) + e.offset
                if cfa - 8 < low or cfa > high:
                    return f"stack pointer 0x{cfa:x} left the task stack"
                if cfa <= sp:
                    return f"stack going in the wrong direction at {tables.describe(ip)}"
                at = cfa - 8
                ret = read_u64(at)
                if e.bp_offset is not None:
                    at = cfa + e.bp_offset
                    if at < low:
                        return f"saved frame pointer at 0x{at:x} is outside the task stack"
                    bp = read_u64(at)
                if ret == 0:
                    return f"return address 0 in the frame of {tables.describe(ip)}"
                ip, sp, kind, after_call = ret, cfa, NORMAL, True
            elif t is REGS or t is IRET:
                base = (sp if e.base is RSP else bp) + e.offset
                full = t is REGS
                size = PT_REGS_SIZE if full else IRET_FRAME_SIZE
                if base < low or base + size > high:
                    return f"registers at 0x{base:x} are outside the task stack"
                at = base + (_REGS_CS if full else _IRET_CS)
                cs = read_u64(at)
                at = base + (_REGS_IP if full else _IRET_IP)
                new_ip = read_u64(at)
                at = base + (_REGS_SP if full else _IRET_SP)
                new_sp = read_u64(at)
                if cs & 3 == 3:
                    if len(frames) >= max_frames:
                        return "too many frames"
                    append(Frame(new_ip, new_sp, FrameKind.USER))
                    if base + size == high:
                        return None
                    return (f"user-mode registers at 0x{base:x} are not at the top of "
                            f"the task stack (0x{high:x})")
                if fp_rule:
                    return "kernel-mode pt_regs on the stack (frame-pointer rule)"
                if full:
                    at = base + _REGS_BP
                    bp = read_u64(at)
                if not low <= new_sp <= high:
                    return f"stack pointer 0x{new_sp:x} left the task stack"
                if new_sp <= sp:
                    return f"stack going in the wrong direction at {tables.describe(ip)}"
                ip, sp, kind, after_call = new_ip, new_sp, FrameKind.INTERRUPT, False
            elif t is END:
                return None
            else:
                return f"undefined stack state at {tables.describe(ip)}"
    except Exception as exc:  # from read_u64 (unmapped memory): the only call that may raise
        log.debug("stack read at 0x%x failed: %r", at, exc)
        return f"cannot read stack at 0x{at:x}"


def _no_entry_reason(tables: UnwindTables, ip: int, after_call: bool) -> str:
    """Why `ip` (a return address if `after_call`) has no unwind entry."""
    addr = ip - 1 if after_call else ip
    if tables.find_function(addr) is None:
        if after_call:
            return f"return address 0x{ip:x} outside kernel text"
        return f"unknown text at 0x{ip:x}"
    return f"no unwind entry for 0x{ip:x} ({tables.describe(addr)})"
