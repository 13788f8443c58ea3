"""Does the original build describe the kernel that boots?

A livepatch is made from the difference between two builds; it is only
right for the running kernel if the original build is that kernel. Two
checks, before an original build is kept:

1. the units compiled with exactly the Makefile's flags give back, function
   by function, the machine code of the image (each relocated field
   masked: the linker filled it in, the object has a relocation there);
2. the build with function and data sections has the same functions in
   every unit (gcc inlined, cloned and split the same way). Its code is not
   byte-equal to the image's: with a section per function the assembler no
   longer shortens a jump to a function of the same section.
"""
from __future__ import annotations

from pathlib import Path

from emu.elf.format import STT_FUNC
from emu.elf.relocs import RELOCATIONS

from klpemu.build.compile import BuildError
from klpemu.build.elfobj import ObjectError, ObjectFile, Symbol, read_object
from klpemu.build.kernel_tree import Flavour
from klpemu.build.objdiff import masked_code
from klpemu.build.vmlinux_symbols import ImageReadError, VmlinuxSymbols

__all__ = ["check_reproduces_image", "check_same_functions", "functions_of"]

STALE_HINT = "is the image older than its sources (make -C fixtures), or built by another gcc?"


def functions_of(obj: ObjectFile) -> dict[str, Symbol]:
    """The sized function symbols of an object, by name."""
    return {s.name: s for s in obj.symbols if s.type == STT_FUNC and s.size and s.section is not None}


def _read(path: Path, unit: str) -> ObjectFile:
    try:
        return read_object(path.read_bytes(), unit)
    except (OSError, ObjectError) as exc:
        raise BuildError(f"cannot read the object of {unit}: {exc}") from None


def check_reproduces_image(fl: Flavour, plain: dict[str, Path]) -> None:
    """Check 1: BuildError naming the first function whose code differs from the image's."""
    try:
        image = VmlinuxSymbols(fl.image)
    except ImageReadError as exc:
        raise BuildError(str(exc)) from None
    basenames = [Path(u).name for u in plain]
    dup = next((b for b in basenames if basenames.count(b) > 1), None)
    if dup:
        raise BuildError(f"two kernel sources are called {dup}: the image's symbols cannot be told "
                         "apart by file")
    for unit, path in plain.items():
        for name, sym in functions_of(_read(path, unit)).items():
            isym = image.find(name, Path(unit).name if sym.is_local else None)
            where = f"function {name} of {unit}"
            if isym is None:
                raise BuildError(f"the original build does not give back {fl.image}: {where} is "
                                 f"not in the image; {STALE_HINT}")
            code, relocs = masked_code(sym)
            theirs = bytearray(image.read(isym.address, isym.size))
            for r in relocs:
                off = r.offset - sym.value
                width = RELOCATIONS[r.type].width if r.type in RELOCATIONS else 0
                theirs[off:off + width] = bytes(width)
            if isym.size != sym.size or bytes(theirs) != code:
                first = next((i for i, (a, b) in enumerate(zip(code, theirs)) if a != b),
                             min(len(code), len(theirs)))
                raise BuildError(f"the original build does not give back {fl.image}: the code of "
                                 f"{where} differs at +{first:#x} ({sym.size} bytes built, "
                                 f"{isym.size} in the image); {STALE_HINT}")


def check_same_functions(plain: dict[str, Path], sections: dict[str, Path]) -> None:
    """Check 2: BuildError naming a unit where the sectioned build has other functions."""
    for unit, path in plain.items():
        funcs = set(functions_of(_read(path, unit)))
        split = set(functions_of(_read(sections[unit], unit)))
        if split != funcs:
            raise BuildError(f"with -ffunction-sections gcc makes other functions of {unit} than the "
                             f"image has: {', '.join(sorted(split ^ funcs))}")
