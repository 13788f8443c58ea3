"""How far a precise tail may run into a block: the length of each x86-64
instruction that goes straight on, and a stop before any other.

A quantum that ends inside a block (emu/arch/engine.py run_into_block) runs
its last few instructions up to an exit address, which must lie on the
straight line from rip: so it stops before anything that could leave the
block or change how it runs. This decoder knows the general-purpose
instructions that cannot (moves, arithmetic, push/pop, lea, setcc, cmovcc,
bit tests, nops) and takes everything else for a stop: branches, calls,
returns, interrupts, string and lock/rep-prefixed instructions, xchg and the
atomics, flags and segment loads, port I/O, MSRs, control registers, the
system group, VEX/x87/SSE. Being wrong in that direction only makes a tail
shorter; it never lets one run off the line. Being a table, it needs no
disassembler: Capstone stays out of the start-up (the faults and the
unwinder load it when they need it).
"""
from __future__ import annotations

_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67})   # segment, operand/address size
_STOP_PREFIXES = frozenset({0xF0, 0xF2, 0xF3})                            # lock, repne, rep

NO_IMM, IB, IZ = 0, 1, -1        # immediates: none, 1 byte, 2 with 0x66 (and no REX.W) else 4
_LEA, _MOVSXD = 0x8D, 0x63       # lea of a register is #UD; movsxd only as gcc emits it, with REX.W

_ALL = range(8)

# One-byte opcodes without a ModRM that go straight on: opcode -> immediate.
_PLAIN: dict[int, int] = {row + 4: IB for row in range(0x00, 0x40, 8)}   # add or adc sbb and sub xor cmp
_PLAIN.update({row + 5: IZ for row in range(0x00, 0x40, 8)})
_PLAIN.update({op: NO_IMM for op in range(0x50, 0x60)})                # push/pop r
_PLAIN.update({op: IB for op in range(0xB0, 0xB8)})                    # mov r8, imm8
_PLAIN.update({0x68: IZ, 0x6A: IB,                    # push imm
               0x98: NO_IMM, 0x99: NO_IMM,            # cdqe, cqo
               0xA8: IB, 0xA9: IZ,                    # test a, imm
               0xC9: NO_IMM})                         # leave
# One-byte opcodes with a ModRM that go straight on: opcode -> {ModRM.reg: immediate}.
_MODRM: dict[int, dict[int, int]] = {row + k: dict.fromkeys(_ALL, NO_IMM)
                                     for row in range(0x00, 0x40, 8) for k in range(4)}
_MODRM.update({op: dict.fromkeys(_ALL, NO_IMM) for op in (
    _MOVSXD, _LEA, 0x84, 0x85,                        # test
    0x88, 0x89, 0x8A, 0x8B,                           # mov
    0xD0, 0xD1, 0xD2, 0xD3)})                         # shifts by 1 or cl
_MODRM.update({
    0x69: dict.fromkeys(_ALL, IZ), 0x6B: dict.fromkeys(_ALL, IB),       # imul r, r/m, imm
    0x80: dict.fromkeys(_ALL, IB), 0x81: dict.fromkeys(_ALL, IZ), 0x83: dict.fromkeys(_ALL, IB),   # group 1
    0xC0: dict.fromkeys(_ALL, IB), 0xC1: dict.fromkeys(_ALL, IB),       # shifts by imm8
    0x8C: dict.fromkeys(range(6), NO_IMM),            # mov r/m, sreg
    0x8F: {0: NO_IMM},                                # pop r/m
    0xC6: {0: IB}, 0xC7: {0: IZ},                     # mov r/m, imm (not xabort/xbegin)
    0xF6: {0: IB, 1: IB, **dict.fromkeys(range(2, 8), NO_IMM)},   # test r/m, imm; not neg mul imul div idiv
    0xF7: {0: IZ, 1: IZ, **dict.fromkeys(range(2, 8), NO_IMM)},
    0xFE: {0: NO_IMM, 1: NO_IMM},                     # inc, dec
    0xFF: {0: NO_IMM, 1: NO_IMM, 6: NO_IMM},          # inc, dec, push r/m (not the calls and jumps)
})
# Two-byte opcodes (after 0x0F), all with a ModRM: opcode -> {reg: immediate}.
_TWO_BYTE: dict[int, dict[int, int]] = {op: dict.fromkeys(_ALL, NO_IMM) for op in (
    0x1F,                                             # nop r/m
    *range(0x40, 0x50), *range(0x90, 0xA0),           # cmovcc, setcc
    0xA3, 0xA5, 0xAB, 0xAD, 0xAF, 0xB3, 0xBB,         # bt shld bts shrd imul btr btc
    0xB6, 0xB7, 0xBC, 0xBD, 0xBE, 0xBF)}              # movzx bsf bsr movsx
