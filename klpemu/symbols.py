"""`klpemu symbols`: the functions of a kernel image or module, and which can be livepatched.

For each sized function symbol: name, address (for a module, the offset in its
section: a .ko is not linked yet), size, object (`vmlinux` or the module's
name), sympos when the name repeats in the object (the kernel's old_sympos:
1-based, in address order among the object's symbols of that name), and the
source file:line of its definition from the image's DWARF, where there is some.

`--patchable` adds why a function cannot be livepatched: `notrace` (no fentry
site in __mcount_loc), a hazard of klp/hazard.py (vmlinux only), and functions
gcc inlined everywhere (DWARF knows them, the symbol table has no copy).

Stable JSON (`--json`, schema 1): {"schema": 1, "object": ..., "path": ...,
"functions": [{"name", "address", "section", "size", "object", "sympos" (null:
unique), "file", "line" (null: no DWARF), and with --patchable "patchable"
(bool) and "reasons" (list of strings)}]}; inlined-only functions have
address, section and size null.

pyelftools is imported here, when the command runs, not at CLI start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from klp.hazard import NOTRACE

if TYPE_CHECKING:
    from emu.elf.image import ElfImage
    from emu.kernel.kallsyms import Kallsyms

SCHEMA = 1
EXIT_OK, EXIT_USAGE = 0, 2
INLINED = "inlined everywhere: no out-of-line copy to patch"
_DEFINED_TYPES = ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE")


@dataclass
class FunctionInfo:
    name: str
    address: int | None
    section: str | None
    size: int | None
    object: str
    sympos: int | None = None
    file: str | None = None
    line: int | None = None
    patchable: bool | None = None
    reasons: list[str] = field(default_factory=list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default="modern", help="flavour name (modern, legacy) or path to a vmlinux")
    p.add_argument("--module", type=Path, metavar="X.ko", help="list a module's functions instead of vmlinux's")
    p.add_argument("--patchable", action="store_true",
                   help="say for each function whether it can be livepatched, and if not why")
    p.add_argument("--json", action="store_true", help="machine-readable output (schema in klpemu/symbols.py)")


def cmd_symbols(args: argparse.Namespace) -> int:
    from elftools.common.exceptions import ELFError

    from emu.errors import EmuError
    from emu.machine import resolve_kernel
    try:
        if args.module is not None:
            path, obj = args.module, args.module.name.removesuffix(".ko").replace("-", "_")
            if not path.is_file():
                raise EmuError(f"no module {os.fspath(path)!r}: not a file")
        else:
            path, obj = resolve_kernel(args.kernel), "vmlinux"
        functions = list_functions(path, obj, patchable=args.patchable)
    except (EmuError, OSError) as exc:
        print(f"klpemu: symbols: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ELFError as exc:
        print(f"klpemu: symbols: {os.fspath(path)}: not an ELF image: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        rows = [{k: v for k, v in asdict(f).items() if args.patchable or k not in ("patchable", "reasons")}
                for f in functions]
        json.dump({"schema": SCHEMA, "object": obj, "path": os.fspath(path), "functions": rows},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(functions, patchable=args.patchable, module=args.module is not None)
    return EXIT_OK


def print_table(functions: list[FunctionInfo], *, patchable: bool, module: bool) -> None:
    rows = [["NAME", "SECTION+OFFSET" if module else "ADDRESS", "SIZE", "SYMPOS", "SOURCE"]
            + (["PATCHABLE"] if patchable else [])]
    for f in functions:
        where = "-" if f.address is None else (f"{f.section}+{f.address:#x}" if module else f"{f.address:016x}")
        row = [f.name, where, "-" if f.size is None else str(f.size), str(f.sympos or ""),
               f"{f.file}:{f.line}" if f.file else "-"]
        if patchable:
            row.append("yes" if f.patchable else "no: " + "; ".join(f.reasons))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def list_functions(path: Path, obj: str, *, patchable: bool) -> list[FunctionInfo]:
    from elftools.elf.elffile import ELFFile

    from emu.elf.image import ElfImage
    from emu.errors import ImageError
    with open(path, "rb") as f:
        elf = ELFFile(f)
        relocatable = elf["e_type"] == "ET_REL"
        if relocatable != (obj != "vmlinux"):
            raise ImageError(f"{os.fspath(path)}: " + ("a relocatable object (a module?): use --module" if relocatable
                                                       else "a linked image, not a module (.ko)"))
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            raise ImageError(f"{os.fspath(path)}: no symbol table (stripped?)")
        image = None if relocatable else ElfImage(path)
        kallsyms, where = _kallsyms(path, obj, image)
        module = None if image is not None else obj
        out: list[FunctionInfo] = []
        for s in symtab.iter_symbols():
            if s["st_info"]["type"] != "STT_FUNC" or not s["st_size"] or not isinstance(s["st_shndx"], int):
                continue
            shndx, value = s["st_shndx"], s["st_value"]
            address = where(shndx, value, s.name)
            sympos = kallsyms.sympos(s.name, address, module) if address is not None else None
            out.append(FunctionInfo(s.name, value, elf.get_section(shndx).name, s["st_size"], obj, sympos or None))
        out.sort(key=lambda f: (f.section, f.address, f.name))
        # DWARF names a gcc clone (foo.part.0, foo.isra.0, foo.constprop.0) foo
        sources, inline_only = _dwarf_sources(elf, {_source_name(f.name) for f in out})
        for fn in out:
            base = _source_name(fn.name)
            fn.file, fn.line = sources.get((base, fn.address), sources.get((base, None), (None, None)))
        if patchable:
            sites = _fentry_sites(elf, relocatable)
            for fn in out:
                if (fn.section if relocatable else None, fn.address) not in sites:
                    fn.reasons.append(NOTRACE)
            out.extend(FunctionInfo(name, None, None, None, obj, file=file, line=line, reasons=[INLINED])
                       for name, (file, line) in sorted(inline_only.items()))
    if patchable:
        if image is not None:
            from klp.hazard import switch_hazards
            hazards: dict[str, list[str]] = {}
            for h in switch_hazards(image):
                hazards.setdefault(h.function, []).append(h.reason)
            for fn in out:
                fn.reasons.extend(hazards.get(fn.name, []))
        for fn in out:
            fn.patchable = not fn.reasons
    return out


def _kallsyms(path: Path, obj: str,
              image: ElfImage | None) -> tuple[Kallsyms, Callable[[int, int, str], int | None]]:
    """The object's symbols as the guest's kallsyms holds them, and the address
    there of a symbol (st_shndx, st_value, name) of the file (None: kallsyms
    leaves it out): vmlinux's own address, a module's offset as the loader
    lays it out."""
    from emu.elf.module_loader import module_kallsyms
    from emu.kernel.kallsyms import Kallsyms
    kallsyms = Kallsyms()
    if image is not None:
        kallsyms.add(image.symbols)
        return kallsyms, lambda shndx, value, name: value
    laid_out = module_kallsyms(path.read_bytes(), os.fspath(path))
    kallsyms.add(laid_out.values(), module=obj)

    def where(shndx: int, value: int, name: str) -> int | None:
        sym = laid_out.get((shndx, value, name))
        return sym.address if sym is not None else None
    return kallsyms, where


def _fentry_sites(elf, relocatable: bool) -> set[tuple[str | None, int]]:
    """(section or None for a linked image, address) of every __mcount_loc entry."""
    if not relocatable:
        sec = elf.get_section_by_name("__mcount_loc")
        data = sec.data() if sec is not None else b""
        return {(None, int.from_bytes(data[i:i + 8], "little")) for i in range(0, len(data), 8)}
    rela = elf.get_section_by_name(".rela__mcount_loc")
    if rela is None:
        return set()
    symtab = elf.get_section(rela["sh_link"])
    sites = set()
    for r in rela.iter_relocations():
        sym = symtab.get_symbol(r["r_info_sym"])
        sites.add((elf.get_section(sym["st_shndx"]).name, sym["st_value"] + r["r_addend"]))
    return sites


def _source_name(symbol: str) -> str:
    """The function a symbol is the code of: a gcc clone's name without its suffix."""
    return symbol.split(".", 1)[0]


