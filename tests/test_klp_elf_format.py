"""The livepatch module ELF format end to end (module-elf-format.rst).

Livepatches built from C by `klpemu build`, whose KLP_MODULE_RELOC/KLP_SYMPOS
annotations klp-convert turns into `.klp.rela.<obj>.<sec>` sections and
`.klp.sym.<obj>.<sym>,<sympos>` symbols, reach static functions of the guest
kernel (two of them named klp_sympos_helper, in fixtures/kernel/klp_sympos_a.c
and _b.c) and of a target module. Every check of kernel/livepatch/core.c on
these relocations is exercised on bad ELF files made by mutating good ones.
"""
import errno
import io
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu import Machine, ShellError
from emu.elf.format import SHF_RELA_LIVEPATCH, SHN_ABS, SHN_LIVEPATCH
from klp import Livepatch
from klp_helpers import SYSFS, disable_lp, load_lp
from klpemu.build.compile import BuildError, build_module
from klpemu.cli import main as klpemu

R_X86_64_32 = 10

HEADER = """#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>
"""

LIVEPATCH_FOOTER = """
static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs };

static int livepatch_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_exit(void)
{
}

module_init(livepatch_init);
module_exit(livepatch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
"""

# klp_sympos_calc(x) is scale(x) + helper#1(x) = 7x + x + 1000; the patch
# makes it 10 * scale(x) + helper#2(x) = 70x + x + 2000.
VMLINUX_LP = HEADER + """
extern int klp_sympos_helper(int x);
extern int klp_sympos_scale(int x);

KLP_MODULE_RELOC(vmlinux) vmlinux_relocs[] = {
	KLP_SYMPOS(klp_sympos_scale, 0),
	KLP_SYMPOS(klp_sympos_helper, 2),
};

static int livepatch_klp_sympos_calc(int x)
{
	return klp_sympos_scale(x) * 10 + klp_sympos_helper(x);
}

static struct klp_func funcs[] = {
	{ .old_name = "klp_sympos_calc", .new_func = livepatch_klp_sympos_calc },
	{ }
};

static struct klp_object objs[] = { { .funcs = funcs }, { } };
""" + LIVEPATCH_FOOTER

TARGET = HEADER + """
static int offset = 7;
module_param(offset, int, 0444);

static noinline int klp_elf_target_secret(int x)
{
	return x + offset;
}

int klp_elf_target_value(int x)
{
	return klp_elf_target_secret(x);
}
EXPORT_SYMBOL(klp_elf_target_value);

static int target_init(void)
{
	return 0;
}

static void target_exit(void)
{
}

module_init(target_init);
module_exit(target_exit);
MODULE_LICENSE("GPL");
"""

# klp_elf_target_value(x) is x + offset; patched, (x + offset) * 100.
MODULE_LP = HEADER + """
extern int klp_elf_target_secret(int x);

KLP_MODULE_RELOC(klp_elf_target) target_relocs[] = {
	KLP_SYMPOS(klp_elf_target_secret, 0),
};

static int livepatch_klp_elf_target_value(int x)
{
	return klp_elf_target_secret(x) * 100;
}

static struct klp_func funcs[] = {
	{ .old_name = "klp_elf_target_value", .new_func = livepatch_klp_elf_target_value },
	{ }
};

static struct klp_object objs[] = { { .name = "klp_elf_target", .funcs = funcs }, { } };
""" + LIVEPATCH_FOOTER


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The three modules, built from C by `klpemu build`."""
    out = tmp_path_factory.mktemp("klp_elf")
    sources = {"klp_elf_lp": VMLINUX_LP, "klp_elf_target": TARGET, "klp_elf_mod_lp": MODULE_LP}
    for name, text in sources.items():
        (out / f"{name}.c").write_text(text)
        flags = ["--livepatch"] if name.endswith("_lp") else []
        assert klpemu(["build", str(out / f"{name}.c"), "-o", str(out / f"{name}.ko"), *flags]) == 0
    return {name: out / f"{name}.ko" for name in sources}


@pytest.fixture
def machine() -> Machine:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m)
    return m


def call(m: Machine, name: str, x: int, module: str | None = None) -> int:
    return m.call(m.kallsyms.find(name, module).address, x, returns="int")


def klp_relocs(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    """{.klp.rela section: [(offset, type, symbol)]} of a built module."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        out = {}
        for sec in elf.iter_sections():
            if sec["sh_flags"] & SHF_RELA_LIVEPATCH:
                out[sec.name] = [(r["r_offset"], r["r_info_type"], symtab.get_symbol(r["r_info_sym"]).name)
                                 for r in sec.iter_relocations()]
        return out


