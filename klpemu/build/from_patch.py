"""`klpemu build --from-patch`: the kernel's klp-build, on the guest kernel.

From source patches to a livepatch module, in klp-build's steps:

1. validate the patches (what they touch: no assembly, nothing outside
   the kernel's sources);
2. build the original kernel with -ffunction-sections -fdata-sections,
   once, cached, checked against the image that boots
   (klpemu/build/kernel_tree.py, image_check.py);
3. apply the patches to a copy of the sources (patch's own output when
   one does not apply), keep __LINE__ where nothing changed, rebuild the
   units that changed or include a changed header;
4. diff each changed unit by machine code (klpemu/build/objdiff.py):
   changed data is refused, as klp-build refuses it; no changed function
   is "no changes detected";
5. refuse what cannot be livepatched safely, from `klpemu hazards`
   (klp/hazard.py): a notrace function, and on the legacy kernel a
   function that switches stacks without saving RIP or what gcc inlined
   into it;
6. make the module (klpemu/build/patch_module.py): one klp_func per
   changed function, atomic replace on unless --no-replace.

Every refusal names the symbol and the reason (PatchRefused.refusals).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from emu.elf.format import STT_FUNC
from klp.hazard import image_hazards, inlined_into
from klpemu.build.c_functions import functions_at
from klpemu.build.compile import MODULE_NAME, BuildError
from klpemu.build.elfobj import ObjectError, ObjectFile, Symbol, read_object
from klpemu.build.kernel_tree import OriginalBuild, compile_units, flavour, kernel_units, object_path
from klpemu.build.objdiff import Resolver, UnitDiff, demangle, diff_unit, is_static_local, masked_code
from klpemu.build.original import original_build
from klpemu.build.patch_module import KlpReference, build_patch_module, clone_changes
from klpemu.build.patches import Patch, apply_patches, changed_lines, keep_line_numbers, read_patch
from klpemu.build.vmlinux_symbols import ImageReadError, VmlinuxSymbols

__all__ = ["Refusal", "PatchRefused", "FunctionReport", "FromPatchResult", "build_from_patch",
           "module_name_for"]

CLONE_KINDS = ("isra", "constprop", "part", "cold")
SHADOW_HINT = ("a livepatch replaces functions, not data: keep the old data and attach what the fix "
               "needs with shadow variables (klp_shadow_get_or_alloc(), "
               "Documentation/livepatch/shadow-vars.rst)")


@dataclass(frozen=True)
class Refusal:
    """Why one symbol stops the build."""

    symbol: str
    reason: str


class PatchRefused(BuildError):
    """The patch cannot be made into a livepatch; .refusals says what and why."""

    def __init__(self, summary: str, refusals: list[Refusal]) -> None:
        self.summary = summary
        self.refusals = list(refusals)
        super().__init__("\n".join([summary, *(f"  {r.symbol}: {r.reason}" for r in refusals)]))


@dataclass(frozen=True)
class FunctionReport:
    """A function the module carries, and why."""

    name: str                 # its name in the patched build (and the module)
    unit: str
    status: str               # "changed" (a klp_func) or "new"
    old_name: str | None = None
    sympos: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass
class FromPatchResult:
    output: Path
    module_name: str
    replace: bool
    kernel: str
    functions: list[FunctionReport]
    klp_references: list[KlpReference]
    exported_references: list[str]
    warnings: list[str] = field(default_factory=list)
    rebuilt_units: list[str] = field(default_factory=list)
    original_cached: bool = False
    seconds: float = 0.0

    @property
    def patched_functions(self) -> list[str]:
        """The old_name of every klp_func, in table order."""
        return [f.old_name for f in self.functions if f.status == "changed"]

    def report(self, verbose: bool = False) -> str:
        """What the build made: klp diff's lines; with `verbose`, why each
        function is in, and every livepatch relocation."""
        out = [f"{f.unit}: {f.status} function: {f.name}" for f in self.functions]
        if verbose:
            out = []
            for f in self.functions:
                head = f"{f.unit}: {f.status} function: {f.name}"
                if f.status == "changed":
                    head += f" (klp_func {f.old_name}, sympos {f.sympos})"
                out.append(head)
                out.extend(f"    {reason}" for reason in f.reasons)
            for r in self.klp_references:
                out.append(f"klp relocation: {r.referrer} -> .klp.sym.vmlinux.{r.symbol},{r.sympos} "
                           f"({r.symbol} is {r.why})")
            if self.exported_references:
                out.append("exported, plain relocations: " + ", ".join(sorted(self.exported_references)))
            out.append(f"original build: {'cached' if self.original_cached else 'built now'}; "
                       f"rebuilt: {', '.join(self.rebuilt_units)}; {self.seconds:.2f} s")
        out.append(f"{self.output}: livepatch {self.module_name} for the {self.kernel} kernel, "
                   f"{len(self.patched_functions)} function(s) patched, atomic replace "
                   f"{'on' if self.replace else 'off'}")
        return "\n".join(out)


def module_name_for(patches: list[Path], output: Path | None) -> tuple[str, Path]:
    """The module name and output path. klp-build's default is
    livepatch-<patch>.ko; the module is named with '_' for '-', as kbuild
    names it, and so is the default file, so that the file, the module and
    /sys/kernel/livepatch/<name> agree."""
    if output is not None:
        if not output.name.endswith(".ko"):
            raise BuildError(f"{output}: output filename should end with .ko")
        stem = output.name[:-3]
    else:
        stem = "livepatch-" + (Path(patches[0]).name.rsplit(".", 1)[0] if len(patches) == 1 else "patch")
    name = re.sub(r"[^A-Za-z0-9_-]", "-", stem)[:55].replace("-", "_")
    if not MODULE_NAME.fullmatch(name):
        raise BuildError(f"{stem}: not a module name (1 to 55 letters, digits, '_' or '-')")
    return name, output if output is not None else Path(f"{name}.ko")


def _hazards(orig: OriginalBuild) -> dict[str, list[str]]:
    """`klpemu hazards` of the image, by function (kept with the original build)."""
    path = orig.root / "hazards.json"
    if path.exists():
        return json.loads(path.read_text())
    found: dict[str, list[str]] = {}
    for h in image_hazards(orig.flavour.image):
        found.setdefault(h.function, []).append(h.reason)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(found))
    os.replace(tmp, path)
    return found


def _changed_files(orig_src: Path, tree: Path) -> tuple[list[str], list[str]]:
    """Files of kernel/ and include/ that differ from the original: (changed or new, deleted)."""
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for d in ("kernel", "include")
                for p in (root / d).rglob("*") if p.is_file()}
    before, after = files(orig_src), files(tree)
    changed = sorted(f for f in after if before.get(f) != after[f])
    return changed, sorted(set(before) - set(after))


def _data_name(d: UnitDiff, sym: Symbol) -> str:
    """A data symbol as the author wrote it: a static local with its function."""
    if not is_static_local(sym):
        return sym.name
    res = Resolver(d.orig)
    users = [f.name for f in d.orig.symbols if f.type == STT_FUNC and f.section is not None
             and any(t is sym for t in res.references(f))]
    owner = f" of {users[0]}()" if len(users) == 1 else ""
    return f"{demangle(sym.name)} (static local{owner}, {sym.name})"


def _read(path: Path, unit: str) -> ObjectFile:
    try:
        return read_object(path.read_bytes(), unit)
    except (OSError, ObjectError) as exc:
        raise BuildError(f"cannot read the object of {unit}: {exc}") from None


class _Explainer:
    """Why each function of the module is in it, for the report."""

    def __init__(self, edited: set[str], edited_by_unit: dict[str, set[str]]) -> None:
        self.edited = edited
        self.edited_by_unit = edited_by_unit

    @staticmethod
    def base(name: str) -> str:
        return name.split(".", 1)[0]

    def reasons(self, d: UnitDiff, sym: Symbol, inlined: dict[str, set[str]],
                status: str) -> tuple[str, ...]:
        base = self.base(sym.name)
        out = []
        kind = next((k for k in CLONE_KINDS if f".{k}" in sym.name), None)
        if kind == "cold":
            out.append(f"the .cold part gcc split off {base}")
        elif kind:
            out.append(f"gcc's .{kind} clone of {base}: the clone is what runs, under its own name")
        if base in self.edited_by_unit.get(d.unit, set()):
            out.append(f"the patch edits {base}" if status == "changed" else f"the patch adds {base}")
        inl = sorted(i for i in inlined.get(base, set()) if i in self.edited and i != base)
        if inl:
            out.append(f"gcc inlined {', '.join(inl)} into it, which the patch edits")
        if status == "changed" and not inl and base not in self.edited_by_unit.get(d.unit, set()):
            out.append(self.difference(d, sym))
        elif status == "new" and not out:
            out.append("gcc made it for the patched code")
        return tuple(out)

    def difference(self, d: UnitDiff, sym: Symbol) -> str:
        """Where the machine code first differs, for a function the patch does not edit."""
        orig = d.twin(sym)
        old, old_relocs = masked_code(orig)
        new, new_relocs = masked_code(sym)
        at = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        old_res, new_res = Resolver(d.orig), Resolver(d.patched)
        moved = next((r.offset - sym.value for o, r in zip(old_relocs, new_relocs)
                      if (o.offset - orig.value, old_res.key(o)) != (r.offset - sym.value, new_res.key(r))),
                     None)
        if moved is not None and moved < at:
            at = moved
        text = f"its machine code changed (first at +{at:#x})"
        inlined_only = sorted(e for e in self.edited_by_unit.get(d.unit, set())
                              if not any(s.name.split(".", 1)[0] == e for s in d.orig.symbols))
        if inlined_only:
            text += (f": the patch edits {', '.join(inlined_only)}, which gcc inlines wherever it "
                     "is called (no copy of its own)")
        return text


def _edited_functions(orig_src: Path, tree_before_fix: dict[str, str], changed: list[str]
                      ) -> tuple[set[str], dict[str, set[str]]]:
    """The functions the patch edits, in all files and by unit (from the source lines)."""
    edited: set[str] = set()
    by_file: dict[str, set[str]] = {}
    for f in changed:
        if not f.endswith((".c", ".h")):
            continue
        old_text = (orig_src / f).read_text(errors="replace") if (orig_src / f).exists() else ""
        new_text = tree_before_fix[f]
        old_lines, new_lines = changed_lines(old_text.splitlines(), new_text.splitlines())
        names = set(functions_at(old_text, old_lines)) | set(functions_at(new_text, new_lines))
        edited |= names
        by_file[f] = names
    return edited, by_file


def _check_hazards(orig: OriginalBuild, diffs: list[UnitDiff], edited: set[str],
                   image: VmlinuxSymbols) -> None:
    """Refuse changed functions `klpemu hazards` lists (notrace; on legacy,
    what switches stacks without saving RIP and what is inlined into it)."""
    hazards = _hazards(orig)
    refusals = []
    changed = {d.twin(s).name for d in diffs for s in d.changed}
    for d in diffs:
        for s in d.changed:
            old = d.twin(s)
            isym = image.find(old.name, Path(d.unit).name if old.is_local else None)
            if isym is not None and not image.has_fentry(isym):
                refusals.append(Refusal(old.name, "function has no fentry/mcount call, unable to patch "
                                                  "(notrace: ftrace cannot redirect it)"))
                continue
            refusals.extend(Refusal(old.name, f"klpemu hazards: {reason}")
                            for reason in hazards.get(old.name, []) if not reason.startswith("notrace"))
    for name in sorted(edited - changed):
        for reason in hazards.get(name, []):
            container = re.match(r"inlined into (\S+?),", reason)
            if container and container[1] in changed:
                refusals.append(Refusal(name, f"the patch edits it; klpemu hazards: {reason}"))
    if refusals:
        raise PatchRefused(f"cannot livepatch the {orig.flavour.name} kernel this way:", refusals)


def build_from_patch(patches: list[Path], output: Path | None = None, *, replace: bool = True,
                     kernel: str = "modern", cache_dir: Path | None = None) -> FromPatchResult:
    """Build a livepatch module for the guest kernel from source patches.
    BuildError (PatchRefused for what cannot be livepatched) on failure."""
    started = time.perf_counter()
    if not patches:
        raise BuildError("no patch given")
    for p in patches:
        if not Path(p).is_file():
            raise BuildError(f"{p} doesn't exist")
    parsed: list[Patch] = [read_patch(Path(p)) for p in patches]
    module_name, output = module_name_for([Path(p) for p in patches], output)
    fl = flavour(kernel)
    orig, cached = original_build(fl, cache_dir)
    try:
        image = VmlinuxSymbols(fl.image)
    except ImageReadError as exc:
        raise BuildError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="klpemu-klp-build-") as tmp:
        tree = Path(tmp) / "fixtures"
        shutil.copytree(orig.src, tree)
        warnings = apply_patches(parsed, tree)
        changed, deleted = _changed_files(orig.src, tree)
        warnings += [f"{f}: deleted by the patch; its functions stay in the running kernel"
                     for f in deleted]
        patched_text = {f: (tree / f).read_text(errors="replace") for f in changed
                        if f.endswith((".c", ".h"))}
        for f, text in patched_text.items():
            if (orig.src / f).exists():
                (tree / f).write_text(keep_line_numbers((orig.src / f).read_text(errors="replace"), text))
        units = kernel_units(tree)
        rebuild = [u for u in units if u in changed or not orig.object(u).exists()
                   or orig.dependencies(u) & set(changed)]
        if not rebuild:
            raise PatchRefused("no changes detected", [Refusal(f, "no kernel unit is compiled from it")
                                                       for f in changed])
        objdir = Path(tmp) / "obj"
        compile_units(tree, rebuild, orig.build_flags, objdir)
        diffs = []
        for u in rebuild:
            new_obj = object_path(objdir, u)
            if orig.object(u).exists() and orig.object(u).read_bytes() == new_obj.read_bytes():
                continue
            old = _read(orig.object(u), u) if orig.object(u).exists() else ObjectFile(u)
            d = diff_unit(u, old, _read(new_obj, u))
            if d.changed or d.new or d.changed_data:
                diffs.append(d)
        if not diffs:
            raise PatchRefused("no changes detected", [Refusal(u, "the patched build has the same "
                                                                  "machine code") for u in rebuild])
        data = [(d, o) for d in diffs for o, _p in d.changed_data]
        if data:
            raise PatchRefused("changed data: a livepatch cannot change initialised or static data",
                               [Refusal(_data_name(d, o), f"changed data ({d.unit}): {SHADOW_HINT}")
                                for d, o in data])
        if not any(d.changed for d in diffs):
            new = [Refusal(s.name, "a new function that no changed function uses")
                   for d in diffs for s in d.new]
            raise PatchRefused("no changes detected", new)
        edited, by_file = _edited_functions(orig.src, patched_text, changed)
        _check_hazards(orig, diffs, edited, image)
        module = clone_changes(image, [d for d in diffs if d.changed or d.new])
        explain = _Explainer(edited, by_file)
        functions = []
        entries = iter(module.funcs)
        for d in diffs:
            bases = {_Explainer.base(s.name) for s in d.changed + d.new}
            inlined: dict[str, set[str]] = {}
            for callee, callers in inlined_into(object_path(objdir, d.unit), bases).items():
                for c in callers:
                    inlined.setdefault(c, set()).add(callee)
            for s in d.changed:
                entry = next(entries)
                functions.append(FunctionReport(s.name, d.unit, "changed", entry.old_name, entry.sympos,
                                                explain.reasons(d, s, inlined, "changed")))
            functions.extend(FunctionReport(s.name, d.unit, "new",
                                            reasons=explain.reasons(d, s, inlined, "new"))
                             for s in d.new)
        description = "klpemu build --from-patch " + " ".join(Path(p).name for p in patches)
        build_patch_module(module, Path(output), module_name, replace, description)
    return FromPatchResult(Path(output), module_name, replace, kernel, functions,
                           module.klp_references, sorted(module.exported_references), warnings,
                           rebuild, cached, time.perf_counter() - started)
