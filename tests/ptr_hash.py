"""What the guest's %p prints: the hashed form of a pointer under a booted
machine's key (emu.kernel.ptr_hash, which the emulator's own reports use)."""
from __future__ import annotations

from emu import Machine
from emu.kernel.ptr_hash import hashed_pointer as _hashed_pointer, siphash24

__all__ = ["hashed_pointer", "siphash24"]


def hashed_pointer(m: Machine, address: int) -> str:
    """%p of `address` on `m` (lib/vsprintf.c ptr_to_id): the low 32 bits of
    siphash_1u64(address, ptr_key), in 16 zero-padded hex digits."""
    return _hashed_pointer(m.prog, address)
