"""Unwind tables straight from a linked ELF image (vmlinux)."""

from __future__ import annotations

import os
from bisect import bisect_right

from emu.elf.image import ElfImage
from emu.errors import ImageError
from emu.unwind import cache
from emu.unwind.hints import HINTS_SECTION, Hint, parse_hints
from emu.unwind.switches import StackSwitch, find_stack_switches
from emu.unwind.tables import ReadCode, UnwindTables, _unique_functions, build_tables


def tables_from_elf(image: ElfImage | str | os.PathLike[str], *, use_cache: bool = True) -> UnwindTables:
    """Build (or load from the cache) the tables of every sized STT_FUNC in a linked image
    (an ElfImage already parsed, or the path of one).

    Raises ImageError for relocatable objects (their addresses are not final)
    and for malformed hints.
    """
    image = _linked_image(image)
    key = image.digest
    return build_tables(_function_symbols(image), _section_reader(image), read_hints(image),
                        cache_key=key if use_cache else None)


def stack_switches_from_elf(image: ElfImage | str | os.PathLike[str]) -> list[StackSwitch]:
    """The stack switches in the functions of a linked image, or of the image at a
    path (see switches.py)."""
    image = _linked_image(image)
    switches = cache.cached(f"switches-{image.digest}", lambda: list(find_stack_switches(
        _unique_functions(_function_symbols(image)), _section_reader(image), read_hints(image))))
    return list(switches)


def _linked_image(image: ElfImage | str | os.PathLike[str]) -> ElfImage:
    if not isinstance(image, ElfImage):
        image = ElfImage(image, executable_only=False)
    if image.relocatable:
        raise ImageError(f"{image.path} is a relocatable object; link it first")
    return image


def _function_symbols(image: ElfImage) -> list[tuple[str, int, int]]:
    """(name, value, size) of every STT_FUNC symbol with a size."""
    return [(s.name, s.address, s.size) for s in image.symbols if s.is_function and s.size > 0]


def read_hints(image: ElfImage) -> list[Hint]:
    """The unwind hints of the image; empty if it has no hints section."""
    return parse_hints(image.section(HINTS_SECTION)[1]) if image.has_section(HINTS_SECTION) else []


def _section_reader(image: ElfImage) -> ReadCode:
    """A `read_code(addr, size)` over the image's allocated PROGBITS sections."""
    secs = sorted(image.code_sections)
    starts = [a for a, _ in secs]

    def read_code(addr: int, size: int) -> bytes:
        i = bisect_right(starts, addr) - 1
        if i < 0 or addr + size > starts[i] + len(secs[i][1]):
            raise ImageError(f"no section holds 0x{addr:x}..0x{addr + size:x}")
        base, data = secs[i]
        return data[addr - base:addr - base + size]

    return read_code
