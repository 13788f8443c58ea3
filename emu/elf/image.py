"""ELF images of the guest: the kernel (vmlinux) and the user program.

Reads what the machine needs from a linked ELF once: loadable segments,
symbols, the ftrace call sites (__mcount_loc), exported symbols (__ksymtab),
the struct-offsets table and the unwind hints the asm carries.

The parser is plain `struct` (as the module loader's) and checks every
offset and size it uses: a truncated or malformed file is an ImageError
naming it, never an exception from the parser.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from emu.elf.format import (EHDR, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_EXEC, ET_REL, PHDR, PT_LOAD,
                            SHDR, SHF_ALLOC, SHT_NOBITS, SHT_PROGBITS, SHT_SYMTAB, STB_LOCAL, STT_FUNC,
                            STT_NOTYPE, STT_OBJECT, SYM)
from emu.errors import ImageError


class _Malformed(Exception):
    """An offset, size or name of the file is out of bounds."""


def _slice(raw: bytes, offset: int, size: int, what: str) -> bytes:
    if offset < 0 or size < 0 or offset + size > len(raw):
        raise _Malformed(f"{what}: {size} bytes at offset {offset:#x} are past the end of the file "
                         f"({len(raw):#x} bytes)")
    return raw[offset:offset + size]


def _table(raw: bytes, fmt: struct.Struct, offset: int, count: int, entsize: int, what: str) -> list[tuple]:
    if count and entsize < fmt.size:
        raise _Malformed(f"{what}: entries of {entsize} bytes, expected {fmt.size}")
    _slice(raw, offset, count * entsize, what)
    return [fmt.unpack_from(raw, offset + i * entsize) for i in range(count)]


def _name(strtab: bytes, offset: int, what: str) -> str:
    end = strtab.find(b"\0", offset)
    if offset >= len(strtab) or end < 0:
        raise _Malformed(f"{what}: name offset {offset:#x} is outside its string table "
                         f"({len(strtab):#x} bytes)")
    return strtab[offset:end].decode("utf-8", "replace")


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    is_function: bool
    is_global: bool


@dataclass(frozen=True)
class Segment:
    vaddr: int
    data: bytes
    memsize: int


class ElfImage:
    """A linked ELF executable (ET_EXEC), parsed once.

    `executable_only=False` accepts any x86-64 ELF file (the unwinder reads
    test programs and objects); `.relocatable` tells an ET_REL object.
    """

    def __init__(self, path: str | Path, *, executable_only: bool = True) -> None:
        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image {self.path}: {exc.strerror}") from exc
        self.digest = hashlib.sha256(raw).hexdigest()
        if raw[:4] != ELFMAG:
            raise ImageError(f"{self.path} is not an ELF file")
        if raw[4:6] != bytes((ELFCLASS64, ELFDATA2LSB)):
            raise ImageError(f"{self.path} is not a 64-bit little-endian ELF file "
                             f"(EI_CLASS {raw[4:5].hex() or '-'}, EI_DATA {raw[5:6].hex() or '-'})")
        if len(raw) < EHDR.size:
            raise ImageError(f"{self.path} is a malformed ELF file: {len(raw)} bytes, shorter than "
                             f"the ELF header ({EHDR.size} bytes)")
        (_, e_type, e_machine, _, self.entry, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
         e_shentsize, e_shnum, e_shstrndx) = EHDR.unpack_from(raw)
        self.relocatable = e_type == ET_REL
        if executable_only and e_type != ET_EXEC:
            raise ImageError(f"{self.path} is not a linked executable (e_type {e_type}, want ET_EXEC)")
        if e_machine != EM_X86_64:
            raise ImageError(f"{self.path} is not an x86-64 image (e_machine {e_machine})")
        try:
            self._parse(raw, e_phoff, e_phnum, e_phentsize, e_shoff, e_shnum, e_shentsize, e_shstrndx)
        except _Malformed as exc:
            raise ImageError(f"{self.path} is a malformed ELF file: {exc}") from None
        self._by_name: dict[str, Symbol] = {}
        for sym in self.symbols:
            if sym.is_global or sym.name not in self._by_name:
                self._by_name[sym.name] = sym

    def _parse(self, raw: bytes, phoff: int, phnum: int, phentsize: int,
               shoff: int, shnum: int, shentsize: int, shstrndx: int) -> None:
        self.segments = [
            Segment(vaddr, _slice(raw, offset, filesz, f"segment {i}"), memsz)
            for i, (p_type, _, offset, vaddr, _, filesz, memsz, _)
            in enumerate(_table(raw, PHDR, phoff, phnum, phentsize, "program header table"))
            if p_type == PT_LOAD
        ]
        shdrs = _table(raw, SHDR, shoff, shnum, shentsize, "section header table")

        def contents(index: int, what: str) -> bytes:
            if not 0 <= index < len(shdrs):
                raise _Malformed(f"{what}: section index {index} out of range ({len(shdrs)} sections)")
            _, sh_type, _, _, offset, size, *_ = shdrs[index]
            return b"" if sh_type == SHT_NOBITS else _slice(raw, offset, size, f"section {index}")

        shstrtab = contents(shstrndx, "section name table (e_shstrndx)") if shdrs else b""
        self._sections: dict[str, tuple[int, bytes]] = {}
        self.code_sections: list[tuple[int, bytes]] = []
        """(address, contents) of every allocated, non-empty PROGBITS section."""
        self.symbols: list[Symbol] = []
        for index, (name, sh_type, flags, addr, offset, size, link, _, _, entsize) in enumerate(shdrs):
            data = contents(index, f"section {index}")
            self._sections[_name(shstrtab, name, f"name of section {index}")] = (addr, data)
            if sh_type == SHT_PROGBITS and flags & SHF_ALLOC and size:
                self.code_sections.append((addr, data))
            if sh_type != SHT_SYMTAB:
                continue
            strtab = contents(link, f"string table of the symbol table (section {index}'s sh_link)")
            if entsize != SYM.size:
                raise _Malformed(f"symbol table (section {index}): entries of {entsize} bytes, "
                                 f"expected {SYM.size}")
            if size % SYM.size:
                raise _Malformed(f"symbol table (section {index}): size {size} is not a multiple of "
                                 f"{SYM.size}")
            symtab = _table(raw, SYM, offset, size // SYM.size, SYM.size, f"symbol table (section {index})")
            for i, (st_name, info, _, shndx, value, st_size) in enumerate(symtab):
                kind = info & 0xF
                if st_name and shndx != 0 and kind in (STT_FUNC, STT_OBJECT, STT_NOTYPE):
                    self.symbols.append(Symbol(_name(strtab, st_name, f"name of symbol {i}"), value, st_size,
                                               kind == STT_FUNC, info >> 4 != STB_LOCAL))

    def has_section(self, name: str) -> bool:
        return name in self._sections

    def section(self, name: str) -> tuple[int, bytes]:
        """(address, contents) of a section; ImageError if absent."""
        try:
            return self._sections[name]
        except KeyError:
            raise ImageError(f"{self.path} has no section {name}") from None

    def get_symbol(self, name: str) -> Symbol:
        """The symbol called `name` (a global one if several); ImageError if absent."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ImageError(f"{self.path} has no symbol {name}") from None

    def find_symbol(self, name: str) -> Symbol | None:
        return self._by_name.get(name)

    def read(self, vaddr: int, size: int) -> bytes:
        """Bytes of the file image at a virtual address (text and data)."""
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + len(seg.data):
                off = vaddr - seg.vaddr
                return seg.data[off:off + size]
        raise ImageError(f"{vaddr:#x} is not in a loaded part of {self.path}")

    def mcount_sites(self) -> list[int]:
        """Addresses of every fentry call site, from __mcount_loc."""
        _, data = self.section("__mcount_loc")
        return sorted(struct.unpack(f"<{len(data) // 8}Q", data))

    def ksymtab(self) -> dict[str, int]:
        """Exported symbols: name -> address, from __ksymtab."""
        if not self.has_section("__ksymtab"):
            return {}
        _, data = self.section("__ksymtab")
        out = {}
        for value, name_ptr in struct.iter_unpack("<QQ", data):
            out[self._cstring_at(name_ptr)] = value
        return out

    def offsets(self) -> dict[str, int]:
        """The guest's struct-offsets table (.klpemu_offsets): name -> value."""
        _, data = self.section(".klpemu_offsets")
        out = {}
        for value, name in struct.iter_unpack("<Q56s", data):
            out[name.split(b"\0", 1)[0].decode()] = value
        return out

    def _cstring_at(self, vaddr: int) -> str:
        for addr, data in self._sections.values():
            if addr and addr <= vaddr < addr + len(data):
                off = vaddr - addr
                return data[off:data.index(b"\0", off)].decode()
        raise ImageError(f"string pointer {vaddr:#x} is outside {self.path}")
