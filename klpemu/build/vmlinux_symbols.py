"""What a livepatch build needs to know of the kernel image that boots.

The symbols of fixtures/build/vmlinux-NAME grouped by the file that
defined them (the linker keeps each object's locals after its STT_FILE
symbol), the names it exports (__ksymtab), its fentry sites
(__mcount_loc) and the bytes of its code. `sympos` is the guest's
kallsyms' (Kallsyms.sympos), which is what klp_func.old_sympos and
`.klp.sym.vmlinux.NAME,POS` are resolved against.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.elf.image import Symbol
from emu.kernel.kallsyms import Kallsyms

__all__ = ["ImageSymbol", "VmlinuxSymbols", "ImageReadError"]


class ImageReadError(Exception):
    """The kernel image could not be read."""


@dataclass(frozen=True)
class ImageSymbol:
    name: str
    address: int
    size: int
    is_function: bool
    is_local: bool
    file: str | None          # the STT_FILE name a local follows (a source's basename)


class VmlinuxSymbols:
    """The symbols, exports, fentry sites and code of a linked kernel image."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as f:
                self._read(ELFFile(f))
        except (OSError, ELFError) as exc:
            raise ImageReadError(f"cannot read the kernel image {self.path}: {exc}") from None

    def _read(self, elf: ELFFile) -> None:
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            raise ImageReadError(f"{self.path} has no symbol table")
        self.symbols: list[ImageSymbol] = []
        current = None
        for sym in symtab.iter_symbols():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            if kind == "STT_FILE":
                current = sym.name
                continue
            if kind not in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") or not sym.name \
                    or sym["st_shndx"] in ("SHN_UNDEF", "SHN_ABS"):
                continue
            local = bind == "STB_LOCAL"
            self.symbols.append(ImageSymbol(sym.name, sym["st_value"], sym["st_size"],
                                            kind == "STT_FUNC", local, current if local else None))
        self._locals = {(s.file, s.name): s for s in self.symbols if s.is_local}
        self._globals = {s.name: s for s in self.symbols if not s.is_local}
        self._kallsyms = Kallsyms()
        self._kallsyms.add(Symbol(s.name, s.address, s.size, s.is_function, not s.is_local) for s in self.symbols)
        self._segments = [(seg["p_vaddr"], seg.data()) for seg in elf.iter_segments()
                          if seg["p_type"] == "PT_LOAD"]
        mcount = elf.get_section_by_name("__mcount_loc")
        data = mcount.data() if mcount is not None else b""
        self.fentry_sites = frozenset(v for (v,) in struct.iter_unpack("<Q", data))
        self.exports = frozenset(self._exports(elf))

    def _exports(self, elf: ELFFile) -> list[str]:
        ksymtab = elf.get_section_by_name("__ksymtab")
        if ksymtab is None:
            return []
        return [self._cstring(name_ptr) for _value, name_ptr in struct.iter_unpack("<QQ", ksymtab.data())]

    def _cstring(self, address: int) -> str:
        for base, data in self._segments:
            if base <= address < base + len(data):
                off = address - base
                return data[off:data.index(b"\0", off)].decode()
        raise ImageReadError(f"{self.path}: string pointer {address:#x} outside the image")

    def find(self, name: str, file: str | None) -> ImageSymbol | None:
        """The local `name` of source file `file` (a basename), or the global
        `name` when `file` is None."""
        return self._locals.get((file, name)) if file is not None else self._globals.get(name)

    def find_global(self, name: str) -> ImageSymbol | None:
        return self._globals.get(name)

    def sympos(self, sym: ImageSymbol) -> int | None:
        """klp_func.old_sympos of `sym`, as the guest's kallsyms counts it
        (Kallsyms.sympos); None when kallsyms leaves it out (it has no size)."""
        return self._kallsyms.sympos(sym.name, sym.address)

    def read(self, address: int, size: int) -> bytes:
        for base, data in self._segments:
            if base <= address and address + size <= base + len(data):
                return data[address - base:address - base + size]
        raise ImageReadError(f"{self.path}: {address:#x}+{size:#x} is not in the image's file")

    def has_fentry(self, sym: ImageSymbol) -> bool:
        return sym.address in self.fentry_sites
