"""emu/elf/module_loader.py: ET_REL kernel modules built by gcc with the guest's flags.

The modules are compiled from tests/data/module_loader/*.c into a temporary
directory (gcc and ld are needed), the way the fixture build makes a .ko: the
module object plus a generated NAME.mod.c holding its struct module, linked
with `ld -r`. Expected relocation values are computed independently with
pyelftools and checked semantically with capstone and by running code in a
bare Unicorn.
"""
from __future__ import annotations

import errno
import io
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu.elf.image import ElfImage, Symbol
from emu.elf.module_loader import (KlpRelaSection, LoadedModule, ModuleLoadError, ParamDesc, layout_size,
                                   load_module)
from emu.errors import EmuError, ImageError
from emu.module.manager import module_name_field
from klpemu.build.compile import kernel_cflags

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(__file__).resolve().parent / "data" / "module_loader"
INCLUDE = ROOT / "fixtures" / "include"

BASE = 0xFFFFFFFFA0000000
NAME_FIELD = module_name_field(ElfImage(ROOT / "fixtures" / "build" / "vmlinux-modern").offsets())
KTEXT = 0xFFFFFFFF81000000          # where the fake kernel's stubs live
FENTRY = KTEXT                      # `ret`
PRINTK = KTEXT + 0x10               # `ret`
KERNEL_SYMS = {"__fentry__": FENTRY, "printk": PRINTK}


pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None,
                                reason="needs gcc and ld")

MOD_C = """#include <linux/module.h>
extern int init_module(void) __attribute__((weak));
extern void cleanup_module(void) __attribute__((weak));
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"), used)) = {
	.name = KBUILD_MODNAME, .init = init_module, .exit = cleanup_module };
"""


def _build(out: Path, src: Path, name: str, extra: tuple[str, ...] = (),
           this_module: bool = True) -> bytes:
    flags = kernel_cflags() + [f"-I{INCLUDE}", "-DMODULE", f"-DKBUILD_MODNAME=\"{name}\"", *extra]
    obj = out / f"{name}.o"
    subprocess.run(["gcc", *flags, "-c", str(src), "-o", str(obj)], check=True)
    objs = [str(obj)]
    if this_module:
        (out / f"{name}.mod.c").write_text(MOD_C)
        subprocess.run(["gcc", *flags, "-c", str(out / f"{name}.mod.c"),
                        "-o", str(out / f"{name}.mod.o")], check=True)
        objs.append(str(out / f"{name}.mod.o"))
    ko = out / f"{name}.ko"
    subprocess.run(["ld", "-r", "-o", str(ko), *objs], check=True)
    return ko.read_bytes()


