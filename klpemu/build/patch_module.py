"""The livepatch module made from the changed functions (klp-diff's
cloning, plus klp-build's init.c and `objtool klp post-link`).

Every changed and new function is copied, code and relocations, from the
patched object into one object of the module, together with what it
needs and vmlinux cannot give it: the strings and constants it uses,
new data, the static locals of the kernel's macros. Each relocation is
then one of three kinds:

- to something copied into the module: a plain relocation to the copy;
- to a symbol vmlinux exports (or __fentry__): a plain relocation that the
  module loader resolves;
- to anything else of the original kernel (a static variable or function,
  an unexported global): a livepatch relocation against
  `.klp.sym.vmlinux.NAME,SYMPOS`, the position counted as kallsyms counts
  (Documentation/livepatch/module-elf-format.rst), written by the
  livepatch core when the module loads.

A generated C file declares the klp_func table (one entry per changed
function, under the original's name and sympos), the klp_object and the
klp_patch (replace set, as klp-build sets it, unless --no-replace), and
enables it from module_init. It is compiled against fixtures/include and
linked with `ld -r` with the copies and the struct module that modpost
would write. ld does not keep SHN_LIVEPATCH symbols or SHF_RELA_LIVEPATCH
sections, so the livepatch relocations go through the link as plain
relocations against undefined `.klp.sym.*` symbols, and are moved into
`.klp.rela.vmlinux.<section>` afterwards (post-link).
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from emu.elf.format import (SHF_ALLOC, SHN_LIVEPATCH, SHN_UNDEF, SHT_PROGBITS, STB_GLOBAL, STB_WEAK, STT_FUNC,
                            STT_NOTYPE, STT_SECTION)

from klpemu.build.compile import INCLUDE, THIS_MODULE_C, BuildError, kernel_cflags
from klpemu.build.elfobj import ObjectFile, Reloc, Section, Symbol, read_object, write_object
from klpemu.build.objdiff import Resolver, UnitDiff, dont_correlate, is_cold
from klpemu.build.vmlinux_symbols import ImageSymbol, VmlinuxSymbols

__all__ = ["KlpFuncEntry", "KlpReference", "PatchModule", "build_patch_module", "post_link"]

KLP_SYM_PREFIX = ".klp.sym."
R_X86_64_64 = 1
ALIAS_PREFIX = "__klpemu_new_func_"


@dataclass(frozen=True)
class KlpFuncEntry:
    """One klp_func of the module."""

    old_name: str
    sympos: int
    unit: str
    new_name: str             # the copy's symbol in the module


@dataclass(frozen=True)
class KlpReference:
    """A reference of a copied function that became a livepatch relocation."""

    referrer: str
    symbol: str
    sympos: int
    why: str


@dataclass
class PatchModule:
    """What went into the module object: copies, klp_funcs, references."""

    obj: ObjectFile
    funcs: list[KlpFuncEntry] = field(default_factory=list)
    klp_references: list[KlpReference] = field(default_factory=list)
    exported_references: set[str] = field(default_factory=set)


class _Cloner:
    """Copies symbols from the patched objects into the module object."""

    def __init__(self, image: VmlinuxSymbols, diffs: list[UnitDiff]) -> None:
        self.image = image
        self.diffs = diffs
        self.out = PatchModule(ObjectFile("livepatch"))
        self.resolvers = {id(d): Resolver(d.patched) for d in diffs}
        self.clones: dict[int, Symbol] = {}
        self.section_clones: dict[int, Section] = {}
        self.externals: dict[str, Symbol] = {}
        self.included = {id(s) for d in diffs for s in d.changed + d.new}
        for d in diffs:                                   # a .cold part goes with its function
            parents = {s.name for s in d.changed + d.new}
            self.included |= {id(s) for s in d.patched.symbols
                              if is_cold(s) and s.name.split(".cold")[0] in parents}
        # globals the patch defines: included functions and new symbols, by name
        self.patch_globals: dict[str, tuple[UnitDiff, Symbol]] = {}
        for d in diffs:
            for s in d.patched.symbols:
                if (not s.is_local and s.section is not None and s.type != STT_SECTION
                        and (id(s) in self.included or d.twin(s) is None)):
                    self.patch_globals[s.name] = (d, s)

    # ---------------------------------------------------------------- symbols
    def clone(self, d: UnitDiff, sym: Symbol) -> Symbol:
        """The module's copy of `sym` (its bytes and relocations)."""
        if id(sym) in self.clones:
            return self.clones[id(sym)]
        src = sym.section
        data = src.data[sym.value:sym.value + sym.size] if src.data else b""
        sec = Section(src.name, src.type, src.flags, src.align, src.entsize, data, sym.size)
        copy = Symbol(sym.name, sym.bind, sym.type, 0, sym.size, sec, other=sym.other)
        self.clones[id(sym)] = copy
        self.out.obj.sections.append(sec)
        self.out.obj.symbols.append(copy)
        for r in src.relocs:
            if sym.value <= r.offset < sym.value + max(sym.size, 1):
                target, addend = self.reference(d, sym, r)
                sec.relocs.append(Reloc(r.offset - sym.value, r.type, target, addend))
        if sym.type == STT_FUNC:
            for part in d.patched.symbols:
                if id(part) in self.included and is_cold(part) and part.name.startswith(sym.name + "."):
                    self.clone(d, part)
        return copy

    def clone_section(self, d: UnitDiff, src: Section) -> Section:
        """A whole copy of a section the code points into at no symbol
        (strings, constants): referenced at the same offsets."""
        if id(src) in self.section_clones:
            return self.section_clones[id(src)]
        sec = Section(src.name, src.type, src.flags, src.align, src.entsize, src.data, src.size)
        self.section_clones[id(src)] = sec
        self.out.obj.sections.append(sec)
        for r in src.relocs:
            sec.relocs.append(Reloc(r.offset, r.type, *self.reference(d, None, r)))
        return sec

    def external(self, name: str, bind: int = STB_GLOBAL) -> Symbol:
        """An undefined symbol of the module: a vmlinux export, a weak
        symbol nothing defines, or a `.klp.sym.*` name for post-link."""
        if name not in self.externals:
            self.externals[name] = Symbol(name, bind, STT_NOTYPE)
            self.out.obj.symbols.append(self.externals[name])
        return self.externals[name]

    def sympos(self, isym: ImageSymbol) -> int:
        pos = self.image.sympos(isym)
        if pos is None:
            raise BuildError(f"{isym.name} has no size in the kernel that boots: kallsyms does not list "
                             f"it, so the livepatch core could not find it")
        return pos

    def klp_symbol(self, referrer: Symbol | None, name: str, file: str | None, why: str) -> Symbol:
        isym = self.image.find(name, file)
        if isym is None:
            where = f"{referrer.name} refers to" if referrer is not None else "the patch refers to"
            raise BuildError(f"{where} {name}, which the kernel that boots does not have")
        sympos = self.sympos(isym)
        ref = KlpReference(referrer.name if referrer is not None else "(data)", name, sympos, why)
        if ref not in self.out.klp_references:
            self.out.klp_references.append(ref)
        return self.external(f"{KLP_SYM_PREFIX}vmlinux.{name},{sympos}")

    # ---------------------------------------------------------------- relocations
    def reference(self, d: UnitDiff, referrer: Symbol | None, r: Reloc) -> tuple[Symbol, int]:
        """The module's target and addend for relocation `r` of `d`'s patched object."""
        rsym = r.symbol
        sec = rsym.section
        target, addend = self.resolvers[id(d)].target(r)
        if sec is not None and (target is None or sec.is_strings or sec.name.startswith(".rodata.cst")):
            copy = self.clone_section(d, sec)
            if rsym.type == STT_SECTION:
                return self.out.obj.section_symbol(copy), r.addend
            return self.out.obj.section_symbol(copy), r.addend + rsym.value
        assert target is not None
        if target.section is None:
            return self.undefined(referrer, target), addend
        if id(target) in self.included or dont_correlate(target) or d.twin(target) is None:
            return self.clone(d, target), addend
        twin = d.twin(target)
        if not twin.is_local and twin.name in self.image.exports:
            self.out.exported_references.add(twin.name)
            return self.external(twin.name), addend
        why = "static" if twin.is_local else "not exported"
        return self.klp_symbol(referrer, twin.name, Path(d.unit).name if twin.is_local else None,
                               why), addend

    def undefined(self, referrer: Symbol | None, sym: Symbol) -> Symbol:
        """A symbol the unit did not define: another unit's (the patch's own,
        or vmlinux's), or a weak one that nothing defines (0, as in vmlinux)."""
        name = sym.name
        if name in self.patch_globals:
            other, sym = self.patch_globals[name]
            return self.clone(other, sym)
        if name in self.image.exports or name == "__fentry__":
            if name != "__fentry__":
                self.out.exported_references.add(name)
            return self.external(name)
        if self.image.find_global(name) is not None:
            return self.klp_symbol(referrer, name, None, "not exported")
        if sym.bind == STB_WEAK:
            return self.external(name, STB_WEAK)
        who = referrer.name if referrer is not None else "the patch"
        raise BuildError(f"{who} refers to {name}, which neither the kernel nor the patch defines")

    # ---------------------------------------------------------------- tables
    def add_mcount_entries(self) -> None:
        """__mcount_loc entries of the copied functions, so that the module
        loader turns their fentry calls into NOPs."""
        table = Section("__mcount_loc", SHT_PROGBITS, SHF_ALLOC, 8, 0)
        entries = bytearray()
        for d in self.diffs:
            mcount = d.patched.section("__mcount_loc")
            if mcount is None:
                continue
            res = self.resolvers[id(d)]
            for r in mcount.relocs:
                func, offset = res.target(r)
                if func is not None and id(func) in self.clones:
                    table.relocs.append(Reloc(len(entries), R_X86_64_64, self.clones[id(func)], offset))
                    entries.extend(bytes(8))
        if entries:
            table.data, table.size = bytes(entries), len(entries)
            self.out.obj.sections.append(table)

    def add_func(self, d: UnitDiff, sym: Symbol) -> None:
        twin = d.twin(sym)
        isym = self.image.find(twin.name, Path(d.unit).name if twin.is_local else None)
        if isym is None:
            raise BuildError(f"{twin.name} ({d.unit}) is not in the kernel that boots")
        copy = self.clones[id(sym)]
        alias = Symbol(f"{ALIAS_PREFIX}{len(self.out.funcs)}", STB_GLOBAL, STT_FUNC, 0, 0, copy.section)
        self.out.obj.symbols.append(alias)
        self.out.funcs.append(KlpFuncEntry(twin.name, self.sympos(isym), d.unit, sym.name))