def call_target(m: Machine, module: str, text_offset: int) -> int:
    """Where the call whose rel32 field is at .text+offset of `module` goes."""
    site = m.modules.modules[module].image.sections[".text"][0] + text_offset
    return (site + 4 + struct.unpack("<i", m.mem.read(site, 4))[0]) & (2**64 - 1)


# ------------------------------------------------------------ vmlinux

def test_the_converter_writes_the_documented_format(built) -> None:
    """module-elf-format.rst 3.1 and 4.2: SHF_ALLOC|SHF_RELA_LIVEPATCH sections
    named .klp.rela.<obj>.<sec>, symbols .klp.sym.<obj>.<sym>,<sympos> with
    st_shndx SHN_LIVEPATCH; the annotations are gone."""
    path = built["klp_elf_lp"]
    with path.open("rb") as f:
        elf = ELFFile(f)
        names = [s.name for s in elf.iter_sections()]
        assert not [n for n in names if "module_relocs" in n]
        (rela,) = [s for s in elf.iter_sections() if s["sh_flags"] & SHF_RELA_LIVEPATCH]
        assert rela.name == ".klp.rela.vmlinux..text" and rela["sh_flags"] & 0x2
        assert elf.get_section(rela["sh_info"]).name == ".text"
        syms = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
        for name in (".klp.sym.vmlinux.klp_sympos_scale,0", ".klp.sym.vmlinux.klp_sympos_helper,2"):
            assert syms[name]["st_shndx"] == SHN_LIVEPATCH
        assert "klp_sympos_helper" not in syms and "vmlinux_relocs" not in syms
    assert [(t, s) for _, t, s in klp_relocs(path)[".klp.rela.vmlinux..text"]] == [
        (4, ".klp.sym.vmlinux.klp_sympos_scale,0"), (4, ".klp.sym.vmlinux.klp_sympos_helper,2")]


def test_a_livepatch_calls_vmlinux_statics_chosen_by_sympos(machine: Machine, built) -> None:
    """kallsyms keeps duplicate names in link order: sympos 2 is klp_sympos_b.c's."""
    m = machine
    ks = m.kallsyms
    assert ks.count("klp_sympos_helper") == 2
    assert m.call(ks.find("klp_sympos_helper", None, 2).address, 5, returns="int") == 2005
    assert call(m, "klp_sympos_second", 5) == 2005 and call(m, "klp_sympos_first", 5) == 1005
    assert call(m, "klp_sympos_calc", 5) == 35 + 1005
    load_lp(m, built["klp_elf_lp"])
    assert call(m, "klp_sympos_calc", 5) == 350 + 2005
    # the two calls of the new function were written with the right addresses
    offsets = [off for off, _, _ in klp_relocs(built["klp_elf_lp"])[".klp.rela.vmlinux..text"]]
    assert [call_target(m, "klp_elf_lp", off) for off in offsets] == [
        ks.find("klp_sympos_scale").address, ks.find("klp_sympos_helper", None, 2).address]
    disable_lp(m, "klp_elf_lp")
    assert call(m, "klp_sympos_calc", 5) == 35 + 1005


# ------------------------------------------------------------ a module object

def test_module_relocations_follow_the_target_module(machine: Machine, built) -> None:
    """A module object's sections are written when it comes (before it is
    patched), cleared when it goes, and written again when it comes back
    (elsewhere: a stale translation of the patch's code would still call the
    first copy, whose offset is 7); with the target already loaded,
    klp_enable_patch writes them."""
    m = machine
    load_lp(m, built["klp_elf_mod_lp"])
    ((off, _, sym),) = klp_relocs(built["klp_elf_mod_lp"])[".klp.rela.klp_elf_target..text"]
    assert sym == ".klp.sym.klp_elf_target.klp_elf_target_secret,0"
    lp_text = m.modules.modules["klp_elf_mod_lp"].image.sections[".text"][0]
    assert m.mem.read(lp_text + off, 4) == bytes(4)            # target not loaded yet
    for offset in (7, 9):
        m.insmod(built["klp_elf_target"], f"offset={offset}")
        secret = m.kallsyms.find("klp_elf_target_secret", "klp_elf_target").address
        assert call_target(m, "klp_elf_mod_lp", off) == secret
        assert call(m, "klp_elf_target_value", 1, "klp_elf_target") == (1 + offset) * 100
        m.rmmod("klp_elf_target")
        assert m.mem.read(lp_text + off, 4) == bytes(4)        # cleared
    lines = m.dmesg_lines()
    assert lines.count("livepatch: applying patch 'klp_elf_mod_lp' to loading module 'klp_elf_target'") == 2
    assert lines.count("livepatch: reverting patch 'klp_elf_mod_lp' on unloading module 'klp_elf_target'") == 2
    assert not [line for line in lines if "x86/modules" in line]
    # the target first, then the livepatch: written by klp_init_object_loaded at enable
    disable_lp(m, "klp_elf_mod_lp")
    m.rmmod("klp_elf_mod_lp")
    m.insmod(built["klp_elf_target"])
    assert call(m, "klp_elf_target_value", 1, "klp_elf_target") == 8
    load_lp(m, built["klp_elf_mod_lp"])
    assert call(m, "klp_elf_target_value", 1, "klp_elf_target") == 800