@pytest.fixture(scope="module")
def mods(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("modules")
    common_o = out / "common.o"
    subprocess.run(["gcc", *kernel_cflags(), "-fcommon", f"-I{INCLUDE}", "-c",
                    str(SRC / "common.c"), "-o", str(common_o)], check=True)
    return {
        "modtest": _build(out, SRC / "modtest.c", "modtest"),
        "modmini": _build(out, SRC / "modmini.c", "modmini"),
        "modparam": _build(out, SRC / "modparam.c", "modparam"),
        "small": _build(out, SRC / "modmini.c", "small", ("-mcmodel=small",)),
        "bare": _build(out, SRC / "modmini.c", "bare", this_module=False),
        "common": common_o.read_bytes(),
    }


def resolve(name: str) -> int | None:
    return KERNEL_SYMS.get(name)


@pytest.fixture(scope="module")
def mod(mods) -> LoadedModule:
    return load_module(mods["modtest"], "given-name", BASE, resolve, name_field=NAME_FIELD)


def sym(m: LoadedModule, name: str) -> Symbol:
    return next(s for s in m.symbols if s.name == name)


def u64(m: LoadedModule, addr: int) -> int:
    return struct.unpack_from("<Q", m.image, addr - m.base)[0]


def s32(m: LoadedModule, addr: int) -> int:
    return struct.unpack_from("<i", m.image, addr - m.base)[0]


# --------------------------------------------------------------- layout


def test_struct_layouts_match_the_headers(tmp_path):
    """The offsets the loader hard-codes are those gcc gives the fixture headers."""
    checks = """#include <linux/module.h>
#define AT(t, f, n) _Static_assert(__builtin_offsetof(struct t, f) == n, #t "." #f)
AT(kernel_param, name, 0); AT(kernel_param, type, 8); AT(kernel_param, arg, 16);
AT(kernel_param, perm, 24); AT(kernel_param, elem_size, 26); AT(kernel_param, max, 28);
AT(kernel_param, num, 32); _Static_assert(sizeof(struct kernel_param) == 40, "param");
AT(module, name, 4); _Static_assert(sizeof(((struct module *)0)->name) == 56, "name");
AT(kernel_symbol, value, 0); AT(kernel_symbol, name, 8);
_Static_assert(sizeof(struct kernel_symbol) == 16, "ksym");
"""
    (tmp_path / "o.c").write_text(checks)
    subprocess.run(["gcc", *kernel_cflags(), f"-I{INCLUDE}", "-c", str(tmp_path / "o.c"),
                    "-o", str(tmp_path / "o.o")], check=True)


def test_layout(mods, mod):
    assert layout_size(mods["modtest"], "x") == mod.size
    assert mod.size % 4096 == 0 and len(mod.image) == mod.size
    assert mod.base == BASE and mod.text[0] == BASE and mod.text[1] % 4096 == 0
    elf = ELFFile(io.BytesIO(mods["modtest"]))
    spans = []
    for sec in elf.iter_sections():
        if not sec["sh_flags"] & 2:
            assert sec.name not in mod.sections
            continue
        addr, size = mod.sections[sec.name]
        assert size == sec["sh_size"]
        align = max(sec["sh_addralign"], 8 if sec.name in ("__mcount_loc", "__param",
                                                            "__ksymtab") else 1)
        assert addr % align == 0, sec.name
        assert mod.base <= addr and addr + size <= mod.base + mod.size
        if sec["sh_flags"] & 4:
            assert addr + size <= mod.text[1], sec.name
        else:
            assert addr >= mod.text[1], sec.name           # data on separate pages
        if sec["sh_type"] == "SHT_NOBITS":
            assert mod.image[addr - BASE:addr - BASE + size] == bytes(size)
        spans.append((addr, addr + size))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))      # no overlap
    # NOBITS after all data
    bss = mod.sections[".bss"][0]
    assert all(addr <= bss for name, (addr, _) in mod.sections.items())


def test_metadata(mod):
    assert mod.name == "modtest"                       # from struct module, not the argument
    assert mod.this_module == mod.sections[".gnu.linkonce.this_module"][0]
    assert mod.image[mod.this_module - BASE + 4:][:8] == b"modtest\0"
    assert u64(mod, mod.this_module + 64) == sym(mod, "modtest_init").address
    assert u64(mod, mod.this_module + 72) == sym(mod, "modtest_exit").address
    assert set(mod.modinfo) == {"parm", "livepatch", "license", "description"}
    assert sorted(mod.modinfo["parm"]) == ["count:how many times", "vals:some values"]
    assert mod.modinfo["livepatch"] == ["Y"] and mod.modinfo["license"] == ["GPL"]
    assert mod.modinfo["description"] == ["module loader test"]
    assert mod.exports == {"modtest_compute": sym(mod, "modtest_compute").address,
                           "modtest_first_char": sym(mod, "modtest_first_char").address}
    assert mod.klp_relocations == []
    s = sym(mod, "modtest_compute")
    assert s.is_function and s.is_global and s.size > 0
    assert not sym(mod, "add_one").is_global
    t = sym(mod, "modtest_table")
    assert not t.is_function and t.size == 64 and t.address >= mod.text[1]


def test_params(mod):
    params = {p.name: p for p in mod.params}
    assert set(params) == {"count", "verbose", "greeting", "vals"}
    assert params["count"] == ParamDesc("count", "int", sym(mod, "count").address,
                                        0o644, 4, 0, None)
    assert params["verbose"] == ParamDesc("verbose", "bool", sym(mod, "verbose").address,
                                          0o444, 1, 0, None)
    assert params["greeting"] == ParamDesc("greeting", "charp", sym(mod, "greeting").address,
                                           0, 8, 0, None)
    assert params["vals"] == ParamDesc("vals", "int", sym(mod, "vals").address, 0o644, 4, 4,
                                       sym(mod, "nvals").address)
    # charp default: a pointer to "hello" in the module
    ptr = u64(mod, params["greeting"].arg)
    assert mod.image[ptr - BASE:ptr - BASE + 6] == b"hello\0"
    assert struct.unpack_from("<i", mod.image, params["count"].arg - BASE)[0] == 3


