"""Which functions a patch changed, by machine code: objtool's `klp diff`
rules, on one unit's original and patched objects.

Symbols are first correlated (the twin of each patched symbol in the
original): by name, gcc's numeric suffixes aside (`ticket.0`, `foo.isra.1`),
by scope, then by position among the symbols of that name; a static local
goes with the static local of that name used by its function's twin (as
kpatch correlates them). Then every function and object is compared by
its normalised contents: its bytes with each relocated field masked, and
what each relocation refers to: a string by its text, a constant by its
value, anything else by its symbol's name and the offset in it (never by
a section offset, which a change elsewhere in the file moves).

A function whose contents differ is changed; a function without a twin is
new; an object whose contents differ is changed data, which a livepatch
cannot change (klp-build: "changed data"). Some symbols are never
correlated, only copied when used (dont_correlate): strings, the static
locals gcc makes for __func__ and the *_ONCE() macros, special sections.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from emu.elf.format import STT_FUNC, STT_OBJECT, STT_SECTION
from emu.elf.relocs import RELOCATIONS

from klpemu.build.elfobj import ObjectFile, Reloc, Section, Symbol

__all__ = ["demangle", "is_cold", "dont_correlate", "Resolver", "UnitDiff", "diff_unit",
           "masked_code", "PCREL_TYPES"]

R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64 = 2, 4, 24
PCREL_TYPES = frozenset((R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64))

# sections whose contents are tables about other code, never correlated
SPECIAL_SECTIONS = ("__mcount_loc", "__ksymtab", "__ksymtab_strings", ".eh_frame", ".modinfo",
                    ".klpemu_offsets", ".klpemu_unwind_hints", ".comment", ".note.GNU-stack")
SPECIAL_PREFIXES = (".initcall", ".discard.", ".debug_", ".note", ".rela")
# static locals of the kernel's macros: each copy of a function gets its own (klp-diff, kpatch)
UNCORRELATED_STATICS = ("__already_done", "__func__", "__FUNCTION__", "__key", "__warned", "_entry",
                        "_entry_ptr", "_rs", "descriptor", "CSWTCH")
_SUFFIX = re.compile(r"\.\d+")


def demangle(name: str) -> str:
    """The name without gcc's numeric suffixes: foo.isra.0 -> foo.isra, ticket.3 -> ticket."""
    return _SUFFIX.sub("", name)


def is_cold(sym: Symbol) -> bool:
    """A .cold part gcc split off a function: it goes with its parent."""
    return sym.type == STT_FUNC and ".cold" in sym.name


def is_special_section(sec: Section) -> bool:
    return sec.name in SPECIAL_SECTIONS or sec.name.startswith(SPECIAL_PREFIXES)


def is_static_local(sym: Symbol) -> bool:
    return sym.type == STT_OBJECT and sym.is_local and demangle(sym.name) != sym.name


def dont_correlate(sym: Symbol) -> bool:
    """Symbols used in place by a copy of the code, never looked up in the original."""
    if sym.section is None or sym.type not in (STT_FUNC, STT_OBJECT):
        return True
    sec = sym.section
    if sec.is_strings or sec.name.startswith(".rodata.cst") or is_special_section(sec):
        return True
    if sym.name.startswith(("__initcall_", "__ksymtab_", "__kstrtab_")):
        return True
    if sym.type == STT_OBJECT and sym.is_local:
        if sec.name in (".data.once", ".data..once"):
            return True
        base = sym.name.split(".", 1)[0]
        return "." in sym.name and base in UNCORRELATED_STATICS
    return False


def masked_code(sym: Symbol) -> tuple[bytes, list[Reloc]]:
    """The bytes of `sym` with every relocated field zeroed, and the
    relocations that fall in it (offsets within the section)."""
    sec = sym.section
    start, size = sym.value, sym.size
    data = bytearray(sec.data[start:start + size]) if sec.data else bytearray(size)
    inside = []
    for r in sorted(sec.relocs, key=lambda r: r.offset):
        off = r.offset - start
        if 0 <= off < size:
            width = RELOCATIONS[r.type].width if r.type in RELOCATIONS else 0
            data[off:off + width] = bytes(width)
            inside.append(r)
    return bytes(data), inside


class Resolver:
    """What the relocations of one object refer to."""

    def __init__(self, obj: ObjectFile) -> None:
        self.obj = obj
        self.by_section: dict[int, list[Symbol]] = {}
        for s in obj.symbols:
            if s.section is not None and s.type in (STT_FUNC, STT_OBJECT):
                self.by_section.setdefault(id(s.section), []).append(s)

    @staticmethod
    def target_offset(r: Reloc) -> int:
        """The addend as an offset into the target: a PC-relative field ends
        4 bytes before the instruction's end that the CPU counts from."""
        return r.addend + 4 if r.type in PCREL_TYPES else r.addend

    def target(self, r: Reloc) -> tuple[Symbol | None, int]:
        """The named symbol a relocation refers to and the addend relative to
        it; (None, addend) when it points into a section at no symbol."""
        sym = r.symbol
        if sym.type != STT_SECTION:
            return sym, r.addend
        candidates = self.by_section.get(id(sym.section), [])
        sec = sym.section
        whole = [s for s in candidates if s.value == 0 and s.size == sec.size]
        if len(whole) == 1:
            return whole[0], r.addend
        at = self.target_offset(r)
        inside = [s for s in candidates if s.value <= at < s.value + max(s.size, 1)]
        if len(inside) == 1:
            return inside[0], r.addend - inside[0].value
        return None, r.addend

    def key(self, r: Reloc) -> tuple:
        """What the relocation refers to, independent of where it is laid out."""
        sec = r.symbol.section
        pos = self.target_offset(r) + (r.symbol.value if r.symbol.type != STT_SECTION else 0)
        if sec is not None and sec.is_strings:
            end = sec.data.find(b"\0", pos)
            return ("string", bytes(sec.data[pos:end if end >= 0 else None]))
        if sec is not None and sec.name.startswith(".rodata.cst"):
            return ("constant", bytes(sec.data[pos:pos + max(sec.entsize, 1)]))
        sym, addend = self.target(r)
        if sym is None:
            return ("section", demangle(sec.name) if sec is not None else "", r.addend)
        return ("symbol", demangle(sym.name), addend)

    def references(self, sym: Symbol) -> list[Symbol]:
        """The named symbols the contents of `sym` refer to."""
        _data, relocs = masked_code(sym)
        return [t for t in (self.target(r)[0] for r in relocs) if t is not None]