def test_clearing_a_field_that_changed_warns_and_leaves_it(machine: Machine, built) -> None:
    """klp_clear_object_relocs wants the value applying wrote: a field changed
    since is left as it is, with x86 __write_relocate_add's warning, and the
    module still goes (clear_relocate_add() is void)."""
    m = machine
    load_lp(m, built["klp_elf_mod_lp"])
    m.insmod(built["klp_elf_target"])
    ((off, _, _),) = klp_relocs(built["klp_elf_mod_lp"])[".klp.rela.klp_elf_target..text"]
    loc = m.modules.modules["klp_elf_mod_lp"].image.sections[".text"][0] + off
    m.text_poke(loc, b"\x01\x02\x03\x04")
    m.rmmod("klp_elf_target")
    assert "klp_elf_target" not in m.modules.modules
    assert m.mem.read(loc, 4) == b"\x01\x02\x03\x04"
    assert any(line.startswith("x86/modules: Invalid relocation target, existing value does not match "
                               f"expected value for type 4, loc {loc:016x}, val ")
               for line in m.dmesg_lines())


# ------------------------------------------------------------ bad ELF files

def _symbol_name_offset(data: bytes, name: str) -> int:
    elf = ELFFile(io.BytesIO(data))
    symtab = elf.get_section_by_name(".symtab")
    strtab = elf.get_section(symtab["sh_link"])
    sym = next(s for s in symtab.iter_symbols() if s.name == name)
    return strtab["sh_offset"] + sym["st_name"]


def rename_symbol(data: bytes, old: str, new: str) -> bytes:
    """`new` (no longer than `old`) in place of `old` in the string table."""
    assert len(new) <= len(old)
    at = _symbol_name_offset(data, old)
    return data[:at] + new.encode().ljust(len(old), b"\0") + data[at + len(old):]


def rename_section(data: bytes, old: str, new: str) -> bytes:
    assert len(new) == len(old)
    elf = ELFFile(io.BytesIO(data))
    sec = elf.get_section_by_name(old)
    at = elf.get_section(elf["e_shstrndx"])["sh_offset"] + sec["sh_name"]
    return data[:at] + new.encode() + data[at + len(old):]


def set_shndx(data: bytes, name: str, shndx: int) -> bytes:
    elf = ELFFile(io.BytesIO(data))
    symtab = elf.get_section_by_name(".symtab")
    index = next(i for i, s in enumerate(symtab.iter_symbols()) if s.name == name)
    at = symtab["sh_offset"] + index * 24 + 6
    return data[:at] + struct.pack("<H", shndx) + data[at + 2:]


def set_first_klp_rela_type(data: bytes, rtype: int) -> bytes:
    elf = ELFFile(io.BytesIO(data))
    sec = next(s for s in elf.iter_sections() if s["sh_flags"] & SHF_RELA_LIVEPATCH)
    at = sec["sh_offset"] + 8                                  # r_info of the first entry
    (info,) = struct.unpack_from("<Q", data, at)
    return data[:at] + struct.pack("<Q", info & ~0xFFFFFFFF | rtype) + data[at + 8:]


def move_first_klp_rela(data: bytes, r_offset: int) -> bytes:
    elf = ELFFile(io.BytesIO(data))
    sec = next(s for s in elf.iter_sections() if s["sh_flags"] & SHF_RELA_LIVEPATCH)
    at = sec["sh_offset"]                                      # r_offset of the first entry
    return data[:at] + struct.pack("<Q", r_offset) + data[at + 8:]


def dirty_first_klp_site(data: bytes) -> bytes:
    elf = ELFFile(io.BytesIO(data))
    sec = next(s for s in elf.iter_sections() if s["sh_flags"] & SHF_RELA_LIVEPATCH)
    at = elf.get_section(sec["sh_info"])["sh_offset"] + next(sec.iter_relocations())["r_offset"]
    return data[:at] + b"\x01" + data[at + 1:]


