"""CFA states of one function, found by walking its code the way objtool does.

The walk follows every path from the function entry (and from every hint inside
the function) over its branches, tracking where the CFA is and where the caller's
rbp was saved. Instructions no path reaches (alignment padding) get no state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from emu.arch.disasm import disassembler
from emu.unwind.entry import END_ENTRY, UNDEFINED_ENTRY, Entry
from emu.unwind.hints import Hint, HintType, SpReg

log = logging.getLogger(__name__)

# A row (address, entry) says: from this address up to the next row's address,
# the stack layout is `entry` (None: unknown, no path reached it).
Row = tuple[int, Entry | None]


_CALL, _IRET = HintType.CALL, HintType.IRET_REGS
_RSP, _RBP = SpReg.RSP, SpReg.RBP

# Tracking state: (type, base, offset, rsp_off, bp_slot).
#   anchor = base + offset; anchor = rsp + rsp_off (rsp_off None: unknown, only
#   allowed with base rbp); the caller's rbp is saved at anchor + bp_slot (None:
#   not saved). Types END_OF_STACK and UNDEFINED are terminal: nothing changes them
#   but a hint.
_State = tuple[HintType, SpReg, int, int | None, int | None]

_UNDEF: _State = (HintType.UNDEFINED, SpReg.UNDEFINED, 0, None, None)
_END: _State = (HintType.END_OF_STACK, SpReg.UNDEFINED, 0, None, None)
_ENTRY_STATE: _State = (_CALL, _RSP, 8, 8, None)

_PATH_ENDS = frozenset({
    "ret", "retf", "retfq", "iret", "iretd", "iretq", "sysret", "sysretq",
    "sysexit", "ud0", "ud1", "ud2",
})
_RSP_NAMES = frozenset({"rsp", "esp", "sp", "spl"})
_RBP_NAMES = frozenset({"rbp", "ebp", "bp", "bpl"})
_READ_ONLY_DST = frozenset({"cmp", "test", "bt"})


def track_function(code: bytes, start: int, hints: Iterable[Hint] = ()) -> list[Row]:
    """Compute the unwind rows of the function `code` loaded at `start`.

    `hints` are those whose ip lies in the function. Returns rows sorted by
    address, the first at `start`; consecutive instructions with the same state
    share a row. The function's end is not included (the caller closes it).
    """
    insns, states = track_states(code, start, hints)
    return _rows(sorted(insns), states)


def rsp_offset(state: _State) -> int | None:
    """CFA - rsp in a tracking state (None: unknown)."""
    return state[3] if state[0] is _CALL else None


def track_states(code: bytes, start: int, hints: Iterable[Hint] = ()
                 ) -> tuple[dict[int, tuple[int, str, str]], dict[int, _State]]:
    """The instructions {address: (size, mnemonic, operands)} of a function and
    the tracking state at each one a path reaches (see track_function)."""
    end = start + len(code)
    insns = {addr: (size, mnem, ops) for addr, size, mnem, ops in disassembler().disasm_lite(code, start)}
    hints = tuple(hints)
    by_ip = {h.ip: _hint_state(h) for h in hints if h.type < HintType.SAVE}
    saves = {h.ip for h in hints if h.type is HintType.SAVE}
    restores = {h.ip for h in hints if h.type is HintType.RESTORE}
    saved: _State | None = None
    for ip in (*by_ip, *saves, *restores):
        if ip not in insns:
            log.warning("unwind hint at 0x%x is not at an instruction start", ip)
    states: dict[int, _State] = {}
    # Hint roots first so that the entry path (popped first) wins any merge.
    work: list[tuple[int, _State]] = [(ip, s) for ip, s in by_ip.items() if ip in insns]
    work.append((start, _ENTRY_STATE))
    while work:
        addr, state = work.pop()
        while True:
            insn = insns.get(addr)
            if insn is None:  # fell off the end (after a noreturn call) or left the function
                break
            state = by_ip.get(addr, state)
            if addr in saves:
                saved = state
            elif addr in restores:
                if saved is None:
                    log.warning("unwind hint RESTORE at 0x%x before any SAVE", addr)
                else:
                    state = saved
            seen = states.get(addr)
            if seen is not None and (seen == state or seen[0] is not HintType.UNDEFINED):
                if seen != state:
                    log.debug("state mismatch at 0x%x: %s vs %s", addr, seen, state)
                break
            states[addr] = state
            size, mnem, ops = insn
            nxt = addr + size
            if mnem[0] == "j" or mnem.startswith("loop"):
                target = int(ops, 16) if ops.startswith("0x") else None
                inside = target is not None and start <= target < end
                if mnem == "jmp":
                    if not inside:  # tail call, or indirect jump: the path ends
                        break
                    addr = target
                    continue
                if inside:
                    work.append((target, state))
                addr = nxt
                continue
            if mnem in _PATH_ENDS:
                break
            if mnem != "call" and state[0] <= _IRET:
                state = _step(state, mnem, ops)
            addr = nxt
    return insns, states


def _hint_state(h: Hint) -> _State:
    """The tracking state a hint sets."""
    if h.type is HintType.END_OF_STACK:
        return _END
    if h.type is HintType.UNDEFINED or h.sp_reg is SpReg.UNDEFINED:
        return _UNDEF
    rsp_off = h.sp_offset if h.sp_reg is _RSP else None
    return (h.type, h.sp_reg, h.sp_offset, rsp_off, None)


def _step(state: _State, mnem: str, ops: str) -> _State:
    """Apply one non-branch instruction to a CALL/REGS/IRET_REGS state."""
    typ, base, off, rsp_off, bp_slot = state
    dst, _, src = ops.partition(", ")
    if mnem.startswith("push"):
        if rsp_off is not None:
            rsp_off += 8
            if base is _RSP:
                off = rsp_off
            if dst == "rbp" and typ is _CALL and bp_slot is None:
                bp_slot = -rsp_off
        return (typ, base, off, rsp_off, bp_slot)
    if mnem.startswith("pop"):
        if dst in _RSP_NAMES:
            return _UNDEF
        if rsp_off is not None:
            rsp_off -= 8
            if base is _RSP:
                off = rsp_off
        if dst == "rbp" and base is _RBP:
            if rsp_off is None or typ is not _CALL:
                return _UNDEF
            base, off = _RSP, rsp_off
        if dst == "rbp" and typ is _CALL:
            bp_slot = None
        return (typ, base, off, rsp_off, bp_slot)
    if mnem == "mov" and src == "rsp" and dst == "rbp":
        if typ is _CALL or base is _RBP:
            if rsp_off is None:
                return _UNDEF
            return (typ, _RBP, rsp_off, rsp_off, bp_slot)
        return state
    if mnem == "mov" and dst == "rsp" and src == "rbp":
        return (typ, base, off, off, bp_slot) if base is _RBP else _UNDEF
    if mnem == "enter":
        return _UNDEF
    if mnem == "leave":
        if base is not _RBP:
            return _UNDEF
        rsp_off = off - 8
        return (typ, _RSP, rsp_off, rsp_off, None)
    if dst in _RSP_NAMES or (mnem == "xchg" and src in _RSP_NAMES):
        if mnem in _READ_ONLY_DST:
            return state
        rsp_off = _new_rsp_off(mnem, src, base, off, rsp_off)
        if rsp_off is None and base is _RSP:
            return _UNDEF
        return (typ, base, rsp_off if base is _RSP else off, rsp_off, bp_slot)
    if base is _RBP and (dst in _RBP_NAMES or (mnem == "xchg" and src in _RBP_NAMES)):
        if mnem in _READ_ONLY_DST:
            return state
        return _UNDEF
    return state


def _new_rsp_off(mnem: str, src: str, base: SpReg, off: int, rsp_off: int | None) -> int | None:
    """The anchor's offset from rsp after `mnem rsp, src`, or None if unknown."""
    if mnem in ("sub", "add"):
        try:
            imm = int(src, 0)
        except ValueError:  # a register operand (alloca)
            return None
        if rsp_off is None:
            return None
        return rsp_off + imm if mnem == "sub" else rsp_off - imm
    if mnem == "lea" and src.startswith("[") and src.endswith("]"):
        reg, _, disp_text = src[1:-1].partition(" ")
        if disp_text:
            sign, _, num = disp_text.partition(" ")
            try:
                disp = int(num, 0)
            except ValueError:  # an index register
                return None
            if sign == "-":
                disp = -disp
            elif sign != "+":
                return None
        else:
            disp = 0
        if reg == "rsp":
            return None if rsp_off is None else rsp_off - disp
        if reg == "rbp" and base is _RBP:
            return off - disp
    return None


_interned: dict[tuple, Entry] = {
    (HintType.END_OF_STACK, SpReg.UNDEFINED, 0, None): END_ENTRY,
    (HintType.UNDEFINED, SpReg.UNDEFINED, 0, None): UNDEFINED_ENTRY,
}


def _entry(state: _State) -> Entry:
    """The (interned) table entry of a tracking state."""
    typ, base, off, _rsp_off, bp_slot = state
    key = (typ, base, off, bp_slot)
    e = _interned.get(key)
    if e is None:
        e = _interned[key] = Entry(typ, base, off, bp_slot)
    return e


def _rows(addrs: list[int], states: dict[int, _State]) -> list[Row]:
    """Compress per-instruction states into rows."""
    rows: list[Row] = []
    prev_state: object = object()
    prev: Entry | None | object = object()
    for addr in addrs:
        state = states.get(addr)
        if state is prev_state:
            continue
        prev_state = state
        e = None if state is None else _entry(state)
        if e is not prev:
            rows.append((addr, e))
            prev = e
    return rows