def test_mcount_sites_call_fentry(mod):
    funcs = {s.address for s in mod.symbols if s.is_function}
    assert len(mod.mcount_sites) == len(funcs) == 8
    for site in mod.mcount_sites:
        assert site in funcs
        assert mod.text[0] <= site < mod.text[1]
        assert mod.image[site - BASE] == 0xE8
        assert site + 5 + s32(mod, site + 1) == FENTRY


def _expected_relocations(data: bytes, m: LoadedModule):
    """(place, width, value) of every relocation, computed with pyelftools."""
    elf = ELFFile(io.BytesIO(data))
    symtab = elf.get_section_by_name(".symtab")
    secs = list(elf.iter_sections())
    for rsec in elf.iter_sections():
        if rsec["sh_type"] != "SHT_RELA":
            continue
        target = secs[rsec["sh_info"]]
        if not target["sh_flags"] & 2:
            continue
        taddr = m.sections[target.name][0]
        for r in rsec.iter_relocations():
            st = symtab.get_symbol(r["r_info_sym"])
            if st["st_shndx"] == "SHN_UNDEF":
                S = KERNEL_SYMS[st.name]
            else:
                S = m.sections[secs[st["st_shndx"]].name][0] + st["st_value"]
            P, A, t = taddr + r["r_offset"], r["r_addend"], r["r_info_type"]
            if t == 1:
                yield P, 8, (S + A) % 2**64, t
            elif t in (2, 4):
                v = S + A - P
                assert -2**31 <= v < 2**31
                yield P, 4, v % 2**32, t
            elif t == 11:
                v = (S + A) % 2**64
                assert v >= 2**64 - 2**31
                yield P, 4, v % 2**32, t
            else:
                raise AssertionError(f"unexpected type {t}")


def test_every_relocation_site(mods, mod):
    seen = set()
    for place, width, value, rtype in _expected_relocations(mods["modtest"], mod):
        off = place - BASE
        assert int.from_bytes(mod.image[off:off + width], "little") == value, hex(place)
        seen.add(rtype)
    assert seen == {1, 2, 4, 11}


def test_relocations_semantically(mod):
    """Read pointers back and decode the instructions that use them."""
    capstone = pytest.importorskip("capstone")
    from capstone import x86_const as X
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    # R_X86_64_64: the function-pointer table and __ksymtab
    ops = sym(mod, "modtest_ops").address
    assert u64(mod, ops) == sym(mod, "add_one").address
    assert u64(mod, ops + 8) == sym(mod, "times_two").address

    def insns(fname):
        s = sym(mod, fname)
        return list(md.disasm(mod.image[s.address - BASE:s.address - BASE + s.size], s.address))

    def mem_disps(fname):
        out = []
        for i in insns(fname):
            for op in i.operands:
                if op.type == X.X86_OP_MEM:
                    if op.mem.base == X.X86_REG_RIP:
                        out.append(("rip", i.address + i.size + op.mem.disp))
                    elif op.mem.base == 0:
                        out.append(("abs", op.mem.disp % 2**64))
                elif op.type == X.X86_OP_IMM and i.mnemonic == "mov":
                    out.append(("imm", op.imm % 2**64))
        return out

    compute = mem_disps("modtest_compute")
    # 32S: table[i], ops[i], bss[i]
    assert ("abs", sym(mod, "modtest_table").address) in compute
    assert ("abs", ops) in compute
    assert ("abs", sym(mod, "modtest_bss").address) in compute
    # PC32: the string read RIP-relative
    assert ("rip", sym(mod, "modtest_banner").address) in mem_disps("modtest_first_char")
    assert ("imm", sym(mod, "modtest_bss").address) in mem_disps("modtest_bss_addr")
    # PLT32: init calls printk (kernel) and modtest_compute (module)
    calls = [i.operands[0].imm % 2**64 for i in insns("modtest_init")
             if i.mnemonic == "call" and i.operands[0].type == X.X86_OP_IMM]
    assert calls == [FENTRY, PRINTK, sym(mod, "modtest_compute").address]