SCALE, HELPER = ".klp.sym.vmlinux.klp_sympos_scale,0", ".klp.sym.vmlinux.klp_sympos_helper,2"

VMLINUX_ERRORS = {
    "section name": (lambda d: rename_section(d, ".klp.rela.vmlinux..text", ".klp.relaXvmlinux..text"),
                     errno.EINVAL, ["livepatch: section .klp.relaXvmlinux..text has an incorrectly "
                                    "formatted name"]),
    "not SHN_LIVEPATCH": (lambda d: set_shndx(d, SCALE, SHN_ABS), errno.EINVAL,
                          [f"livepatch: symbol {SCALE} is not marked as a livepatch symbol"]),
    "symbol name": (lambda d: rename_symbol(d, SCALE, SCALE.replace(",", ";")), errno.EINVAL,
                    ["livepatch: symbol .klp.sym.vmlinux.klp_sympos_scale;0 has an incorrectly "
                     "formatted name"]),
    "no sympos": (lambda d: rename_symbol(d, SCALE, SCALE[:-1]), errno.EINVAL,
                  ["livepatch: symbol .klp.sym.vmlinux.klp_sympos_scale, has an incorrectly "
                   "formatted name"]),
    "not found": (lambda d: rename_symbol(d, SCALE, SCALE.replace("scale", "scalX")), errno.EINVAL,
                  ["livepatch: symbol 'klp_sympos_scalX' not found in symbol table"]),
    "ambiguity": (lambda d: rename_symbol(d, HELPER, HELPER.replace(",2", ",0")), errno.EINVAL,
                  ["livepatch: unresolvable ambiguity for symbol 'klp_sympos_helper' in object '(null)'"]),
    "sympos": (lambda d: rename_symbol(d, HELPER, HELPER.replace(",2", ",3")), errno.EINVAL,
               ["livepatch: symbol position 3 for symbol 'klp_sympos_helper' in object 'vmlinux' "
                "not found"]),
    "overflow": (lambda d: set_first_klp_rela_type(d, R_X86_64_32), errno.ENOEXEC,
                 ["overflow in relocation type 10 val ffffffff8", "`klp_elf_lp' likely not compiled "
                  "with -mcmodel=kernel"]),
    "outside its section": (lambda d: move_first_klp_rela(d, 0x10000), errno.ENOEXEC,
                            ["klp_elf_lp: relocation 0 of .klp.rela.vmlinux..text: offset 0x10000 (+4) "
                             "outside .text"]),
    "nonzero field": (dirty_first_klp_site, errno.ENOEXEC,
                      ["x86/modules: Invalid relocation target, existing value is nonzero for type 4, loc "]),
}


@pytest.fixture(scope="module")
def booted() -> Machine:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m)
    return m


@pytest.mark.parametrize("case", list(VMLINUX_ERRORS))
def test_bad_vmlinux_relocations_fail_the_livepatch_load(booted: Machine, built, tmp_path, case) -> None:
    """vmlinux sections are written by the module loader (apply_relocations →
    klp_apply_section_relocs), before the module's init: no patch is enabled."""
    m = booted
    mutate, err, expected = VMLINUX_ERRORS[case]
    path = tmp_path / "klp_elf_lp.ko"
    path.write_bytes(mutate(built["klp_elf_lp"].read_bytes()))
    before = len(m.dmesg_lines())
    with pytest.raises(ShellError) as info:
        m.insmod(path)
    assert info.value.errno == err
    new = [line for line in m.dmesg_lines()[before:] if "taint" not in line]
    assert len(new) == len(expected) and all(line.startswith(e) for line, e in zip(new, expected)), new
    assert "klp_elf_lp" not in m.modules.modules and not m.exists(f"{SYSFS}/klp_elf_lp")
    assert call(m, "klp_sympos_calc", 5) == 35 + 1005


TARGET_SYM = ".klp.sym.klp_elf_target.klp_elf_target_secret,0"


