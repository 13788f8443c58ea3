"""x86-64 RELA relocation types a kernel module may carry, one small class per type.

The loader looks a type number up in RELOCATIONS; a number that is not there
is refused ("Unknown rela relocation"). Each class computes the bytes to store
at the place P from the symbol value S and the addend A, or raises
RelocOverflow when the value does not fit the field (the module was then not
compiled with -mcmodel=kernel, or lies too far from what it references).

Only what the kernel's x86-64 module loader accepts is implemented. The other
psABI types are listed, commented out, so that the table documents what is
knowingly unsupported: they need a GOT/PLT, TLS or small fields that a
-mcmodel=kernel -fno-pic module never produces.
"""
from __future__ import annotations

import struct

from emu.errors import EmuError

MASK64 = (1 << 64) - 1


class RelocOverflow(EmuError):
    """The computed value does not fit the relocated field. .value is the u64 value."""

    def __init__(self, rtype: int, value: int) -> None:
        super().__init__(f"overflow in relocation type {rtype} val {value & MASK64:x}")
        self.rtype = rtype
        self.value = value & MASK64


def _fits_s32(value: int) -> bool:
    value &= MASK64
    signed = value - (1 << 64) if value >> 63 else value
    return -(1 << 31) <= signed < (1 << 31)


class Reloc:
    """One relocation type: number, name, width of the field in bytes."""
    number = -1
    name = "R_X86_64_?"
    width = 0
    pc_relative = False       # the value is S + A - P (else S + A)

    @classmethod
    def value(cls, S: int, A: int, P: int) -> int:
        """The u64 value the field should hold (before the fit check)."""
        return (S + A - (P if cls.pc_relative else 0)) & MASK64

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        raise NotImplementedError


class R_X86_64_NONE(Reloc):
    number, name, width = 0, "R_X86_64_NONE", 0

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        return b""


class R_X86_64_64(Reloc):
    """S + A, 64 bits."""
    number, name, width = 1, "R_X86_64_64", 8

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        return struct.pack("<Q", cls.value(S, A, P))


class _Signed32(Reloc):
    """A sign-extended 32-bit field."""
    width = 4

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        value = cls.value(S, A, P)
        if not _fits_s32(value):
            raise RelocOverflow(cls.number, value)
        return struct.pack("<I", value & 0xFFFFFFFF)


class R_X86_64_PC32(_Signed32):
    """S + A - P, signed 32 bits (RIP-relative data)."""
    number, name = 2, "R_X86_64_PC32"
    pc_relative = True


class R_X86_64_PLT32(R_X86_64_PC32):
    """S + A - P like PC32: no PLT, the module lies within +-2 GiB of the kernel."""
    number, name = 4, "R_X86_64_PLT32"


class R_X86_64_32(Reloc):
    """S + A, zero-extended 32 bits: cannot reach the top 2 GiB (-mcmodel=small code)."""
    number, name, width = 10, "R_X86_64_32", 4

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        value = cls.value(S, A, P)
        if value > 0xFFFFFFFF:
            raise RelocOverflow(cls.number, value)
        return struct.pack("<I", value)


class R_X86_64_32S(_Signed32):
    """S + A, sign-extended 32 bits (-mcmodel=kernel absolute addresses)."""
    number, name = 11, "R_X86_64_32S"


class R_X86_64_PC64(Reloc):
    """S + A - P, 64 bits (the kernel's x86-64 loader accepts it too)."""
    number, name, width = 24, "R_X86_64_PC64", 8
    pc_relative = True

    @classmethod
    def compute(cls, S: int, A: int, P: int) -> bytes:
        return struct.pack("<Q", cls.value(S, A, P))


RELOCATIONS: dict[int, type[Reloc]] = {cls.number: cls for cls in (
    R_X86_64_NONE,
    R_X86_64_64,
    R_X86_64_PC32,
    # R_X86_64_GOT32 (3)          needs a GOT
    R_X86_64_PLT32,
    # R_X86_64_COPY (5), R_X86_64_GLOB_DAT (6), R_X86_64_JUMP_SLOT (7),
    # R_X86_64_RELATIVE (8)       dynamic-linking types, never in an ET_REL
    # R_X86_64_GOTPCREL (9)       needs a GOT (-fpic code)
    R_X86_64_32,
    R_X86_64_32S,
    # R_X86_64_16 (12), R_X86_64_PC16 (13), R_X86_64_8 (14), R_X86_64_PC8 (15)
    #                             not accepted by the kernel's x86-64 loader
    # R_X86_64_DTPMOD64 (16) .. R_X86_64_TPOFF32 (23)   TLS: the kernel has none
    R_X86_64_PC64,
    # R_X86_64_GOTOFF64 (25), R_X86_64_GOTPC32 (26), R_X86_64_GOTPCRELX (41),
    # R_X86_64_REX_GOTPCRELX (42) GOT-relative (-fpic code)
    # R_X86_64_SIZE32 (32), R_X86_64_SIZE64 (33)       symbol sizes, unused
)}