def _run(m: LoadedModule, func: int, *args: int) -> tuple[int, object]:
    unicorn = pytest.importorskip("unicorn")
    from unicorn import x86_const as X
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
    uc.mem_map(KTEXT, 0x1000)
    uc.mem_write(FENTRY, b"\xc3")
    uc.mem_write(PRINTK, b"\xc3")
    uc.mem_map(m.base, m.size)
    uc.mem_write(m.base, m.image)
    stack = 0xFFFFC90000000000
    uc.mem_map(stack, 0x10000)
    done = KTEXT + 0x800                     # returning here stops the run
    rsp = stack + 0x10000 - 64
    uc.mem_write(rsp, struct.pack("<Q", done))
    uc.reg_write(X.UC_X86_REG_RSP, rsp)
    for reg, val in zip((X.UC_X86_REG_RDI, X.UC_X86_REG_RSI), args):
        uc.reg_write(reg, val)
    uc.emu_start(func, done, count=10000)
    assert uc.reg_read(X.UC_X86_REG_RIP) == done
    return uc.reg_read(X.UC_X86_REG_RAX), uc


def test_runs_in_unicorn(mod):
    # ops[1](5) + table[1] + add_one(5) = 10 + 20 + 6
    rax, uc = _run(mod, mod.exports["modtest_compute"], 1, 5)
    assert rax == 36
    assert struct.unpack("<q", uc.mem_read(sym(mod, "modtest_bss").address + 8, 8))[0] == 5
    rax, _ = _run(mod, mod.exports["modtest_compute"], 2, 7)
    assert rax == 8 + 30 + 8                       # ops[0] = add_one(7), table[2], add_one(7)
    assert _run(mod, sym(mod, "modtest_banner_char").address, 3)[0] & 0xFFFFFFFF == ord("t")
    # init_module: count + modtest_compute(1, 2) = 3 + (4 + 20 + 3), after printk
    init = u64(mod, mod.this_module + 64)
    assert _run(mod, init)[0] & 0xFFFFFFFF == 30


def test_weak_undefined_and_no_this_module(mods):
    m = load_module(mods["modmini"], "x", BASE, resolve, name_field=NAME_FIELD)
    assert m.name == "modmini"
    assert u64(m, m.this_module + 72) == 0               # no module_exit: weak, left 0
    assert u64(m, m.this_module + 64) == sym(m, "modmini_init").address
    bare = load_module(mods["bare"], "fallback", BASE, resolve, name_field=NAME_FIELD)
    assert bare.name == "fallback" and bare.this_module is None
    assert bare.params == [] and bare.exports == {} and bare.modinfo == {"license": ["GPL"]}


# --------------------------------------------------------------- errors


def expect(data: bytes, code: int = errno.ENOEXEC, *, base: int = BASE, res=resolve,
           **kw) -> ModuleLoadError:
    with pytest.raises(ModuleLoadError) as info:
        load_module(data, "modtest", base, res, name_field=NAME_FIELD, **kw)
    err = info.value
    assert isinstance(err, ImageError)
    assert err.errno == code
    assert str(err) == "\n".join(err.lines)
    return err


def test_missing_symbols_all_listed(mods):
    err = expect(mods["modtest"], errno.ENOENT, res=lambda n: None)
    assert sorted(err.lines) == ["modtest: Unknown symbol __fentry__ (err -2)",
                                 "modtest: Unknown symbol printk (err -2)"]
    err = expect(mods["modtest"], errno.ENOENT, res=lambda n: FENTRY if n == "__fentry__" else None)
    assert err.lines == ["modtest: Unknown symbol printk (err -2)"]


def test_r_x86_64_32_overflows(mods):
    elf = ELFFile(io.BytesIO(mods["small"]))
    types = {r["r_info_type"] for s in elf.iter_sections() if s["sh_type"] == "SHT_RELA"
             for r in s.iter_relocations()}
    assert 10 in types                                   # R_X86_64_32
    err = expect(mods["small"])
    assert err.lines[0].startswith("overflow in relocation type 10 val ffffffffa")
    assert err.lines[1] == "`small' likely not compiled with -mcmodel=kernel"


