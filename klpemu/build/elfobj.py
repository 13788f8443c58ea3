"""Relocatable ELF objects (ET_REL) as Python values: read, edit, write.

`read_object` parses a gcc/ld object (checking every offset, index and
size; the module loader's parser is stricter about what a module may hold
than a kernel object needs) into sections, symbols and, per section, the
relocations that apply to it, each pointing to its Symbol.
`write_object` lays such an object out again: the relocation sections,
the symbol table (locals first, as ELF wants) and the string tables are
regenerated from the values, so sections and symbols can be added, dropped
or renamed freely in between. Livepatch relocations
(Documentation/livepatch/module-elf-format.rst) are kept apart per object
name (`Section.klp_relocs`) and written as `.klp.rela.<obj>.<section>`.

Only what gcc and ld make for the guest is supported: no SHT_GROUP, no
SHT_REL, no extended section indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emu.elf.format import (EHDR, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_REL, EV_CURRENT, RELA, SHDR,
                            SHF_ALLOC, SHF_INFO_LINK, SHF_RELA_LIVEPATCH, SHF_STRINGS, SHN_LORESERVE,
                            SHN_UNDEF, SHT_GROUP, SHT_NOBITS, SHT_NULL, SHT_REL, SHT_RELA, SHT_STRTAB, SHT_SYMTAB,
                            SHT_SYMTAB_SHNDX, STB_LOCAL, STT_FILE, STT_SECTION, SYM)

__all__ = ["ObjectError", "Section", "Symbol", "Reloc", "ObjectFile", "read_object",
           "write_object"]

# e_ident, e_type, e_machine, version, entry, phoff, shoff, flags, ehsize, phentsize, phnum,
# shentsize, shnum, shstrndx
_ELF_HEADER = (ELFMAG + bytes((ELFCLASS64, ELFDATA2LSB, EV_CURRENT)) + bytes(9), ET_REL, EM_X86_64,
               EV_CURRENT, 0, 0, 0, 0, EHDR.size, 0, 0, SHDR.size, 0, 0)


class ObjectError(Exception):
    """An object this module cannot read or write; the message says which and why."""


@dataclass(eq=False)
class Section:
    """An ELF section; `data` is empty for SHT_NOBITS (whose size is `size`)."""

    name: str
    type: int
    flags: int
    align: int
    entsize: int
    data: bytes = b""
    size: int = 0
    relocs: list["Reloc"] = field(default_factory=list)
    klp_relocs: dict[str, list["Reloc"]] = field(default_factory=dict)
    symbol: "Symbol | None" = None          # its STT_SECTION symbol, if any

    def __post_init__(self) -> None:
        if self.type != SHT_NOBITS:
            self.size = len(self.data)

    @property
    def alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def is_strings(self) -> bool:
        return bool(self.flags & SHF_STRINGS)

    def __repr__(self) -> str:
        return f"Section({self.name!r})"


@dataclass(eq=False)
class Symbol:
    """An ELF symbol. `section` is None for SHN_UNDEF and the special
    indices (`shndx` then says which); `file` is the STT_FILE symbol a
    local symbol follows (None for globals)."""

    name: str
    bind: int
    type: int
    value: int = 0
    size: int = 0
    section: Section | None = None
    shndx: int = SHN_UNDEF
    other: int = 0
    file: str | None = None

    @property
    def is_local(self) -> bool:
        return self.bind == STB_LOCAL

    @property
    def is_defined(self) -> bool:
        return self.section is not None

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"


@dataclass(eq=False)
class Reloc:
    """A RELA entry: at `offset` of its section, `type` against `symbol` + `addend`."""

    offset: int
    type: int
    symbol: Symbol
    addend: int


@dataclass(eq=False)
class ObjectFile:
    """An ET_REL object: its sections (without the symbol, string and
    relocation tables, which are regenerated) and symbols (without the null one)."""

    name: str
    sections: list[Section] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def symbols_in(self, section: Section) -> list[Symbol]:
        return [s for s in self.symbols if s.section is section and s.type != STT_SECTION]

    def section_symbol(self, section: Section) -> Symbol:
        """The STT_SECTION symbol of `section`, made if it has none."""
        if section.symbol is None:
            section.symbol = Symbol("", STB_LOCAL, STT_SECTION, section=section)
            self.symbols.append(section.symbol)
        return section.symbol


def read_object(data: bytes, name: str) -> ObjectFile:
    """The object `data`; ObjectError if it is not an x86-64 ET_REL object
    this module handles, or if any offset, index or size lies outside it."""
    if len(data) < EHDR.size or data[:4] != ELFMAG or data[4:6] != bytes((ELFCLASS64, ELFDATA2LSB)):
        raise ObjectError(f"{name}: not a 64-bit little-endian ELF file")
    header = EHDR.unpack_from(data)
    e_type, e_machine, e_shoff, e_shentsize, e_shnum, e_shstrndx = (header[1], header[2], header[6],
                                                                    header[11], header[12], header[13])
    if e_type != ET_REL or e_machine != EM_X86_64:
        raise ObjectError(f"{name}: not an x86-64 relocatable object (e_type {e_type}, "
                          f"e_machine {e_machine})")
    if e_shentsize != SHDR.size or not 0 < e_shstrndx < e_shnum or e_shoff + e_shnum * SHDR.size > len(data):
        raise ObjectError(f"{name}: bad section header table")
    raw = [SHDR.unpack_from(data, e_shoff + i * SHDR.size) for i in range(e_shnum)]

    def contents(i: int) -> bytes:
        _n, typ, _f, _a, off, size, *_rest = raw[i]
        if typ in (SHT_NOBITS, SHT_NULL):
            return b""
        if off + size > len(data):
            raise ObjectError(f"{name}: section {i} lies outside the file")
        return data[off:off + size]

    def string(table: bytes, offset: int) -> str:
        end = table.find(b"\0", offset)
        if offset >= len(table) or end < 0:
            raise ObjectError(f"{name}: string offset {offset} outside its table")
        return table[offset:end].decode("utf-8", "backslashreplace")

    shstr = contents(e_shstrndx)
    names = [string(shstr, r[0]) for r in raw]
    kinds = {r[1] for r in raw}
    for bad, what in ((SHT_GROUP, "section groups"), (SHT_SYMTAB_SHNDX, "extended section indices"),
                      (SHT_REL, "REL relocations")):
        if bad in kinds:
            raise ObjectError(f"{name}: {what} are not supported")
    symtabs = [i for i, r in enumerate(raw) if r[1] == SHT_SYMTAB]
    if len(symtabs) != 1 or not 0 < raw[symtabs[0]][6] < e_shnum:
        raise ObjectError(f"{name}: an object has one symbol table, with a string table")
    symtab_index = symtabs[0]
    strtab_index = raw[symtab_index][6]
    tables = {0, symtab_index, strtab_index, e_shstrndx}
    obj = ObjectFile(name)
    by_index: dict[int, Section] = {}
    for i, (_n, typ, flags, _a, _o, size, _l, _i, align, entsize) in enumerate(raw):
        if i in tables or typ == SHT_RELA:
            continue
        sec = Section(names[i], typ, flags, align, entsize, contents(i), size)
        by_index[i] = sec
        obj.sections.append(sec)
    strtab = contents(strtab_index)
    symdata = contents(symtab_index)
    symbols: list[Symbol] = [Symbol("", 0, 0)]
    current_file: str | None = None
    for off in range(SYM.size, len(symdata) - SYM.size + 1, SYM.size):
        st_name, st_info, other, shndx, value, size = SYM.unpack_from(symdata, off)
        bind, typ = st_info >> 4, st_info & 0xF
        sec = None
        if SHN_UNDEF < shndx < SHN_LORESERVE:
            if shndx >= e_shnum:
                raise ObjectError(f"{name}: symbol {len(symbols)}: section index {shndx} out of range")
            sec = by_index.get(shndx)
        sym_name = string(strtab, st_name)
        if typ == STT_FILE:
            current_file = sym_name
        sym = Symbol(sym_name, bind, typ, value, size, sec, shndx, other,
                     current_file if bind == STB_LOCAL else None)
        if typ == STT_SECTION and sec is not None:
            sec.symbol = sym
        symbols.append(sym)
        obj.symbols.append(sym)
    for i, (_n, typ, flags, _a, _o, _s, _l, info, _al, _e) in enumerate(raw):
        if typ != SHT_RELA:
            continue
        target = by_index.get(info)
        if target is None:
            raise ObjectError(f"{name}: relocation section {names[i]} applies to section {info}, "
                              "which is not one of the object's contents")
        rows = list(RELA.iter_unpack(contents(i)))
        if any(row[1] >> 32 >= len(symbols) for row in rows):
            raise ObjectError(f"{name}: {names[i]}: symbol index out of range")
        relocs = [Reloc(off, rinfo & 0xFFFFFFFF, symbols[rinfo >> 32], addend)
                  for off, rinfo, addend in rows]
        if flags & SHF_RELA_LIVEPATCH:
            objname = names[i][len(".klp.rela."):].split(".", 1)[0]
            target.klp_relocs.setdefault(objname, []).extend(relocs)
        else:
            target.relocs.extend(relocs)
    return obj


def write_object(obj: ObjectFile) -> bytes:
    """The object laid out as an x86-64 ET_REL file."""
    sections = [s for s in obj.sections if s.type != SHT_NULL]
    index = {id(s): i + 1 for i, s in enumerate(sections)}
    ordered = [s for s in obj.symbols if s.is_local] + [s for s in obj.symbols if not s.is_local]
    sym_index = {id(s): i + 1 for i, s in enumerate(ordered)}
    strtab, shstrtab = _Strings(), _Strings()
    sym_rows = [bytes(SYM.size)]
    for sym in ordered:
        if sym.section is not None:
            if id(sym.section) not in index:
                raise ObjectError(f"{obj.name}: symbol {sym.name or '(section)'} is in section "
                                  f"{sym.section.name}, which is not in the object")
            shndx = index[id(sym.section)]
        else:
            shndx = sym.shndx
        sym_rows.append(SYM.pack(strtab.add(sym.name), sym.bind << 4 | sym.type, sym.other, shndx,
                                 sym.value, sym.size))

    def rela_bytes(relocs: list[Reloc], where: str) -> bytes:
        rows = []
        for r in relocs:
            if id(r.symbol) not in sym_index:
                raise ObjectError(f"{obj.name}: a relocation of {where} refers to symbol "
                                  f"{r.symbol.name or '(section)'}, which is not in the object")
            rows.append(RELA.pack(r.offset, sym_index[id(r.symbol)] << 32 | r.type, r.addend))
        return b"".join(rows)

    symtab_index = len(sections) + 1
    extra: list[tuple[str, int, int, int, int, int, int, bytes]] = []   # rela sections
    for sec in sections:
        if sec.relocs:
            extra.append((".rela" + sec.name, SHT_RELA, SHF_INFO_LINK,
                          symtab_index, index[id(sec)], 8, RELA.size, rela_bytes(sec.relocs, sec.name)))
        for objname, relocs in sec.klp_relocs.items():
            extra.append((f".klp.rela.{objname}.{sec.name}", SHT_RELA,
                          SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH, symtab_index,
                          index[id(sec)], 8, RELA.size, rela_bytes(relocs, sec.name)))
    symtab_index += len(extra)
    extra = [(n, t, f, symtab_index, i, a, e, d) for n, t, f, _l, i, a, e, d in extra]
    first_global = 1 + sum(1 for s in ordered if s.is_local)
    body = bytearray(EHDR.size)
    headers = [bytes(SHDR.size)]

    def place(name: str, typ: int, flags: int, link: int, info: int, align: int, entsize: int,
              content: bytes, size: int | None = None) -> None:
        offset = len(body)
        if typ != SHT_NOBITS:
            while len(body) % max(align, 1):
                body.append(0)
            offset = len(body)
            body.extend(content)
        headers.append(SHDR.pack(shstrtab.add(name), typ, flags, 0, offset,
                                 len(content) if size is None else size, link, info, align, entsize))

    for sec in sections:
        place(sec.name, sec.type, sec.flags, 0, 0, sec.align, sec.entsize, sec.data,
              sec.size if sec.type == SHT_NOBITS else None)
    for name, typ, flags, link, info, align, entsize, content in extra:
        place(name, typ, flags, link, info, align, entsize, content)
    symtab_data = b"".join(sym_rows)
    strtab_index = symtab_index + 1
    place(".symtab", SHT_SYMTAB, 0, strtab_index, first_global, 8, SYM.size, symtab_data)
    place(".strtab", SHT_STRTAB, 0, 0, 0, 1, 0, strtab.data)
    shstr_name = shstrtab.add(".shstrtab")
    offset = len(body)
    body.extend(shstrtab.data)
    headers.append(SHDR.pack(shstr_name, SHT_STRTAB, 0, 0, offset, len(shstrtab.data), 0, 0, 1, 0))
    while len(body) % 8:
        body.append(0)
    shoff = len(body)
    for row in headers:
        body.extend(row)
    header = list(_ELF_HEADER)
    header[6], header[12], header[13] = shoff, len(headers), len(headers) - 1
    body[:EHDR.size] = EHDR.pack(*header)
    return bytes(body)


class _Strings:
    """An ELF string table built name by name (offset 0 is the empty name)."""

    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def add(self, name: str) -> int:
        if name not in self._offsets:
            self._offsets[name] = len(self.data)
            self.data += name.encode() + b"\0"
        return self._offsets[name]
