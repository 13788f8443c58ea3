"""Kernel-module (ET_REL) loader, independent of the running machine.

`load_module(data, name, base, resolve)` lays a relocatable x86-64 object out
at `base`, resolves its undefined symbols through `resolve`, applies its RELA
relocations (the handlers are in emu/elf/relocs.py) and returns the relocated
bytes together with what the kernel reads from a module: its struct module
name, exported symbols (__ksymtab), parameters (__param), ftrace call sites
(__mcount_loc), .modinfo strings, and the livepatch relocation sections
(.klp.rela.*) that only the livepatch core may apply. Nothing here touches
Unicorn: the caller writes `image` at `base` itself.

Layout: every SHF_EXECINSTR section first, then padding to a page, then the
read-only data, the writable data and the NOBITS sections (zeroed). The total
is rounded up to a page.

The parser uses plain `struct` and checks every offset, index and size before
it uses it: for any byte input the only exception it raises is
ModuleLoadError (ENOEXEC for a malformed or unsupported object, ENOENT for
unresolved symbols), whose `lines` are the kernel-log lines to print.
"""
from __future__ import annotations

import errno as _errno
import struct
from dataclasses import dataclass, field
from typing import Callable

from emu.elf.format import (EHDR, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_REL, RELA, SHDR,
                            SHF_ALLOC, SHF_EXECINSTR, SHF_RELA_LIVEPATCH, SHF_WRITE, SHN_ABS, SHN_COMMON,
                            SHN_LIVEPATCH, SHN_LORESERVE, SHN_UNDEF, SHT_NOBITS, SHT_NULL, SHT_REL, SHT_RELA,
                            SHT_STRTAB, SHT_SYMTAB, STB_LOCAL, STB_WEAK, STT_FUNC, STT_OBJECT, SYM)
from emu.elf.image import Symbol
from emu.elf.relocs import MASK64, RELOCATIONS, RelocOverflow
from emu.errors import EmuError, ImageError

__all__ = [
    "ModuleLoadError", "LoadedModule", "ParamDesc", "KlpRela", "KlpRelaSection",
    "layout_size", "load_module", "module_kallsyms", "DEFAULT_MAX_SIZE",
]

PAGE_SIZE = 4096
DEFAULT_MAX_SIZE = 32 << 20

_KSYM = struct.Struct("<QQ")                     # struct kernel_symbol, 16 bytes
_PARAM = struct.Struct("<QQQHHIQ")               # struct kernel_param, 40 bytes
_DDEBUG = struct.Struct("<QQQQI4x")               # struct _ddebug, 40 bytes

# Sections holding u64 tables whose sh_addralign gcc may leave at 1.
_U64_TABLES = ("__mcount_loc", "__param", "__ksymtab", "__dyndbg")


class ModuleLoadError(ImageError):
    """A module could not be loaded. .errno is positive; .lines are kernel-log lines."""

    def __init__(self, lines: list[str] | str, errno: int = _errno.ENOEXEC) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        self.errno = errno
        super().__init__("\n".join(self.lines))

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class ParamDesc:
    """One struct kernel_param of the module's __param section."""
    name: str
    type: str
    arg: int              # address of the variable (arrays: of the first element)
    perm: int
    elem_size: int
    max: int              # arrays: capacity; 0 for a scalar
    num: int | None       # arrays: address of the element count, or None


@dataclass(frozen=True)
class DebugDescriptor:
    """One struct _ddebug of the module's __dyndbg section: a pr_debug() site."""
    address: int
    modname: str
    function: str
    filename: str
    format: str
    lineno: int
    flags: int


@dataclass(frozen=True)
class KlpRela:
    offset: int           # within the target section
    type: int
    symbol: str           # e.g. ".klp.sym.vmlinux.foo,0"
    addend: int
    shndx: int = SHN_LIVEPATCH    # the symbol's st_shndx (livepatch checks it)


@dataclass(frozen=True)
class KlpRelaSection:
    """A SHF_RELA_LIVEPATCH section: left unapplied for the livepatch core."""
    name: str             # ".klp.rela.<obj>.<sec>"
    target: str           # name of the section it patches (sh_info)
    target_address: int   # where that section was laid out
    entries: tuple[KlpRela, ...]


@dataclass(frozen=True)
class LoadedModule:
    name: str
    base: int
    size: int
    image: bytes
    text: tuple[int, int]
    sections: dict[str, tuple[int, int]]
    symbols: list[Symbol]
    exports: dict[str, int]
    modinfo: dict[str, list[str]]
    params: list[ParamDesc]
    mcount_sites: list[int]
    this_module: int | None
    klp_relocations: list[KlpRelaSection] = field(default_factory=list)
    debug_sites: list[DebugDescriptor] = field(default_factory=list)