@pytest.mark.parametrize("order", ["target first", "livepatch first"])
@pytest.mark.parametrize("case", ["vmlinux symbol", "sympos"])
def test_bad_module_relocations_refuse_the_patch_or_the_module(machine: Machine, built, tmp_path,
                                                              order, case) -> None:
    """A module object's sections are checked when the object is loaded:
    klp_enable_patch fails if the target is there, else klp_module_coming
    refuses the target."""
    m = machine
    if case == "vmlinux symbol":
        new, message = (".klp.sym.vmlinux.klp_elf_target_secret,0",
                        "livepatch: invalid access to vmlinux symbol 'klp_elf_target_secret' from "
                        "module-specific livepatch relocation section")
    else:
        new, message = (TARGET_SYM.replace(",0", ",2"),
                        "livepatch: symbol position 2 for symbol 'klp_elf_target_secret' in object "
                        "'klp_elf_target' not found")
    path = tmp_path / "klp_elf_mod_lp.ko"
    path.write_bytes(rename_symbol(built["klp_elf_mod_lp"].read_bytes(), TARGET_SYM, new))
    if order == "target first":
        m.insmod(built["klp_elf_target"])
        with pytest.raises(ShellError) as info:
            m.insmod(path)
        assert info.value.errno == errno.EINVAL
        assert message in m.dmesg_lines()
        assert not m.exists(f"{SYSFS}/klp_elf_mod_lp")
        assert call(m, "klp_elf_target_value", 1, "klp_elf_target") == 8
        return
    load_lp(m, path)
    with pytest.raises(ShellError) as info:
        m.insmod(built["klp_elf_target"])
    assert info.value.errno == errno.EINVAL
    lines = m.dmesg_lines()
    assert lines[lines.index(message):][:3] == [
        message,
        "livepatch: failed to initialize patch 'klp_elf_mod_lp' for module 'klp_elf_target' (-22)",
        "livepatch: patch 'klp_elf_mod_lp' failed for module 'klp_elf_target', refusing to load "
        "module 'klp_elf_target'",
    ]
    assert "klp_elf_target" not in m.modules.modules


# ------------------------------------------------------------ the converter refuses

BAD_ANNOTATIONS = {
    "defined here": (HEADER + """
static noinline int mine(int x) { return x; }
int use(int x) { return mine(x); }
KLP_MODULE_RELOC(vmlinux) r[] = { KLP_SYMPOS(mine, 0) };
MODULE_INFO(livepatch, "Y");
""", "KLP_SYMPOS(mine, 0) in KLP_MODULE_RELOC(vmlinux): the symbol is defined in this module"),
    "conflict": (HEADER + """
extern int klp_sympos_helper(int x);
int use(int x) { return klp_sympos_helper(x); }
KLP_MODULE_RELOC(vmlinux) r[] = { KLP_SYMPOS(klp_sympos_helper, 1), KLP_SYMPOS(klp_sympos_helper, 2) };
MODULE_INFO(livepatch, "Y");
""", "conflicting annotations for klp_sympos_helper: KLP_SYMPOS in KLP_MODULE_RELOC(vmlinux) at "
     "position 1 and in KLP_MODULE_RELOC(vmlinux) at position 2"),
    "object name": (HEADER + """
extern int klp_sympos_helper(int x);
int use(int x) { return klp_sympos_helper(x); }
KLP_MODULE_RELOC(a_module_name_of_fifty_six_characters_is_one_too_long_xy) r[] = {
	KLP_SYMPOS(klp_sympos_helper, 1) };
MODULE_INFO(livepatch, "Y");
""", "KLP_MODULE_RELOC(a_module_name_of_fifty_six_characters_is_one_too_long_xy): an object name "
     "is 1 to 55 characters without '.'"),
    "not a livepatch": (HEADER + """
extern int klp_sympos_helper(int x);
int use(int x) { return klp_sympos_helper(x); }
KLP_MODULE_RELOC(vmlinux) r[] = { KLP_SYMPOS(klp_sympos_helper, 1) };
""", ".klp.module_relocs.* annotations (KLP_MODULE_RELOC) in a module that is not a livepatch: "
     "build it with --livepatch"),
}


@pytest.mark.parametrize("case", list(BAD_ANNOTATIONS))
def test_the_converter_refuses_bad_annotations(tmp_path, case) -> None:
    source, message = BAD_ANNOTATIONS[case]
    (tmp_path / "bad.c").write_text(source)
    with pytest.raises(BuildError) as info:
        build_module([tmp_path / "bad.c"], tmp_path / "bad.ko")
    assert str(info.value).startswith(f"klp-convert: bad.ko: {message}")
    assert not (tmp_path / "bad.ko").exists()


def test_klpemu_build_reports_a_bad_annotation(tmp_path, capsys) -> None:
    source, message = BAD_ANNOTATIONS["defined here"]
    (tmp_path / "bad.c").write_text(source)
    assert klpemu(["build", str(tmp_path / "bad.c"), "-o", str(tmp_path / "bad.ko")]) == 1
    assert capsys.readouterr().err.strip().endswith(message + "; only references to an object's "
                                                    "symbols can be converted")
