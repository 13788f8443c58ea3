"""Building kernel-style modules for the guest kernel (`klpemu build`).

A module is compiled exactly as the fixtures' are (fixtures/Makefile: the one
canonical flag list, read from there), against `fixtures/include`, then
linked with `ld -r` together with the `struct module` that modpost would
generate, so that the result loads like any fixture module. References the
sources annotate with KLP_MODULE_RELOC/KLP_SYMPOS become livepatch
relocations (klpemu/build/klp_convert.py).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

from emu.abi import FIXTURES

from klpemu.build.klp_convert import ConvertError, klp_convert
from klpemu.errors import KlpemuError

INCLUDE = FIXTURES / "include"
MODULE_NAME = re.compile(r"[A-Za-z0-9_-]{1,55}")
THIS_MODULE_C = """#include <linux/module.h>
extern int init_module(void) __attribute__((weak));
extern void cleanup_module(void) __attribute__((weak));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) =
	{ .name = KBUILD_MODNAME, .init = init_module, .exit = cleanup_module };
"""


class BuildError(KlpemuError):
    """A module that did not build; the message carries the tools' own output."""


def kernel_cflags() -> list[str]:
    """KFLAGS of fixtures/Makefile, the guest kernel's code-generation flags."""
    text = (FIXTURES / "Makefile").read_text()
    start = text.index("KFLAGS :=") + len("KFLAGS :=")
    value = []
    for line in text[start:].splitlines():
        value.append(line.rstrip("\\").strip())
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(value).split()


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise BuildError(f"{' '.join(cmd[:1])} failed:\n{proc.stderr}{proc.stdout}".rstrip())


def _modinfo(obj: Path) -> list[str]:
    with obj.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".modinfo")
        data = section.data() if section is not None else b""
    return [entry.decode(errors="replace") for entry in data.split(b"\0") if entry]


def build_module(sources: list[Path], output: Path, *, livepatch: bool = False,
                 extra_cflags: list[str] | None = None) -> Path:
    """Compile `sources` into the module `output` (NAME.ko names the module,
    `-` made `_` as Kbuild makes KBUILD_MODNAME: livepatch-foo.ko is module
    livepatch_foo).
    With `livepatch`, the module is marked `livepatch=Y` if its sources did not
    already say so. BuildError on any failure, with gcc's diagnostics."""
    output = Path(output)
    stem = output.name.removesuffix(".ko")
    if not output.name.endswith(".ko") or not MODULE_NAME.fullmatch(stem):
        raise BuildError(f"{output}: the output must be NAME.ko, NAME of 1 to 55 letters, digits, '_' or '-'")
    name = stem.replace("-", "_")
    if not sources:
        raise BuildError("no source files given")
    for tool in ("gcc", "ld"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed")
    flags = [*kernel_cflags(), f"-I{INCLUDE}", "-DMODULE", f'-DKBUILD_MODNAME="{name}"',
             *(extra_cflags or [])]
    with tempfile.TemporaryDirectory(prefix="klpemu-build-") as tmp:
        objs = []
        for i, src in enumerate(sources):
            src = Path(src)
            if not src.is_file():
                raise BuildError(f"{src}: no such source file")
            obj = Path(tmp) / f"{i}-{src.stem}.o"
            _run(["gcc", *flags, "-c", str(src), "-o", str(obj)])
            objs.append(obj)
        mod_c = THIS_MODULE_C
        if livepatch and not any(e == "livepatch=Y" for o in objs for e in _modinfo(o)):
            mod_c += 'MODULE_INFO(livepatch, "Y");\n'
        (Path(tmp) / f"{name}.mod.c").write_text(mod_c)
        mod_o = Path(tmp) / f"{name}.mod.o"
        _run(["gcc", *flags, "-c", str(Path(tmp) / f"{name}.mod.c"), "-o", str(mod_o)])
        output.parent.mkdir(parents=True, exist_ok=True)
        _run(["ld", "-r", "-o", str(output), *map(str, objs), str(mod_o)])
    try:
        output.write_bytes(klp_convert(output.read_bytes()))
    except ConvertError as exc:
        output.unlink()
        raise BuildError(f"klp-convert: {output.name}: {exc}") from None
    return output