def clone_changes(image: VmlinuxSymbols, diffs: list[UnitDiff]) -> PatchModule:
    """The module object: every changed and new function with what it needs."""
    c = _Cloner(image, diffs)
    for d in diffs:
        for sym in d.changed + d.new:
            c.clone(d, sym)
    for d in diffs:
        for sym in d.changed:
            c.add_func(d, sym)
    c.add_mcount_entries()
    c.out.obj.sections.append(Section(".note.GNU-stack", SHT_PROGBITS, 0, 1, 0))
    return c.out


def init_source(module: PatchModule, replace: bool, description: str) -> str:
    """The C that declares and enables the patch (klp-build's init.c, for one object)."""
    lines = ["/* Generated by `klpemu build --from-patch`. */",
             "#include <linux/module.h>", "#include <linux/kernel.h>", "#include <linux/livepatch.h>", ""]
    lines += [f"extern char {ALIAS_PREFIX}{i}[];" for i in range(len(module.funcs))]
    lines += ["", "static struct klp_func funcs[] = {"]
    for i, f in enumerate(module.funcs):
        lines.append(f'\t{{ .old_name = "{f.old_name}", .new_func = {ALIAS_PREFIX}{i}, '
                     f".old_sympos = {f.sympos} }},")
    lines += ["\t{ }", "};", "",
              "static struct klp_object objs[] = {",
              "\t{ .name = NULL, .funcs = funcs },   /* vmlinux */", "\t{ }", "};", "",
              "static struct klp_patch patch = {",
              "\t.mod = THIS_MODULE,", "\t.objs = objs,", f"\t.replace = {'true' if replace else 'false'},",
              "};", "",
              "static int __init livepatch_init(void)", "{", "\treturn klp_enable_patch(&patch);", "}", "",
              "static void __exit livepatch_exit(void)", "{", "}", "",
              "module_init(livepatch_init);", "module_exit(livepatch_exit);",
              'MODULE_LICENSE("GPL");', 'MODULE_INFO(livepatch, "Y");',
              f"MODULE_DESCRIPTION({_c_string(description)});", ""]
    return "\n".join(lines)


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def post_link(data: bytes, name: str) -> bytes:
    """The linked module with every relocation against a `.klp.sym.*`
    symbol moved into `.klp.rela.<obj>.<section>`, and those symbols
    marked SHN_LIVEPATCH (objtool klp post-link)."""
    obj = read_object(data, name)
    klp = {id(s) for s in obj.symbols if s.name.startswith(KLP_SYM_PREFIX) and s.shndx == SHN_UNDEF}
    if not klp:
        return data
    for s in obj.symbols:
        if id(s) in klp:
            s.shndx = SHN_LIVEPATCH
    for sec in obj.sections:
        keep = []
        for r in sec.relocs:
            if id(r.symbol) in klp:
                objname = r.symbol.name[len(KLP_SYM_PREFIX):].split(".", 1)[0]
                sec.klp_relocs.setdefault(objname, []).append(r)
            else:
                keep.append(r)
        sec.relocs = keep
    return write_object(obj)


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise BuildError(f"{cmd[0]} failed:\n{proc.stderr}{proc.stdout}".rstrip())


def build_patch_module(module: PatchModule, output: Path, module_name: str, replace: bool,
                       description: str) -> Path:
    """Compile the init code, link it with the copies and the struct module
    into `output`, then move the livepatch relocations into place."""
    flags = [*kernel_cflags(), f"-I{INCLUDE}", "-DMODULE", f'-DKBUILD_MODNAME="{module_name}"']
    with tempfile.TemporaryDirectory(prefix="klpemu-lp-") as tmp:
        work = Path(tmp)
        (work / "init.c").write_text(init_source(module, replace, description))
        (work / f"{module_name}.mod.c").write_text(THIS_MODULE_C)
        (work / "diff.o").write_bytes(write_object(module.obj))
        _run(["gcc", *flags, "-c", "init.c", "-o", "init.o"], work)
        _run(["gcc", *flags, "-c", f"{module_name}.mod.c", "-o", "mod.o"], work)
        _run(["ld", "-r", "-o", "linked.ko", "init.o", "diff.o", "mod.o"], work)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(post_link((work / "linked.ko").read_bytes(), output.name))
    return output