@dataclass
class UnitDiff:
    """One unit's original and patched objects, correlated and compared."""

    unit: str
    orig: ObjectFile
    patched: ObjectFile
    twins: dict[int, Symbol] = field(default_factory=dict)       # id(patched) -> orig
    changed: list[Symbol] = field(default_factory=list)          # patched functions
    new: list[Symbol] = field(default_factory=list)              # patched functions
    changed_data: list[tuple[Symbol, Symbol]] = field(default_factory=list)   # (orig, patched)

    def twin(self, sym: Symbol) -> Symbol | None:
        return self.twins.get(id(sym))


def _candidates(obj: ObjectFile) -> list[Symbol]:
    return [s for s in obj.symbols if not dont_correlate(s)]


def _pair(diff: UnitDiff, orig: list[Symbol], patched: list[Symbol]) -> None:
    """Correlate two lists of same-named, same-kind symbols: by exact name,
    then a lone pair, then by position when the counts agree."""
    taken = {id(o) for o in diff.twins.values()}
    orig = [o for o in orig if id(o) not in taken]
    patched = [p for p in patched if id(p) not in diff.twins]
    for p in list(patched):
        same = [o for o in orig if o.name == p.name]
        if len(same) == 1 and sum(q.name == p.name for q in patched) == 1:
            diff.twins[id(p)] = same[0]
            orig.remove(same[0])
            patched.remove(p)
    if len(orig) == len(patched):
        for o, p in zip(orig, patched):
            diff.twins[id(p)] = o


def _correlate(diff: UnitDiff) -> None:
    orig, patched = _candidates(diff.orig), _candidates(diff.patched)

    def groups(syms: list[Symbol], statics: bool) -> dict[tuple, list[Symbol]]:
        out: dict[tuple, list[Symbol]] = {}
        for s in syms:
            if is_static_local(s) == statics:
                out.setdefault((demangle(s.name), s.type, s.is_local), []).append(s)
        return out

    og, pg = groups(orig, False), groups(patched, False)
    for key, syms in pg.items():
        _pair(diff, og.get(key, []), syms)
    # a static local goes with the one of its name that its function's twin uses
    orig_res, patched_res = Resolver(diff.orig), Resolver(diff.patched)
    users: dict[int, list[Symbol]] = {}
    for f in diff.patched.symbols:
        if f.type == STT_FUNC and f.section is not None:
            for t in patched_res.references(f):
                users.setdefault(id(t), []).append(f)
    taken = {id(o) for o in diff.twins.values()}
    for s in [p for p in patched if is_static_local(p)]:
        for f in users.get(id(s), []):
            twin_f = diff.twin(f)
            if twin_f is None:
                continue
            used = [t for t in orig_res.references(twin_f) if is_static_local(t)
                    and demangle(t.name) == demangle(s.name) and id(t) not in taken]
            if len(used) == 1:
                diff.twins[id(s)] = used[0]
                taken.add(id(used[0]))
                break
    og, pg = groups(orig, True), groups(patched, True)
    for key, syms in pg.items():
        _pair(diff, og.get(key, []), syms)


def _fingerprint(res: Resolver, sym: Symbol, cold: dict[str, Symbol]) -> tuple:
    data, relocs = masked_code(sym)
    refs = tuple((r.offset - sym.value, r.type, res.key(r)) for r in relocs)
    part = cold.get(demangle(sym.name) + ".cold")
    tail = _fingerprint(res, part, {}) if part is not None else ()
    return (sym.type, sym.size, data, refs, tail)


def diff_unit(unit: str, orig: ObjectFile, patched: ObjectFile) -> UnitDiff:
    """Correlate and compare the original and patched objects of `unit`."""
    diff = UnitDiff(unit, orig, patched)
    _correlate(diff)
    orig_res, patched_res = Resolver(orig), Resolver(patched)
    orig_cold = {demangle(s.name): s for s in orig.symbols if is_cold(s)}
    patched_cold = {demangle(s.name): s for s in patched.symbols if is_cold(s)}
    for p in _candidates(patched):
        o = diff.twin(p)
        if p.type == STT_FUNC and is_cold(p):
            continue                        # compared as part of its parent
        if o is None:
            if p.type == STT_FUNC:
                diff.new.append(p)
            continue
        if _fingerprint(orig_res, o, orig_cold) != _fingerprint(patched_res, p, patched_cold):
            if p.type == STT_FUNC:
                diff.changed.append(p)
            else:
                diff.changed_data.append((o, p))
    return diff
