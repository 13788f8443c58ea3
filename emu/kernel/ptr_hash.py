"""What the guest's plain %p prints, for the lines the emulator writes in
the kernel's name (lib/vsprintf.c's rules, under the booted kernel's key):
the value itself for NULL and error pointers or with no_hash_pointers, the
weak hash with debug_boot_weak_hash, "(____ptrval____)" before the key is
filled, else the low 32 bits of SipHash-2-4 of the pointer."""
from __future__ import annotations

from emu.kernel.program import Program

MASK64 = (1 << 64) - 1
GOLDEN_RATIO_64 = 0x61C8864680B583EB
MAX_ERRNO = 4095


def siphash24(key: bytes, msg: bytes) -> int:
    """SipHash-2-4 from its specification (Aumasson and Bernstein, 2012)."""
    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & MASK64

    def rounds(v: list[int], n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & MASK64; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32)  # noqa: E702
            v[2] = (v[2] + v[3]) & MASK64; v[3] = rotl(v[3], 16); v[3] ^= v[2]                          # noqa: E702
            v[0] = (v[0] + v[3]) & MASK64; v[3] = rotl(v[3], 21); v[3] ^= v[0]                          # noqa: E702
            v[2] = (v[2] + v[1]) & MASK64; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32)  # noqa: E702

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


def hashed_pointer(prog: Program, address: int) -> str:
    """%p of `address` as the guest would print it now."""
    flag = lambda name: prog.mem.read(prog.symbol_address(name), 1) != b"\0"  # noqa: E731
    if address == 0 or address >= (1 << 64) - MAX_ERRNO or flag("no_hash_pointers"):
        value = address
    elif flag("debug_boot_weak_hash"):
        value = ((address * GOLDEN_RATIO_64) & MASK64) >> 32
    elif not flag("filled_random_ptr_key"):
        return "(____ptrval____)"
    else:
        key = prog.mem.read(prog.symbol_address("ptr_key"), 16)
        value = siphash24(key, address.to_bytes(8, "little")) & 0xFFFFFFFF
    return f"{value:016x}"
