"""emu/elf/image.py: every malformed input is an ImageError that names the file and what is wrong.

Each case takes the real user program (fixtures/build/user.elf, gcc-built and
linked) and breaks one field of its headers, as a truncated download, a file
of another architecture or a corrupt section table would.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import pytest

from emu.elf.format import EHDR, SHDR, SHT_SYMTAB, STT_FUNC, SYM
from emu.elf.image import ElfImage
from emu.errors import ImageError

USER = Path(__file__).resolve().parent.parent / "fixtures" / "build" / "user.elf"

# byte offsets of the fields the cases break (Elf64_Ehdr, Elf64_Shdr)
E_TYPE, E_MACHINE, E_PHOFF, E_SHOFF = 16, 18, 32, 40
E_PHENTSIZE, E_PHNUM, E_SHENTSIZE, E_SHNUM, E_SHSTRNDX = 54, 56, 58, 60, 62
SH_NAME, SH_OFFSET, SH_SIZE, SH_LINK, SH_ENTSIZE = 0, 24, 32, 40, 56


def _shdr_at(raw: bytes, index: int) -> int:
    return EHDR.unpack_from(raw)[6] + index * SHDR.size


def _symtab(raw: bytes) -> int:
    """File offset of the section header of user.elf's symbol table."""
    shnum = EHDR.unpack_from(raw)[12]
    return next(_shdr_at(raw, i) for i in range(shnum)
                if SHDR.unpack_from(raw, _shdr_at(raw, i))[1] == SHT_SYMTAB)


def _put(raw: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, raw, offset, value)


def _symtab_field(field: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    return lambda raw: _put(raw, _symtab(raw) + field, fmt, value)


def _strtab_field(field: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    def break_it(raw: bytearray) -> None:
        link = SHDR.unpack_from(raw, _symtab(raw))[6]
        _put(raw, _shdr_at(raw, link) + field, fmt, value)
    return break_it


def _shstrtab_field(field: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    return lambda raw: _put(raw, _shdr_at(raw, EHDR.unpack_from(raw)[13]) + field, fmt, value)


def _first_symbol_name(raw: bytearray) -> None:
    """st_name of the first named, defined function past the end of the string table."""
    _, _, _, _, offset, size, *_ = SHDR.unpack_from(raw, _symtab(raw))
    for at in range(offset + SYM.size, offset + size, SYM.size):
        st_name, info, _, shndx, _, _ = SYM.unpack_from(raw, at)
        if st_name and shndx and info & 0xF == STT_FUNC:
            _put(raw, at, "<I", 0x7FFFFFFF)
            return
    raise AssertionError("user.elf has no named function")


CASES: list[tuple[str, Callable[[bytearray], None], str]] = [
    ("bad magic", lambda raw: raw.__setitem__(slice(0, 4), b"MZ\x90\x00"), "is not an ELF file"),
    ("32-bit class", lambda raw: raw.__setitem__(4, 1), "is not a 64-bit little-endian ELF file (EI_CLASS 01"),
    ("big-endian", lambda raw: raw.__setitem__(5, 2), "is not a 64-bit little-endian ELF file (EI_CLASS 02, EI_DATA 02)"),
    ("a shared object", lambda raw: _put(raw, E_TYPE, "<H", 3), "is not a linked executable (e_type 3, want ET_EXEC)"),
    ("aarch64", lambda raw: _put(raw, E_MACHINE, "<H", 183), "is not an x86-64 image (e_machine 183)"),
    ("program headers out of range", lambda raw: _put(raw, E_PHOFF, "<Q", 1 << 40),
     "program header table: 168 bytes at offset 0x10000000000 are past the end of the file"),
    ("program header entries too small", lambda raw: _put(raw, E_PHENTSIZE, "<H", 32),
     "program header table: entries of 32 bytes, expected 56"),
    ("section headers out of range", lambda raw: _put(raw, E_SHOFF, "<Q", len(raw) - 8),
     "section header table: 384 bytes at offset"),
    ("too many sections", lambda raw: _put(raw, E_SHNUM, "<H", 60000), "section header table: 3840000 bytes"),
    ("section header entries too small", lambda raw: _put(raw, E_SHENTSIZE, "<H", 40),
     "section header table: entries of 40 bytes, expected 64"),
    ("section name table index out of range", lambda raw: _put(raw, E_SHSTRNDX, "<H", 99),
     "section name table (e_shstrndx): section index 99 out of range (6 sections)"),
    ("section name table past the end", _shstrtab_field(SH_OFFSET, "<Q", 1 << 32), "past the end of the file"),
    ("section name outside its table", lambda raw: _put(raw, _shdr_at(raw, 1) + SH_NAME, "<I", 0x10000),
     "name of section 1: name offset 0x10000 is outside its string table"),
    ("symbol table past the end", _symtab_field(SH_SIZE, "<Q", 24 << 20), "past the end of the file"),
    ("symbol table entsize wrong", _symtab_field(SH_ENTSIZE, "<Q", 16), "entries of 16 bytes, expected 24"),
    ("symbol table entsize zero", _symtab_field(SH_ENTSIZE, "<Q", 0), "entries of 0 bytes, expected 24"),
    ("symbol table size not whole entries", _symtab_field(SH_SIZE, "<Q", 24 * 5 + 7),
     "size 127 is not a multiple of 24"),
    ("symbol string table index out of range", _symtab_field(SH_LINK, "<I", 77),
     "string table of the symbol table (section 3's sh_link): section index 77 out of range"),
    ("symbol string table past the end", _strtab_field(SH_OFFSET, "<Q", 1 << 33), "past the end of the file"),
    ("symbol name outside the string table", _first_symbol_name, "name offset 0x7fffffff is outside its string table"),
]


@pytest.mark.parametrize("case, break_it, problem", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_image_is_an_image_error_naming_the_file_and_the_problem(
        tmp_path: Path, case: str, break_it: Callable[[bytearray], None], problem: str) -> None:
    raw = bytearray(USER.read_bytes())
    break_it(raw)
    path = tmp_path / "user.elf"
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError) as info:
        ElfImage(path)
    message = str(info.value)
    assert message.startswith(f"{path} ") and problem in message, message
    assert message.count(str(path)) == 1, message


def test_a_file_shorter_than_the_elf_header(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(USER.read_bytes()[:40])
    with pytest.raises(ImageError, match=r"malformed ELF file: 40 bytes, shorter than the ELF header \(64 bytes\)"):
        ElfImage(path)


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot read image .*missing: No such file or directory"):
        ElfImage(tmp_path / "missing")


def test_the_unbroken_image_parses() -> None:
    """The cases above break a file that is fine as it is."""
    image = ElfImage(USER)
    assert image.find_symbol("user_main") is not None and image.has_section(".klpemu_offsets")