def test_pc32_overflow(mods, mod):
    far = 0xFFFF888000000000              # the direct map: more than 2 GiB away
    err = expect(mods["modtest"], res=lambda n: far)
    # the first PLT32 is add_one's fentry call at .text+1: S - 4 - P
    val = (far - 4 - (mod.sections[".text"][0] + 1)) % 2**64
    assert err.lines == [f"overflow in relocation type 4 val {val:x}",
                         "`modtest' likely not compiled with -mcmodel=kernel"]


def test_32s_overflow(mods, mod):
    low = 0x80000000                       # not in the top 2 GiB: 32S cannot reach it
    err = expect(mods["modtest"], base=low, res=lambda n: low + 0x100000)
    bss = sym(mod, "modtest_bss").address - BASE + low
    assert err.lines[0] == f"overflow in relocation type 11 val {bss:x}"


# byte patching helpers (positions found with pyelftools)

def _shdr(data: bytes, name: str) -> tuple[int, dict]:
    elf = ELFFile(io.BytesIO(data))
    for i, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return elf.header["e_shoff"] + 64 * i, sec.header
    raise KeyError(name)


SHDR_FIELDS = {"name": (0, "<I"), "type": (4, "<I"), "flags": (8, "<Q"), "offset": (24, "<Q"),
               "size": (32, "<Q"), "link": (40, "<I"), "info": (44, "<I"), "align": (48, "<Q")}


