"""The precise tail's decoder (emu/arch/straight_line.py) against Capstone:
on every instruction of every fixture image it goes straight on exactly where
the rule "no branch, call, return, interrupt, lock/rep, xchg, atomic, flags,
port, MSR, control register or system instruction" says so, with Capstone's
length; on random bytes every length it gives is Capstone's, for an
instruction that rule lets through."""
from __future__ import annotations

import random

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile

from emu.abi import FIXTURES
from emu.arch.straight_line import insn_length, straight_line_end

LEAVES_BLOCK = ("j", "call", "ret", "loop", "int", "iret", "sys", "hlt", "ud", "lgdt", "lidt", "ltr", "lock", "rep")
SPECIAL = frozenset({"sti", "cli", "popfq", "pushfq", "in", "out", "wrmsr", "rdmsr", "swapgs", "cpuid", "pause",
                     "invlpg", "wbinvd", "clac", "stac", "rdtsc", "rdtscp", "lfence", "mfence", "sfence", "xchg",
                     "cmpxchg", "xadd", "ljmp", "lcall", "retf", "popf", "pushf", "enter", "xlatb", "cmc",
                     "clc", "stc", "cld", "std", "sahf", "lahf", "wait", "fwait", "int1", "into", "endbr64"})
IMAGES = [FIXTURES / "build" / "vmlinux-modern", FIXTURES / "build" / "vmlinux-legacy",
          FIXTURES / "build" / "user.elf", *sorted((FIXTURES / "build" / "modules").glob("*.ko"))]
CS = Cs(CS_ARCH_X86, CS_MODE_64)


def goes_straight_on(mnemonic: str, op_str: str) -> bool:
    return not (mnemonic.startswith(LEAVES_BLOCK) or mnemonic in SPECIAL or op_str.startswith(("cr", "dr")))


def code_sections(path):
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 4:     # SHF_EXECINSTR
                yield sec.name, sec.data()


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_every_instruction_of_the_images_as_capstone_says(image) -> None:
    checked = 0
    for name, code in code_sections(image):
        for address, size, mnemonic, op_str in CS.disasm_lite(code, 0):
            want = size if goes_straight_on(mnemonic, op_str) else 0
            assert insn_length(code, address) == want, f"{image.name} {name}+{address:#x}: {mnemonic} {op_str}"
            checked += 1
    assert checked > 0


def test_random_bytes_never_give_a_length_capstone_disagrees_with() -> None:
    rng = random.Random(0)
    prefixes = [0x66, 0x67, 0x2E, 0x64, 0x65, 0x48, 0x49, 0x4C, 0x41, 0x0F, 0xF3, 0xF0]
    straight = 0
    for _ in range(30000):
        code = bytes(rng.choice(prefixes) for _ in range(rng.randrange(3))) + rng.randbytes(15)
        length = insn_length(code)
        if not length:
            continue
        straight += 1
        decoded = next(CS.disasm_lite(code, 0, 1), None)
        assert decoded is not None, code.hex()
        _, size, mnemonic, op_str = decoded
        assert (length, goes_straight_on(mnemonic, op_str)) == (size, True), f"{code.hex()}: {mnemonic} {op_str}"
    assert straight > 5000


def test_a_tail_stops_before_a_branch_the_page_end_and_short_bytes() -> None:
    code = bytes.fromhex("4889e5" "31c0" "e800000000" "90")     # mov rbp, rsp; xor eax, eax; call; nop
    assert straight_line_end(code, 0x1000, 7) == 0x1005         # before the call
    assert straight_line_end(code, 0x1000, 1) == 0x1003
    assert straight_line_end(code, 0x1FFB, 7) == 0x1FFE         # xor would reach the page's end
    assert straight_line_end(bytes.fromhex("48c7c0"), 0x1000, 3) == 0x1000   # mov rax, imm32 cut short
