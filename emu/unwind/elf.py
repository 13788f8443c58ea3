"""Unwind tables straight from a linked ELF image (vmlinux)."""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from emu.unwind import cache
from emu.unwind.hints import HINTS_SECTION, Hint, parse_hints
from emu.unwind.switches import StackSwitch, find_stack_switches
from emu.unwind.tables import ReadCode, UnwindTables, _unique_functions, build_tables

_SHF_ALLOC = 0x2


def tables_from_elf(path: str | os.PathLike[str], *, use_cache: bool = True) -> UnwindTables:
    """Build (or load from the cache) the tables of every sized STT_FUNC in a linked image.

    Raises ImageError for relocatable objects (their addresses are not final)
    and for malformed hints.
    """
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf["e_type"] == "ET_REL":
            raise ImageError(f"{path} is a relocatable object; link it first")
        key = cache.file_key(path)
        functions = _function_symbols(elf, key)
        hints = read_hints(elf)
        read_code = _section_reader(elf)
        return build_tables(functions, read_code, hints, cache_key=key if use_cache else None)


def stack_switches_from_elf(path: str | os.PathLike[str]) -> list[StackSwitch]:
    """The stack switches in the functions of a linked image (see switches.py)."""
    key = cache.file_key(path)
    switches = _switches.get(key)
    if switches is None:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            functions = _unique_functions(_function_symbols(elf, key))
            switches = _switches[key] = list(find_stack_switches(functions, _section_reader(elf), read_hints(elf)))
    return list(switches)


# By file content: pyelftools parses symbols slowly (~60 ms for vmlinux), and
# every Machine() asks for the same kernel's twice.
_symbols: dict[str, list[tuple[str, int, int]]] = {}
_switches: dict[str, list[StackSwitch]] = {}


def _function_symbols(elf: ELFFile, key: str) -> list[tuple[str, int, int]]:
    symbols = _symbols.get(key)
    if symbols is None:
        symbols = _symbols[key] = list(iter_function_symbols(elf))
    return symbols


def iter_function_symbols(elf: ELFFile) -> Iterator[tuple[str, int, int]]:
    """Yield (name, value, size) of every STT_FUNC symbol with a size."""
    for sec in elf.iter_sections():
        if isinstance(sec, SymbolTableSection):
            for sym in sec.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0:
                    yield sym.name, sym["st_value"], sym["st_size"]


def read_hints(elf: ELFFile) -> list[Hint]:
    """The unwind hints of the image; empty if it has no hints section."""
    sec = elf.get_section_by_name(HINTS_SECTION)
    return parse_hints(sec.data()) if sec is not None else []


def _section_reader(elf: ELFFile) -> ReadCode:
    """A `read_code(addr, size)` over the image's allocated PROGBITS sections."""
    secs = sorted((s["sh_addr"], s.data()) for s in elf.iter_sections()
                  if s["sh_flags"] & _SHF_ALLOC and s["sh_type"] == "SHT_PROGBITS"
                  and s["sh_size"] > 0)
    starts = [a for a, _ in secs]

    def read_code(addr: int, size: int) -> bytes:
        i = bisect_right(starts, addr) - 1
        if i < 0 or addr + size > starts[i] + len(secs[i][1]):
            raise ImageError(f"no section holds 0x{addr:x}..0x{addr + size:x}")
        base, data = secs[i]
        return data[addr - base:addr - base + size]

    return read_code
