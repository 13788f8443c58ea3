"""The unwind table entry: how to find the caller's frame from one instruction."""

from __future__ import annotations

from dataclasses import dataclass

from emu.unwind.hints import HintType, SpReg


@dataclass(frozen=True, slots=True)
class Entry:
    """Stack layout at an instruction.

    `anchor = (rsp or rbp, per `base`) + offset`. For type CALL the anchor is the
    CFA: the return address is at CFA-8, and the caller's rbp is at
    CFA + `bp_offset`, or still in rbp when `bp_offset` is None. For REGS the
    anchor is the start of a struct pt_regs, for IRET_REGS the start of an iret
    frame. END_OF_STACK and UNDEFINED entries have base UNDEFINED and offset 0.
    Entries are interned: equal entries are usually the same object.
    """

    type: HintType
    base: SpReg
    offset: int
    bp_offset: int | None = None


UNDEFINED_ENTRY = Entry(HintType.UNDEFINED, SpReg.UNDEFINED, 0)
END_ENTRY = Entry(HintType.END_OF_STACK, SpReg.UNDEFINED, 0)
