"""The guest kernel's sources built as klp-build builds a kernel.

klp-build compiles the kernel twice with `-ffunction-sections
-fdata-sections`, so that every function and object sits in a section of
its own and a change in one shifts nothing in another. Here the
compilation units are those of fixtures/Makefile (kernel/*.c,
kernel/lib/*.c; entry.S is never diffed), compiled from a copy of the
sources with the flavour's flags, exactly as the Makefile does, plus those
two flags and -g1 (DWARF that says what gcc inlined where, for the
report; it changes no code).

The original build is made once per (sources, flags, compiler, image) and
kept under the cache directory ($KLPEMU_CACHE_DIR, else
$XDG_CACHE_HOME/klpemu, else ~/.cache/klpemu), outside the checkout; it is
written to a private directory and renamed into place, so that concurrent
builds never see half of one. Before it is kept, it is checked against the
image that boots (klpemu/build/image_check.py).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from emu.abi import FIXTURES
from klpemu.build.compile import BuildError

__all__ = ["Flavour", "FLAVOURS", "flavour", "kernel_units", "copy_sources", "compile_units",
           "OriginalBuild", "cache_root", "object_path"]

FLAVOURS = ("modern", "legacy")
SOURCE_DIRS = ("kernel", "include")           # of fixtures/: what a patch may change
UNIT_DIRS = ("kernel", "kernel/lib")          # the Makefile's KSRC wildcards
INCLUDES = ("-Iinclude", "-Ikernel/include", "-Ibuild/obj")
SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections")
DEBUG_FLAGS = ("-g1",)
CACHE_FORMAT = "klpemu-klp-build-1"


@dataclass(frozen=True)
class Flavour:
    """A guest kernel flavour: the flags its objects are compiled with
    (fixtures/Makefile) and the image that boots."""

    name: str
    cflags: tuple[str, ...]
    image: Path


def makefile_value(name: str) -> list[str]:
    """The words of `NAME := …` in fixtures/Makefile (continuation lines included)."""
    lines = (FIXTURES / "Makefile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{name} :="):
            words = [line.split(":=", 1)[1]]
            while words[-1].rstrip().endswith("\\"):
                i += 1
                words[-1] = words[-1].rstrip()[:-1]
                words.append(lines[i])
            return " ".join(words).split()
    raise BuildError(f"fixtures/Makefile defines no {name}")


def flavour(name: str) -> Flavour:
    """The flavour `name` (modern or legacy); BuildError for anything else."""
    if name not in FLAVOURS:
        raise BuildError(f"--from-patch builds the guest kernel from its sources: --kernel must be "
                         f"one of {', '.join(FLAVOURS)}, not {name!r}")
    flags = makefile_value("KFLAGS") + (makefile_value("LEGACY") if name == "legacy" else [])
    return Flavour(name, tuple(flags), FIXTURES / "build" / f"vmlinux-{name}")


def kernel_units(root: Path) -> list[str]:
    """The C files the kernel is linked from, relative to `root`, in link order."""
    return [f"{d}/{p.name}" for d in UNIT_DIRS for p in sorted((root / d).glob("*.c"))]


def object_path(objdir: Path, unit: str) -> Path:
    return objdir / (unit[:-2] + ".o")


def copy_sources(dest: Path) -> None:
    """fixtures/kernel and fixtures/include, copied to dest/ (nothing built)."""
    for d in SOURCE_DIRS:
        shutil.copytree(FIXTURES / d, dest / d, ignore=shutil.ignore_patterns("*.o", "__pycache__"))
    (dest / "build" / "obj").mkdir(parents=True)


def compile_units(root: Path, units: list[str], flags: list[str], objdir: Path,
                  deps: bool = False) -> None:
    """gcc -c each unit of the tree at `root` (from there, with the relative
    paths the Makefile uses, so __FILE__ and the STT_FILE names are the
    same) into objdir; with `deps`, a .d file next to each object.
    BuildError with gcc's diagnostics if one fails."""
    def one(unit: str) -> str | None:
        obj = object_path(objdir, unit)
        obj.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["gcc", *flags, *INCLUDES, "-c", unit, "-o", str(obj)]
        if deps:
            cmd += ["-MD", "-MF", str(obj.with_suffix(".d"))]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        return f"gcc failed on {unit}:\n{proc.stderr}{proc.stdout}".rstrip() if proc.returncode else None

    if shutil.which("gcc") is None:
        raise BuildError("gcc is not installed")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        errors = [e for e in pool.map(one, units) if e]
    if errors:
        raise BuildError(errors[0])


def unit_dependencies(objdir: Path, unit: str) -> set[str]:
    """The files (relative to the tree) that `unit` was compiled from, from its .d file."""
    text = object_path(objdir, unit).with_suffix(".d").read_text()
    words = text.replace("\\\n", " ").split(":", 1)[1].split()
    return {os.path.normpath(w) for w in words}


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("KLPEMU_CACHE_DIR"):
        return Path(os.environ["KLPEMU_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "klpemu"


def _compiler_id() -> str:
    proc = subprocess.run(["gcc", "--version"], capture_output=True, text=True)
    if proc.returncode:
        raise BuildError("gcc is not installed")
    return proc.stdout.splitlines()[0] + " " + (shutil.which("gcc") or "")


def cache_key(fl: Flavour) -> str:
    """A digest of everything the original build depends on."""
    h = hashlib.sha256(CACHE_FORMAT.encode())
    for part in (fl.name, " ".join(fl.cflags), _compiler_id()):
        h.update(part.encode() + b"\0")
    for d in SOURCE_DIRS:
        for p in sorted((FIXTURES / d).rglob("*")):
            if p.is_file() and p.suffix in (".c", ".h", ".S", ".lds"):
                h.update(str(p.relative_to(FIXTURES)).encode() + b"\0" + p.read_bytes() + b"\0")
    try:
        h.update(hashlib.sha256(fl.image.read_bytes()).digest())
    except OSError as exc:
        raise BuildError(f"cannot read the kernel image {fl.image}: {exc.strerror}") from None
    return h.hexdigest()


@dataclass(frozen=True)
class OriginalBuild:
    """A kept original build: the pristine sources (src/) and their objects
    with function and data sections (obj/)."""

    flavour: Flavour
    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def objdir(self) -> Path:
        return self.root / "obj"

    @property
    def units(self) -> list[str]:
        return kernel_units(self.src)

    def object(self, unit: str) -> Path:
        return object_path(self.objdir, unit)

    def dependencies(self, unit: str) -> set[str]:
        return unit_dependencies(self.objdir, unit)

    @property
    def build_flags(self) -> list[str]:
        return build_flags(self.flavour)


def build_flags(fl: Flavour) -> list[str]:
    """The flavour's flags plus function/data sections and -g1."""
    return [*fl.cflags, *SECTION_FLAGS, *(f for f in DEBUG_FLAGS if f not in fl.cflags)]