# ---------------------------------------------------------------- parsing

@dataclass
class _Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int

    @property
    def alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    def contents(self, data: bytes) -> bytes:
        """The file bytes (validated to lie in the file); nothing for NOBITS/NULL."""
        if self.type in (SHT_NOBITS, SHT_NULL):
            return b""
        return data[self.offset:self.offset + self.size]


@dataclass
class _Sym:
    name: str
    bind: int
    type: int
    shndx: int
    value: int
    size: int
    other: int = 0


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class ElfRel:
    """The validated section headers and symbol table of an x86-64 ET_REL
    object (ModuleLoadError otherwise); klpemu/build/klp_convert.py reads objects with it too."""

    def __init__(self, data: bytes, name: str, max_size: int) -> None:
        self.data = data
        self.name = name
        if len(data) > max_size:
            raise self.bad(f"module file of {len(data)} bytes exceeds the limit of {max_size}")
        if len(data) < EHDR.size:
            raise self.bad("truncated ELF header")
        (ident, e_type, e_machine, _version, _entry, _phoff, e_shoff, _flags,
         _ehsize, _phentsize, _phnum, e_shentsize, e_shnum, e_shstrndx) = EHDR.unpack_from(data)
        if ident[:4] != ELFMAG:
            raise self.bad("Invalid ELF header magic: != ELF")
        if ident[4] != ELFCLASS64:
            raise self.bad(f"not a 64-bit ELF object (EI_CLASS {ident[4]})")
        if ident[5] != ELFDATA2LSB:
            raise self.bad(f"not a little-endian ELF object (EI_DATA {ident[5]})")
        if e_type != ET_REL:
            raise self.bad(f"not a relocatable object (e_type {e_type}, want ET_REL)")
        if e_machine != EM_X86_64:
            raise self.bad(f"not an x86-64 object (e_machine {e_machine})")
        if e_shentsize != SHDR.size:
            raise self.bad(f"Invalid module section header size: {e_shentsize} != {SHDR.size}")
        if e_shnum == 0:
            raise self.bad("no section header table")
        if e_shoff + e_shnum * SHDR.size > len(data):
            raise self.bad("section header table truncated")
        if e_shstrndx == 0 or e_shstrndx >= e_shnum:
            raise self.bad(f"section name table index {e_shstrndx} out of range")
        raw = [SHDR.unpack_from(data, e_shoff + i * SHDR.size) for i in range(e_shnum)]
        self.sections: list[_Section] = []
        for i, (_n, typ, flags, addr, off, size, link, info, align, entsize) in enumerate(raw):
            if i and typ not in (SHT_NULL, SHT_NOBITS) and off + size > len(data):
                raise self.bad(f"section {i} truncated (offset {off:#x} size {size:#x}, "
                               f"file {len(data):#x})")
            self.sections.append(_Section(i, "", typ, flags, addr, off, size, link, info, align, entsize))
        self.shstrndx = e_shstrndx
        shstr = self.sections[e_shstrndx]
        if shstr.type != SHT_STRTAB:
            raise self.bad(f"section name table (section {e_shstrndx}) is not a string table")
        shstr_data = shstr.contents(data)
        for sec, r in zip(self.sections, raw):
            sec.name = self.string(shstr_data, r[0], f"name of section {sec.index}")
        for sec in self.sections[1:]:
            if sec.alloc and (sec.align & (sec.align - 1) or sec.align > PAGE_SIZE):
                raise self.bad(f"section {sec.name}: unsupported alignment {sec.align}")
            if sec.type in (SHT_RELA, SHT_REL):
                if sec.link >= e_shnum or sec.info >= e_shnum or sec.info == 0:
                    raise self.bad(f"relocation section {sec.name}: section index out of range "
                                   f"(sh_link {sec.link}, sh_info {sec.info})")
        # the symbol table
        symtabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if not symtabs:
            raise self.bad("module has no symbols (stripped?)")
        if len(symtabs) > 1:
            raise self.bad("more than one symbol table")
        symtab = self.symtab = symtabs[0]
        if symtab.link == 0 or symtab.link >= e_shnum:
            raise self.bad(f"symbol table: string table index {symtab.link} out of range")
        strtab = self.sections[symtab.link]
        if strtab.type != SHT_STRTAB:
            raise self.bad(f"symbol table: section {symtab.link} is not a string table")
        if symtab.size % SYM.size:
            raise self.bad(f"symbol table size {symtab.size} is not a multiple of {SYM.size}")
        str_data = strtab.contents(data)
        self.symbols: list[_Sym] = []
        for i in range(symtab.size // SYM.size):
            st_name, st_info, other, shndx, value, size = SYM.unpack_from(
                data, symtab.offset + i * SYM.size)
            if SHN_UNDEF < shndx < SHN_LORESERVE and shndx >= e_shnum:
                raise self.bad(f"symbol {i}: section index {shndx} out of range")
            sym_name = self.string(str_data, st_name, f"name of symbol {i}")
            self.symbols.append(_Sym(sym_name, st_info >> 4, st_info & 0xF, shndx, value, size, other))

    def bad(self, message: str) -> ModuleLoadError:
        return ModuleLoadError([f"{self.name}: {message}"], _errno.ENOEXEC)

    def string(self, table: bytes, offset: int, what: str) -> str:
        end = table.find(b"\0", offset) if offset < len(table) else -1
        if end < 0:
            raise self.bad(f"{what}: string offset {offset} out of range")
        return _decode(table[offset:end])

    # ------------------------------------------------------------ layout

    def layout(self, max_size: int) -> tuple[dict[int, int], int, int]:
        """Offsets from base of every SHF_ALLOC section, the text end and the total size."""
        alloc = [s for s in self.sections[1:] if s.alloc]
        groups = [
            [s for s in alloc if s.flags & SHF_EXECINSTR],
            [s for s in alloc if not s.flags & (SHF_EXECINSTR | SHF_WRITE) and s.type != SHT_NOBITS],
            [s for s in alloc if s.flags & SHF_WRITE and not s.flags & SHF_EXECINSTR
             and s.type != SHT_NOBITS],
            [s for s in alloc if not s.flags & SHF_EXECINSTR and s.type == SHT_NOBITS],
        ]
        offsets: dict[int, int] = {}
        cursor = 0
        text_end = 0
        for g, group in enumerate(groups):
            for sec in group:
                align = max(sec.align, 1)
                if sec.name in _U64_TABLES:
                    align = max(align, 8)
                cursor = _align(cursor, align)
                offsets[sec.index] = cursor
                cursor += sec.size
                if cursor > max_size:
                    raise self.bad(f"module needs more than {max_size} bytes "
                                   f"(section {sec.name} of {sec.size:#x} bytes)")
            if g == 0:
                cursor = text_end = _align(cursor, PAGE_SIZE)
        total = _align(cursor, PAGE_SIZE)
        if total > max_size:
            raise self.bad(f"module needs {total} bytes, more than the limit of {max_size}")
        return offsets, text_end, total

    def find(self, name: str) -> list[_Section]:
        return [s for s in self.sections[1:] if s.name == name and s.alloc]


def _align(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _coerce(data: bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"module data must be bytes, not {type(data).__name__}")


# ---------------------------------------------------------------- API

def layout_size(data: bytes, name: str, *, max_size: int = DEFAULT_MAX_SIZE) -> int:
    """Bytes of guest memory (a multiple of the page size) the module needs."""
    elf = ElfRel(_coerce(data), name, max_size)
    return elf.layout(max_size)[2]


def load_module(data: bytes, name: str, base: int,
                resolve: Callable[[str], int | None], *, name_field: tuple[int, int],
                max_size: int = DEFAULT_MAX_SIZE) -> LoadedModule:
    """Lay the ET_REL object `data` out at `base` and relocate it.

    `resolve(symbol)` gives the address of a symbol exported by vmlinux or by
    another module, or None. `base` must be page-aligned. `name_field` is
    (offset, size) of `name` in the kernel's struct module (its offsets
    table: MODULE_name, MODULE_name_len); `name` is the fallback when the
    object has no struct module.
    """
    data = _coerce(data)
    if base % PAGE_SIZE or not 0 <= base <= MASK64:
        raise EmuError(f"module base {base:#x} is not a page-aligned 64-bit address")
    elf = ElfRel(data, name, max_size)
    offsets, text_end, total = elf.layout(max_size)
    if base + total > MASK64 + 1:
        raise EmuError(f"module of {total:#x} bytes does not fit at {base:#x}")

    # The module name comes from its struct module, as the kernel takes mod->name.
    this_mod = elf.find(".gnu.linkonce.this_module")
    modname = _module_name(elf, this_mod[0].contents(data), name_field) if this_mod else None
    elf.name = name = modname or name

    image = bytearray(total)
    for sec in elf.sections[1:]:
        if sec.index in offsets and sec.type not in (SHT_NOBITS, SHT_NULL):
            off = offsets[sec.index]
            image[off:off + sec.size] = sec.contents(data)

    def sec_addr(index: int) -> int:
        return base + offsets[index]

    # ---- symbols
    addrs: list[int] = []
    missing: list[str] = []
    for i, sym in enumerate(elf.symbols):
        if i == 0:
            addrs.append(0)
        elif sym.shndx == SHN_UNDEF:
            value = resolve(sym.name)
            if value is None:
                if sym.bind != STB_WEAK and sym.name not in missing:
                    missing.append(sym.name)
                value = 0
            addrs.append(value & MASK64)
        elif sym.shndx == SHN_ABS or sym.shndx == SHN_LIVEPATCH:
            addrs.append(sym.value)      # livepatch symbols are resolved by livepatch
        elif sym.shndx == SHN_COMMON:
            raise elf.bad("please compile with -fno-common")
        elif sym.shndx >= SHN_LORESERVE:
            raise elf.bad(f"symbol {sym.name or i}: unsupported section index {sym.shndx:#x}")
        elif sym.shndx in offsets:
            addrs.append((sec_addr(sym.shndx) + sym.value) & MASK64)
        else:
            addrs.append(sym.value)      # in a section that is not loaded
    if missing:
        raise ModuleLoadError([f"{name}: Unknown symbol {s} (err -{_errno.ENOENT})"
                               for s in missing], _errno.ENOENT)

    # ---- relocations
    def check_place(rsec: _Section, target: _Section, k: int, off: int, width: int) -> None:
        if target.type == SHT_NOBITS or off + width > target.size:
            raise elf.bad(f"relocation {k} of {rsec.name}: offset {off:#x} (+{width}) "
                          f"outside {target.name} (size {target.size:#x})")

    klp: list[KlpRelaSection] = []
    for rsec in elf.sections[1:]:
        if rsec.type not in (SHT_RELA, SHT_REL):
            continue
        target = elf.sections[rsec.info]
        if not target.alloc:
            continue
        if rsec.type == SHT_REL:
            raise elf.bad(f"REL relocation unsupported ({rsec.name})")
        if rsec.link != elf.symtab.index:
            raise elf.bad(f"relocation section {rsec.name}: sh_link {rsec.link} "
                          f"is not the symbol table")
        if rsec.size % RELA.size:
            raise elf.bad(f"relocation section {rsec.name}: size {rsec.size} "
                          f"is not a multiple of {RELA.size}")
        entries = [RELA.unpack_from(data, rsec.offset + k * RELA.size)
                   for k in range(rsec.size // RELA.size)]
        for k, (_off, info, _add) in enumerate(entries):
            if info >> 32 >= len(elf.symbols):
                raise elf.bad(f"relocation {k} of {rsec.name}: symbol index {info >> 32} "
                              f"out of range")
        if rsec.flags & SHF_RELA_LIVEPATCH:
            for k, (off, info, _add) in enumerate(entries):
                handler = RELOCATIONS.get(info & 0xFFFFFFFF)
                check_place(rsec, target, k, off, handler.width if handler else 8)
            klp.append(KlpRelaSection(
                rsec.name, target.name, sec_addr(target.index),
                tuple(KlpRela(off, info & 0xFFFFFFFF, elf.symbols[info >> 32].name, add,
                              elf.symbols[info >> 32].shndx)
                      for off, info, add in entries)))
            continue
        tbase = offsets[target.index]
        for k, (off, info, addend) in enumerate(entries):
            rtype = info & 0xFFFFFFFF
            handler = RELOCATIONS.get(rtype)
            if handler is None:
                raise elf.bad(f"Unknown rela relocation: {rtype}")
            if handler.width == 0:
                continue
            check_place(rsec, target, k, off, handler.width)
            place = base + tbase + off
            try:
                value = handler.compute(addrs[info >> 32], addend, place)
            except RelocOverflow as exc:
                raise ModuleLoadError(
                    [str(exc), f"`{name}' likely not compiled with -mcmodel=kernel"],
                    _errno.ENOEXEC) from None
            image[tbase + off:tbase + off + handler.width] = value

    # ---- what the kernel reads from the relocated module
    def cstring(addr: int, what: str) -> str:
        off = addr - base
        end = image.find(b"\0", off) if 0 <= off < total else -1
        if end < 0:
            raise elf.bad(f"{what}: string pointer {addr:#x} outside the module")
        return _decode(bytes(image[off:end]))

    def table(secname: str, entry: struct.Struct) -> list[tuple]:
        rows: list[tuple] = []
        for sec in elf.find(secname):
            if sec.size % entry.size:
                raise elf.bad(f"section {secname}: size {sec.size} is not a multiple "
                              f"of {entry.size}")
            off = offsets[sec.index]
            rows.extend(entry.iter_unpack(bytes(image[off:off + sec.size])))
        return rows

    mcount_sites = [row[0] for row in table("__mcount_loc", struct.Struct("<Q"))]
    exports: dict[str, int] = {}
    for value, name_ptr in table("__ksymtab", _KSYM):
        exports[cstring(name_ptr, "__ksymtab entry")] = value
    params = [
        ParamDesc(cstring(p_name, "__param name"), cstring(p_type, "__param type"),
                  arg, perm, esize, pmax, num or None)
        for p_name, p_type, arg, perm, esize, pmax, num in table("__param", _PARAM)
    ]

    debug_sites = []
    for sec in elf.find("__dyndbg"):
        if sec.size % _DDEBUG.size:
            raise elf.bad(f"section __dyndbg: size {sec.size} is not a multiple of {_DDEBUG.size}")
        off = offsets[sec.index]
        for k, (modname, function, filename, fmt, bits) in enumerate(
                _DDEBUG.iter_unpack(bytes(image[off:off + sec.size]))):
            debug_sites.append(DebugDescriptor(
                base + off + k * _DDEBUG.size, cstring(modname, "__dyndbg modname"),
                cstring(function, "__dyndbg function"), cstring(filename, "__dyndbg filename"),
                cstring(fmt, "__dyndbg format"), bits & 0x3FFFF, bits >> 24))

    this_module = sec_addr(this_mod[0].index) if this_mod else None

    modinfo: dict[str, list[str]] = {}
    for sec in elf.sections[1:]:
        if sec.name == ".modinfo":
            for entry in sec.contents(data).split(b"\0"):
                key, eq, value = _decode(entry).partition("=")
                if eq:
                    modinfo.setdefault(key, []).append(value)

    sections: dict[str, tuple[int, int]] = {}
    for sec in elf.sections[1:]:
        if sec.index in offsets:
            sections.setdefault(sec.name, (sec_addr(sec.index), sec.size))

    symbols = [Symbol(sym.name, addrs[i], sym.size, sym.type == STT_FUNC, sym.bind != STB_LOCAL)
               for i, sym in _kallsyms_entries(elf, offsets)]

    return LoadedModule(
        name=name, base=base, size=total, image=bytes(image),
        text=(base, base + text_end), sections=sections, symbols=symbols,
        exports=exports, modinfo=modinfo, params=params, mcount_sites=mcount_sites,
        this_module=this_module, klp_relocations=klp, debug_sites=debug_sites,
    )


def _kallsyms_entries(elf: ElfRel, offsets: dict[int, int]) -> list[tuple[int, _Sym]]:
    """(index, symbol) of the symbols kallsyms lists for the module: its
    functions and objects in the sections it loads."""
    return [(i, sym) for i, sym in enumerate(elf.symbols)
            if i and sym.type in (STT_FUNC, STT_OBJECT) and sym.shndx in offsets
            and SHN_UNDEF < sym.shndx < SHN_LORESERVE]


def module_kallsyms(data: bytes, name: str, *,
                    max_size: int = DEFAULT_MAX_SIZE) -> dict[tuple[int, int, str], Symbol]:
    """The symbols kallsyms would list for the module, at their offsets from the
    module's base as load_module lays it out (no relocation), by (st_shndx,
    st_value, name): what a tool reading the .ko needs to count sympos."""
    elf = ElfRel(_coerce(data), name, max_size)
    offsets = elf.layout(max_size)[0]
    return {(sym.shndx, sym.value, sym.name): Symbol(sym.name, offsets[sym.shndx] + sym.value, sym.size,
                                                     sym.type == STT_FUNC, sym.bind != STB_LOCAL)
            for _, sym in _kallsyms_entries(elf, offsets)}


def _module_name(elf: ElfRel, raw: bytes, name_field: tuple[int, int]) -> str | None:
    """The name field of a struct module, or None when the section is too small or it is empty."""
    offset, size = name_field
    field_ = raw[offset:offset + size]
    if len(field_) < size:
        return None
    end = field_.find(b"\0")
    if end < 0:
        raise elf.bad(".gnu.linkonce.this_module: module name is not NUL-terminated")
    return _decode(field_[:end]) or None