def _dwarf_sources(elf, symbol_names: set[str]) -> tuple[dict, dict[str, tuple[str | None, int | None]]]:
    """From DWARF: {(name, low_pc) and (name, None): (file, line)} of each function
    defined out of line, and {name: (file, line)} of those only ever inlined."""
    from klp.hazard import die_name
    sources: dict[tuple[str, int | None], tuple[str | None, int | None]] = {}
    inlined: dict[str, tuple[str | None, int | None]] = {}
    if not elf.has_dwarf_info():
        return sources, inlined
    dwarf = elf.get_dwarf_info()
    for cu in dwarf.iter_CUs():
        lineprog = dwarf.line_program_for_CU(cu)
        files = lineprog["file_entry"] if lineprog is not None else []
        version = lineprog.header["version"] if lineprog is not None else 4
        for die in cu.iter_DIEs():
            if die.tag not in ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine"):
                continue
            name = die_name(die)
            if not name:
                continue
            where = _decl(die, files, version)
            if die.tag == "DW_TAG_inlined_subroutine":
                if name not in symbol_names:
                    inlined.setdefault(name, where)
            elif "DW_AT_low_pc" in die.attributes:
                sources[(name, die.attributes["DW_AT_low_pc"].value)] = where
                sources.setdefault((name, None), where)
    return sources, inlined


def _decl(die, files, version: int) -> tuple[str | None, int | None]:
    """DW_AT_decl_file/decl_line, following abstract_origin/specification."""
    while die is not None:
        attrs = die.attributes
        if "DW_AT_decl_line" in attrs and "DW_AT_decl_file" in attrs:
            index = attrs["DW_AT_decl_file"].value - (0 if version >= 5 else 1)
            name = files[index].name.decode() if 0 <= index < len(files) else None
            return name, attrs["DW_AT_decl_line"].value
        ref = attrs.get("DW_AT_abstract_origin") or attrs.get("DW_AT_specification")
        die = die.get_DIE_from_attribute(ref.name) if ref is not None else None
    return None, None
