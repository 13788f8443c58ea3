"""What the guest's %p prints: SipHash-2-4 written from its specification,
and the hashed form of a pointer under a booted machine's key."""
from __future__ import annotations

from emu import Machine


def siphash24(key: bytes, msg: bytes) -> int:
    """SipHash-2-4 from its specification (Aumasson and Bernstein, 2012)."""
    mask = 2**64 - 1

    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & mask

    def rounds(v, n):
        for _ in range(n):
            v[0] = (v[0] + v[1]) & mask; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & mask; v[3] = rotl(v[3], 16); v[3] ^= v[2]
            v[0] = (v[0] + v[3]) & mask; v[3] = rotl(v[3], 21); v[3] ^= v[0]
            v[2] = (v[2] + v[1]) & mask; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32)

    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    tail = len(msg) % 8
    blocks = [int.from_bytes(msg[i:i + 8], "little") for i in range(0, len(msg) - tail, 8)]
    blocks.append(int.from_bytes(msg[len(msg) - tail:], "little") | ((len(msg) & 0xFF) << 56))
    for m in blocks:
        v[3] ^= m
        rounds(v, 2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def hashed_pointer(m: Machine, address: int) -> str:
    """%p of `address` on `m` (lib/vsprintf.c ptr_to_id): the low 32 bits of
    siphash_1u64(address, ptr_key), in 16 zero-padded hex digits."""
    key = m.mem.read(m.symbol_address("ptr_key"), 16)
    return f"{siphash24(key, address.to_bytes(8, 'little')) & 0xFFFFFFFF:016x}"
