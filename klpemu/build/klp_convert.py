"""klp-convert: turn annotated references into livepatch relocations.

A livepatch may call functions the module loader cannot resolve: statics
of vmlinux or of a module, names that several files of one object define,
symbols of a module not loaded yet. The author declares them in C, as in the
klp-convert series proposed upstream (include/linux/livepatch.h):

    extern int helper(int);
    KLP_MODULE_RELOC(vmlinux) my_relocs[] = { KLP_SYMPOS(helper, 2) };

which puts a `struct klp_module_reloc { void *sym; u32 sympos; }` per symbol
in a section `.klp.module_relocs.<object>`. After `ld -r`, `klp_convert`
reads those sections, strips them, renames each annotated (undefined)
symbol `.klp.sym.<object>.<name>,<sympos>` with st_shndx SHN_LIVEPATCH, and
moves every relocation against it from `.rela<sec>` into a
`.klp.rela.<object>.<sec>` section (SHF_ALLOC | SHF_RELA_LIVEPATCH), the
format of Documentation/livepatch/module-elf-format.rst.

The rewrite is done on the raw bytes: sections and symbols are renumbered
when the annotation sections and their symbols go away.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from emu.elf.format import (EHDR as _EHDR, RELA as _RELA, SHDR as _SHDR, SHF_ALLOC, SHF_INFO_LINK,
                            SHF_RELA_LIVEPATCH, SHN_LIVEPATCH, SHN_LORESERVE, SHN_UNDEF, SHT_GROUP, SHT_NOBITS,
                            SHT_RELA, SHT_SYMTAB, SHT_SYMTAB_SHNDX, STB_LOCAL, SYM as _SYM)
from emu.elf.module_loader import ElfRel, ModuleLoadError
from emu.elf.relocs import R_X86_64_64

from klp.objects import KSYM_NAME_LEN, MODULE_NAME_LEN
from klpemu.errors import KlpemuError

__all__ = ["ConvertError", "klp_convert", "ANNOTATION_PREFIX"]

ANNOTATION_PREFIX = ".klp.module_relocs."
_ANNOTATION = struct.Struct("<QI")            # struct klp_module_reloc, packed: 12 bytes


class ConvertError(KlpemuError):
    """An annotation or object klp-convert cannot turn into livepatch relocations."""


@dataclass
class _Section:
    name: str
    type: int
    flags: int
    addr: int
    link: int
    info: int
    align: int
    entsize: int
    data: bytes
    size: int                 # sh_size (NOBITS sections have no data)


@dataclass
class _Sym:
    name: str
    info: int
    other: int
    shndx: int
    value: int
    size: int


@dataclass(frozen=True)
class Annotation:
    """One KLP_SYMPOS(): the object a symbol lives in and its position there."""
    objname: str
    sympos: int


def klp_convert(data: bytes) -> bytes:
    """The linked module `data` with its KLP_MODULE_RELOC annotations turned
    into livepatch relocations; `data` itself when it has none."""
    try:
        elf = ElfRel(data, "klp-convert", max(len(data), 1))
    except ModuleLoadError as exc:
        raise ConvertError(f"malformed ELF object: {exc}") from None
    sections = [_Section(s.name, s.type, s.flags, s.addr, s.link, s.info, s.align, s.entsize,
                         s.contents(data), s.size) for s in elf.sections]
    annotated = [i for i, s in enumerate(sections) if s.name.startswith(ANNOTATION_PREFIX)]
    if not annotated:
        return data
    if any(s.type == SHT_SYMTAB_SHNDX for s in sections):
        raise ConvertError("objects with extended section indices are not supported")
    symtab_index = elf.symtab.index
    symbols = [_Sym(s.name, s.bind << 4 | s.type, s.other, s.shndx, s.value, s.size)
               for s in elf.symbols]
    if "livepatch=Y" not in _modinfo(sections):
        raise ConvertError(f"{ANNOTATION_PREFIX}* annotations (KLP_MODULE_RELOC) in a module "
                           "that is not a livepatch: build it with --livepatch")

    notes = _read_annotations(sections, symbols, annotated)
    dropped = set(annotated) | {i for i, s in enumerate(sections)
                                if s.type == SHT_RELA and s.info in annotated}
    for name, note in notes.items():
        sym = next(s for s in symbols if s.name == name and s.shndx == SHN_UNDEF)
        sym.name = f".klp.sym.{note.objname}.{name},{note.sympos}"
        sym.shndx = SHN_LIVEPATCH
    klp_names = {f".klp.sym.{n.objname}.{name},{n.sympos}": n.objname for name, n in notes.items()}

    # move the relocations against annotated symbols into .klp.rela.<obj>.<sec>
    klp_relas: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for i, sec in enumerate(sections):
        if sec.type != SHT_RELA or i in dropped or not sections[sec.info].flags & SHF_ALLOC:
            continue
        keep = []
        for off, info, addend in _RELA.iter_unpack(sec.data):
            objname = klp_names.get(symbols[info >> 32].name)
            if objname is None:
                keep.append((off, info, addend))
            else:
                klp_relas.setdefault((objname, sec.info), []).append((off, info, addend))
        sec.data = b"".join(_RELA.pack(*r) for r in keep)
        sec.size = len(sec.data)
    for (objname, target), relas in klp_relas.items():
        sections.append(_Section(f".klp.rela.{objname}.{sections[target].name}", SHT_RELA,
                                 SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH, 0, symtab_index,
                                 target, 8, _RELA.size, b"".join(_RELA.pack(*r) for r in relas), 0))
        sections[-1].size = len(sections[-1].data)
    return _write(data, elf.shstrndx, sections, symbols, symtab_index, dropped)


def _read_annotations(sections: list[_Section], symbols: list[_Sym],
                      annotated: list[int]) -> dict[str, Annotation]:
    """Every KLP_SYMPOS() of the annotation sections, by symbol name."""
    notes: dict[str, Annotation] = {}
    for index in annotated:
        sec = sections[index]
        objname = sec.name[len(ANNOTATION_PREFIX):]
        if not 0 < len(objname) < MODULE_NAME_LEN or "." in objname:
            raise ConvertError(f"KLP_MODULE_RELOC({objname}): an object name is 1 to "
                               f"{MODULE_NAME_LEN - 1} characters without '.'")
        if sec.type == SHT_NOBITS or sec.size % _ANNOTATION.size:
            raise ConvertError(f"{sec.name}: not an array of struct klp_module_reloc "
                               f"({_ANNOTATION.size} bytes each)")
        relas = {off: (info, addend) for rsec in sections if rsec.type == SHT_RELA and rsec.info == index
                 for off, info, addend in _RELA.iter_unpack(rsec.data)}
        for k in range(sec.size // _ANNOTATION.size):
            info, addend = relas.get(k * _ANNOTATION.size, (0, 0))
            if info & 0xFFFFFFFF != R_X86_64_64.number or not info >> 32:
                raise ConvertError(f"{sec.name}: entry {k} does not point to a symbol "
                                   "(use KLP_SYMPOS(symbol, position))")
            sym = symbols[info >> 32]
            sympos = _ANNOTATION.unpack_from(sec.data, k * _ANNOTATION.size)[1]
            if sym.shndx != SHN_UNDEF:
                # gas names a static by its section symbol and an offset
                name = sym.name or next((s.name for s in symbols if s.shndx == sym.shndx and s.name
                                         and s.value == sym.value + addend), "a local symbol")
                raise ConvertError(f"KLP_SYMPOS({name}, {sympos}) in KLP_MODULE_RELOC({objname}): "
                                   "the symbol is defined in this module; only references to an "
                                   "object's symbols can be converted")
            if addend:
                raise ConvertError(f"{sec.name}: entry {k} does not point to a symbol "
                                   "(use KLP_SYMPOS(symbol, position))")
            if len(sym.name) >= KSYM_NAME_LEN:
                raise ConvertError(f"KLP_SYMPOS({sym.name[:40]}…): symbol names are shorter "
                                   f"than {KSYM_NAME_LEN} characters")
            note = Annotation(objname, sympos)
            if notes.setdefault(sym.name, note) != note:
                old = notes[sym.name]
                raise ConvertError(f"conflicting annotations for {sym.name}: KLP_SYMPOS in "
                                   f"KLP_MODULE_RELOC({old.objname}) at position {old.sympos} "
                                   f"and in KLP_MODULE_RELOC({objname}) at position {sympos}")
    return notes


def _write(data: bytes, shstrndx: int, sections: list[_Section], symbols: list[_Sym],
           symtab_index: int, dropped: set[int]) -> bytes:
    """The object again, without the `dropped` sections and their symbols."""
    if sections[symtab_index].link == shstrndx:
        raise ConvertError("objects whose symbol and section names share a string table "
                           "are not supported")
    sec_map = {}
    for i in range(len(sections)):
        if i not in dropped:
            sec_map[i] = len(sec_map)
    sym_map: dict[int, int] = {}
    kept: list[_Sym] = []
    for i, sym in enumerate(symbols):
        if SHN_UNDEF < sym.shndx < SHN_LORESERVE and sym.shndx in dropped:
            continue
        sym_map[i] = len(kept)
        kept.append(sym)
    for i, sec in enumerate(sections):
        if i not in dropped and (sec.link in dropped or (sec.flags & SHF_INFO_LINK and sec.info in dropped)):
            raise ConvertError(f"section {sec.name} refers to a {ANNOTATION_PREFIX}* section")

    def remap_rela(raw: bytes, what: str) -> bytes:
        out = []
        for off, info, addend in _RELA.iter_unpack(raw):
            if info >> 32 not in sym_map:
                raise ConvertError(f"{what} refers to a symbol of a {ANNOTATION_PREFIX}* section")
            out.append(_RELA.pack(off, sym_map[info >> 32] << 32 | info & 0xFFFFFFFF, addend))
        return b"".join(out)

    strtab = _StringTable()
    sym_rows = [_SYM.pack(strtab.add(s.name), s.info, s.other,
                          sec_map[s.shndx] if SHN_UNDEF < s.shndx < SHN_LORESERVE else s.shndx,
                          s.value, s.size) for s in kept]
    shstrtab = _StringTable()
    headers: list[tuple] = []
    body = bytearray(_EHDR.size)
    for i, sec in enumerate(sections):
        if i in dropped:
            continue
        content, link, info = sec.data, sec_map.get(sec.link, sec.link), sec.info
        if sec.type == SHT_RELA or sec.flags & SHF_INFO_LINK:
            info = sec_map[sec.info]
        if sec.type == SHT_RELA:
            content = remap_rela(sec.data, sec.name)
        elif sec.type == SHT_SYMTAB:
            content = b"".join(sym_rows)
            info = next((k for k, s in enumerate(kept) if s.info >> 4 != STB_LOCAL), len(kept))
        elif i == sections[symtab_index].link:
            content = strtab.data
        elif i == shstrndx:
            continue                      # written last, once every name is known
        elif sec.type == SHT_GROUP:
            words = struct.unpack(f"<{len(sec.data) // 4}I", sec.data)
            content = struct.pack(f"<{len(words)}I", words[0], *(sec_map[w] for w in words[1:]))
            info = sym_map[sec.info]
        headers.append(_place(body, sec, content, shstrtab.add(sec.name), link, info))
    shstr_name = shstrtab.add(sections[shstrndx].name)
    headers.insert(sec_map[shstrndx], _place(body, sections[shstrndx], shstrtab.data, shstr_name,
                                             0, 0))
    while len(body) % 8:
        body.append(0)
    shoff = len(body)
    for row in headers:
        body += _SHDR.pack(*row)
    header = list(_EHDR.unpack_from(data))
    header[6], header[12], header[13] = shoff, len(headers), sec_map[shstrndx]
    body[:_EHDR.size] = _EHDR.pack(*header)
    return bytes(body)


def _place(body: bytearray, sec: _Section, content: bytes, name: int, link: int, info: int) -> tuple:
    """Append a section's content (aligned) to `body`; its header row."""
    if sec.type == SHT_NOBITS or not sec.name and sec.type == 0:
        return (name, sec.type, sec.flags, sec.addr, 0 if sec.type == 0 else len(body),
                sec.size, link, info, sec.align, sec.entsize)
    while len(body) % max(sec.align, 1):
        body.append(0)
    offset = len(body)
    body += content
    return (name, sec.type, sec.flags, sec.addr, offset, len(content), link, info,
            sec.align, sec.entsize)


class _StringTable:
    """An ELF string table built name by name (offset 0 is the empty name)."""

    def __init__(self) -> None:
        self.data = b"\0"
        self._offsets: dict[str, int] = {"": 0}

    def add(self, name: str) -> int:
        if name not in self._offsets:
            self._offsets[name] = len(self.data)
            self.data += name.encode() + b"\0"
        return self._offsets[name]


def _modinfo(sections: list[_Section]) -> list[str]:
    return [e.decode(errors="replace") for s in sections if s.name == ".modinfo"
            for e in s.data.split(b"\0") if e]