_TWO_BYTE.update({0xA4: dict.fromkeys(_ALL, IB), 0xAC: dict.fromkeys(_ALL, IB),   # shld, shrd imm8
                  0xBA: dict.fromkeys(range(4, 8), IB)})                              # bt bts btr btc imm8
_BSWAP = range(0xC8, 0xD0)


def insn_length(code: bytes, at: int = 0) -> int:
    """The length of the instruction at code[at:] if it goes straight on,
    else 0 (a stop, or not decodable from the bytes given)."""
    i, n = at, len(code)
    opsize = addrsize = False
    while i < n and code[i] in _PREFIXES:
        opsize |= code[i] == 0x66
        addrsize |= code[i] == 0x67
        i += 1
    if i >= n or code[i] in _STOP_PREFIXES:
        return 0
    rex_w = rex_b = False
    if 0x40 <= code[i] <= 0x4F:
        rex_w, rex_b = bool(code[i] & 8), bool(code[i] & 1)
        i += 1
    if i >= n:
        return 0
    op = code[i]
    i += 1
    iz = 2 if opsize and not rex_w else 4
    if op == 0x0F:
        if i >= n:
            return 0
        op, i = code[i], i + 1
        if op in _BSWAP:
            return i - at
        group = _TWO_BYTE.get(op)
    elif op == 0x90:                                   # nop; with REX.B it is xchg r8, rax
        return 0 if rex_b else i - at
    elif 0xB8 <= op <= 0xBF:                           # mov r, imm: imm64 with REX.W (movabs)
        return _end(code, at, i, 8 if rex_w else iz)
    elif 0xA0 <= op <= 0xA3:                           # mov a, moffs: a 64-bit address (32 with 0x67)
        return _end(code, at, i, 4 if addrsize else 8)
    elif op in _PLAIN:
        imm = _PLAIN[op]
        return _end(code, at, i, iz if imm == IZ else imm)
    elif (op == _LEA and (i >= n or code[i] >> 6 == 3)) or (op == _MOVSXD and not rex_w):
        return 0
    else:
        group = _MODRM.get(op)
    if group is None or i >= n or (code[i] >> 3) & 7 not in group:
        return 0
    imm = group[(code[i] >> 3) & 7]
    modrm = _modrm_length(code, i)
    return _end(code, at, i + modrm, iz if imm == IZ else imm) if modrm else 0


def _modrm_length(code: bytes, i: int) -> int:
    """Bytes of the ModRM at code[i], with its SIB and displacement (0 when
    the bytes run out)."""
    if i >= len(code):
        return 0
    modrm = code[i]
    mod, rm = modrm >> 6, modrm & 7
    length = 1
    if mod != 3 and rm == 4:                           # a SIB byte
        if i + 1 >= len(code):
            return 0
        length += 1
        if mod == 0 and code[i + 1] & 7 == 5:          # no base: disp32
            length += 4
    if mod == 0 and rm == 5:                           # rip-relative disp32
        length += 4
    elif mod == 1:
        length += 1
    elif mod == 2:
        length += 4
    return length if i + length <= len(code) else 0


def _end(code: bytes, at: int, i: int, imm: int) -> int:
    return i + imm - at if i + imm <= len(code) else 0


def straight_line_end(code: bytes, rip: int, count: int) -> int:
    """The address after the first `count` instructions of `code` (which
    starts at rip) that go straight on, stopping early before any other and
    before one that reaches the end of rip's page (a block ends there)."""
    page_end = (rip | 0xFFF) + 1
    offset = 0
    for _ in range(count):
        length = insn_length(code, offset)
        if not length or rip + offset + length >= page_end:
            break
        offset += length
    return rip + offset
