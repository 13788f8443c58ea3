"""Unwind hints for hand-written asm, read from the `.klpemu_unwind_hints` section.

Each record is 16 bytes, little-endian:
``u64 ip; s16 sp_offset; u8 sp_reg; u8 type; u32 reserved``.
A hint states the stack layout at ``ip``; the CFA tracker continues from it with
its normal rules.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from enum import IntEnum

from emu.errors import ImageError

log = logging.getLogger(__name__)

HINTS_SECTION = ".klpemu_unwind_hints"

_RECORD = struct.Struct("<QhBBI")


class SpReg(IntEnum):
    """Register an unwind state is anchored on (hint encoding of `sp_reg`)."""

    RSP = 0
    RBP = 1
    UNDEFINED = 2


class HintType(IntEnum):
    """What sits at `sp_reg + sp_offset`; also the type of a table entry."""

    CALL = 0          # a call frame: that address is the CFA, return address at CFA-8
    REGS = 1          # a full struct pt_regs starts there
    IRET_REGS = 2     # an iret frame (ip, cs, flags, sp, ss) starts there
    END_OF_STACK = 3  # the walk ends here, reliably
    UNDEFINED = 4     # unwinding from here is unreliable
    SAVE = 5          # remember the state here (inline asm that switches stacks) ...
    RESTORE = 6       # ... and take it back here, where the asm ends


@dataclass(frozen=True, slots=True)
class Hint:
    """One hint record: the state of the stack at instruction `ip`."""

    ip: int
    sp_offset: int
    sp_reg: SpReg
    type: HintType


def parse_hints(data: bytes) -> list[Hint]:
    """Decode the raw contents of the hints section.

    Raises ImageError if the size is not a multiple of 16 or a record has an
    unknown register or type.
    """
    if len(data) % _RECORD.size:
        raise ImageError(
            f"{HINTS_SECTION} is {len(data)} bytes, not a multiple of {_RECORD.size}")
    hints = []
    for ip, sp_offset, sp_reg, typ, _reserved in _RECORD.iter_unpack(data):
        try:
            hints.append(Hint(ip, sp_offset, SpReg(sp_reg), HintType(typ)))
        except ValueError as exc:
            raise ImageError(f"bad unwind hint at ip 0x{ip:x}: {exc}") from None
    log.debug("parsed %d unwind hints", len(hints))
    return hints
