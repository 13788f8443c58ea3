"""ELF images of the guest: the kernel (vmlinux) and the user program.

Reads what the machine needs from a linked ELF once: loadable segments,
symbols, the ftrace call sites (__mcount_loc), exported symbols (__ksymtab),
the struct-offsets table and the unwind hints the asm carries.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import lief

from emu.errors import ImageError


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
    """A linked ELF executable (ET_EXEC), parsed once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image {self.path}: {exc.strerror}") from exc
        self.digest = hashlib.sha256(raw).hexdigest()
        elf = lief.ELF.parse(list(raw)) if raw[:4] == b"\x7fELF" else None
        if elf is None:
            raise ImageError(f"{self.path} is not an ELF file")
        if elf.header.file_type != lief.ELF.Header.FILE_TYPE.EXEC:
            raise ImageError(f"{self.path} is not a linked executable (ET_EXEC)")
        if elf.header.machine_type != lief.ELF.ARCH.X86_64:
            raise ImageError(f"{self.path} is not an x86-64 image")
        self.entry = elf.entrypoint
        self.segments = [
            Segment(seg.virtual_address, bytes(seg.content), seg.virtual_size)
            for seg in elf.segments if seg.type == lief.ELF.Segment.TYPE.LOAD
        ]
        self.symbols = [
            Symbol(s.name, s.value, s.size, s.type == lief.ELF.Symbol.TYPE.FUNC,
                   s.binding != lief.ELF.Symbol.BINDING.LOCAL)
            for s in elf.symbols
            if s.name and s.type in (lief.ELF.Symbol.TYPE.FUNC, lief.ELF.Symbol.TYPE.OBJECT,
                                     lief.ELF.Symbol.TYPE.NOTYPE) and s.shndx != 0
        ]
        self._sections = {sec.name: (sec.virtual_address, bytes(sec.content)) for sec in elf.sections}
        self._by_name: dict[str, Symbol] = {}
        for sym in self.symbols:
            if sym.is_global or sym.name not in self._by_name:
                self._by_name[sym.name] = sym

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