def patch(data: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def patch_shdr(data: bytes, name: str, fld: str, value: int) -> bytes:
    off, _ = _shdr(data, name)
    rel, fmt = SHDR_FIELDS[fld]
    return patch(data, off + rel, fmt, value)


def _file_off(data: bytes, secname: str, within: int) -> int:
    return _shdr(data, secname)[1]["sh_offset"] + within


def test_unknown_relocation(mods):
    d = mods["modtest"]
    info = _file_off(d, ".rela.text", 8)                 # first entry's r_info
    (old,) = struct.unpack_from("<Q", d, info)
    err = expect(patch(d, info, "<Q", (old & ~0xFFFFFFFF) | 9))
    assert err.lines == ["modtest: Unknown rela relocation: 9"]
    # R_X86_64_NONE is ignored: the site keeps its zero
    m = load_module(patch(d, info, "<Q", old & ~0xFFFFFFFF), "x", BASE, resolve, name_field=NAME_FIELD)
    assert s32(m, m.sections[".text"][0] + 1) == 0


def test_klp_relocations_are_kept_not_applied(mods, mod):
    d = patch_shdr(mods["modtest"], ".rela.data", "flags", 0x00100000 | 0x40)
    m = load_module(d, "x", BASE, resolve, name_field=NAME_FIELD)
    assert m.klp_relocations == [KlpRelaSection(".rela.data", ".data", m.sections[".data"][0],
                                                m.klp_relocations[0].entries)]
    (e,) = m.klp_relocations[0].entries             # greeting = "hello"
    greeting = sym(m, "greeting").address
    assert (e.offset, e.type, e.symbol) == (greeting - m.sections[".data"][0], 1, "")
    assert u64(m, greeting) == 0                                # not applied
    assert u64(mod, greeting) != 0


def _malformed(mods):
    d = mods["modtest"]
    e_shoff = struct.unpack_from("<Q", d, 40)[0]
    symtab = _shdr(d, ".symtab")[1]["sh_offset"]
    text_size = _shdr(d, ".text")[1]["sh_size"]
    rela0 = _file_off(d, ".rela.text", 0)
    this_mod = _file_off(d, ".gnu.linkonce.this_module", 4)
    return {
        "empty": (b"", "truncated ELF header"),
        "not elf": (b"hello world" * 10, "Invalid ELF header magic"),
        "elf32": (patch(d, 4, "B", 1), "64-bit"),
        "big endian": (patch(d, 5, "B", 2), "little-endian"),
        "ET_EXEC": (patch(d, 16, "<H", 2), "ET_REL"),
        "i386": (patch(d, 18, "<H", 3), "x86-64"),
        "shentsize": (patch(d, 58, "<H", 40), "section header size"),
        "shstrndx": (patch(d, 62, "<H", 300), "section name table index"),
        "truncated header": (d[:40], "truncated ELF header"),
        "truncated shdrs": (d[:len(d) - 8], "section header table truncated"),
        "section beyond file": (patch_shdr(d, ".text", "offset", len(d)), "truncated"),
        "section name offset": (patch(d, e_shoff + 64, "<I", 0xFFFFFF), "string offset"),
        "symtab sh_link": (patch_shdr(d, ".symtab", "link", 999), "out of range"),
        "symtab link not strtab": (patch_shdr(d, ".symtab", "link", 1), "not a string table"),
        "rela sh_info": (patch_shdr(d, ".rela.text", "info", 999), "out of range"),
        "rela sh_link": (patch_shdr(d, ".rela.text", "link", 1), "not the symbol table"),
        "st_shndx": (patch(d, symtab + 24 + 6, "<H", 500), "section index 500 out of range"),
        "st_name": (patch(d, symtab + 24, "<I", 0xFFFFFF), "string offset"),
        "reloc offset": (patch(d, rela0, "<Q", text_size - 2), "outside .text"),
        "reloc symbol": (patch(d, rela0 + 8, "<Q", (99999 << 32) | 2), "symbol index 99999"),
        "stripped": (patch_shdr(d, ".symtab", "type", 1), "module has no symbols (stripped?)"),
        "REL": (patch_shdr(d, ".rela.text", "type", 9), "REL relocation unsupported"),
        "huge bss": (patch_shdr(d, ".bss", "size", 1 << 60), "more than"),
        "alignment": (patch_shdr(d, ".data", "align", 3), "alignment"),
        "unterminated name": (d[:this_mod] + b"A" * 56 + d[this_mod + 56:], "NUL-terminated"),
        "rela size": (patch_shdr(d, ".rela.text", "size", 25), "multiple of 24"),
        "symtab size": (patch_shdr(d, ".symtab", "size", 25), "multiple of 24"),
    }


def test_malformed_inputs(mods):
    for what, (data, message) in _malformed(mods).items():
        with pytest.raises(ModuleLoadError) as info:
            load_module(data, "modtest", BASE, resolve, name_field=NAME_FIELD)
        assert info.value.errno == errno.ENOEXEC, what
        assert message in str(info.value), (what, str(info.value))
        assert str(info.value).startswith("modtest: "), what


def test_size_limit(mods):
    d = mods["modtest"]
    err = expect(d, max_size=len(d) + 1)          # the file fits, its layout does not
    assert f"more than the limit of {len(d) + 1}" in str(err)
    err = expect(d, max_size=100)
    assert "exceeds the limit of 100" in str(err)
    with pytest.raises(ModuleLoadError):
        layout_size(patch_shdr(d, ".bss", "size", 1 << 60), "modtest")


def test_common_symbols_refused(mods):
    err = expect(mods["common"])
    assert err.lines == ["modtest: please compile with -fno-common"]


def test_base_must_be_page_aligned(mods):
    with pytest.raises(EmuError, match="page-aligned"):
        load_module(mods["modtest"], "x", BASE + 8, resolve, name_field=NAME_FIELD)


def test_fuzz(mods):
    """Truncations and byte flips: only ModuleLoadError or success."""
    d = mods["modtest"]
    rng = random.Random(20240601)
    e_shoff = struct.unpack_from("<Q", d, 40)[0]
    hot = [(0, 64), (e_shoff, len(d))]
    for name in (".symtab", ".rela.text", ".rela__param", ".rela__ksymtab", "__param",
                 ".gnu.linkonce.this_module"):
        h = _shdr(d, name)[1]
        hot.append((h["sh_offset"], h["sh_offset"] + h["sh_size"]))
    outcomes = {"ok": 0, "error": 0}
    for case in range(400):
        kind = case % 4
        if kind == 0:
            data = d[:rng.randrange(len(d))]
        else:
            b = bytearray(d)
            for _ in range(rng.randint(1, 6)):
                lo, hi = hot[rng.randrange(len(hot))] if kind != 3 else (0, len(d))
                pos = rng.randrange(lo, hi)
                b[pos] = rng.choice((0, 0xFF, rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))))
            data = bytes(b)
        try:
            layout_size(data, "fuzz")
            m = load_module(data, "fuzz", BASE, lambda n: FENTRY, name_field=NAME_FIELD)
            assert len(m.image) == m.size
            outcomes["ok"] += 1
        except ModuleLoadError as exc:
            assert exc.errno in (errno.ENOEXEC, errno.ENOENT) and exc.lines
            outcomes["error"] += 1
    assert outcomes["ok"] > 20 and outcomes["error"] > 100, outcomes
