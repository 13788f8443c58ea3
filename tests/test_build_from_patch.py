"""`klpemu build --from-patch`: the kernel's klp-build on the guest kernel.

Every case builds a real patch of the guest kernel (tests/data/patches/,
against fixtures/kernel/klpbuild_targets.c and its neighbours) with gcc,
twice, and checks what klp-build's rules say of it
(scripts/livepatch/klp-build, tools/objtool/klp-diff.c):

- the functions patched are those whose machine code changed, which the
  tests find with a diff of their own (`changed_by_machine_code`: gcc
  run here, each function's bytes with its relocated fields masked and
  its relocation targets by name, with pyelftools);
- a static function gcc inlined is patched through its callers; a clone
  (.isra, .constprop, .part) under its own name; a duplicate static name
  with its sympos;
- references to statics and unexported symbols become .klp.rela
  relocations (module-elf-format.rst), exported ones stay plain;
- changed data, notrace functions, assembly, and on the legacy kernel
  what gcc inlined into __schedule are refused, naming the symbol;
- the modules load, patch, transition past a task asleep in a changed
  function, disable, and replace one another, on both dispatch backends.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from klp_helpers import SYSFS, attr, disable_lp, load_lp, patch_state, reader, wait_done

from emu import Machine
from emu.abi import FIXTURES
from emu.elf.format import SHF_RELA_LIVEPATCH, SHN_LIVEPATCH
from klp import Livepatch
from klpemu.build.compile import BuildError
from klpemu.build.from_patch import FromPatchResult, PatchRefused, build_from_patch
from klpemu.build.image_check import check_same_functions
from klpemu.build.kernel_tree import Flavour, flavour
from klpemu.build.original import original_build
from klpemu.build.patches import keep_line_numbers
from klpemu.cli import main as klpemu

PATCHES = Path(__file__).resolve().parent / "data" / "patches"
TARGETS = "kernel/klpbuild_targets.c"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One original build per flavour for this module's tests (not ~/.cache)."""
    return tmp_path_factory.mktemp("klpemu-cache")


@pytest.fixture
def build(cache: Path, tmp_path: Path):
    def run(*names: str, kernel: str = "modern", output: str | None = None, **kw) -> FromPatchResult:
        out = tmp_path / (output or "_".join(n.replace("-", "_") for n in names) + ".ko")
        return build_from_patch([PATCHES / f"{n}.patch" for n in names], out, kernel=kernel,
                                cache_dir=cache, **kw)
    return run


def boot(backend: str = "native") -> Machine:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m, backend)
    return m


# ---------------------------------------------------------------- the independent diff
def _kflags(kernel: str) -> list[str]:
    make = subprocess.run(["make", "-s", "-p", "-n", "-C", str(FIXTURES)], capture_output=True, text=True).stdout
    values = dict(re.findall(r"^(KFLAGS|LEGACY) := (.*)$", make, re.M))
    return values["KFLAGS"].split() + (values["LEGACY"].split() if kernel == "legacy" else [])


def _functions(obj: Path) -> dict[str, tuple]:
    """name -> (bytes with relocated fields zeroed, relocations by target)."""
    widths = {1: 8, 2: 4, 4: 4, 10: 4, 11: 4, 24: 8}
    with obj.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        syms = list(symtab.iter_symbols())
        out = {}
        for sym in syms:
            if sym["st_info"]["type"] != "STT_FUNC" or not sym["st_size"]:
                continue
            sec = elf.get_section(sym["st_shndx"])
            start, size = sym["st_value"], sym["st_size"]
            code = bytearray(sec.data()[start:start + size])
            targets = []
            rela = elf.get_section_by_name(".rela" + sec.name)
            for r in (rela.iter_relocations() if rela else []):
                off = r["r_offset"] - start
                if not 0 <= off < size:
                    continue
                code[off:off + widths[r["r_info_type"]]] = bytes(widths[r["r_info_type"]])
                t = syms[r["r_info_sym"]]
                if t["st_info"]["type"] == "STT_SECTION":
                    tsec = elf.get_section(t["st_shndx"])
                    if tsec["sh_flags"] & 0x20:                 # SHF_STRINGS: by the string
                        pos = r["r_addend"] + (4 if r["r_info_type"] in (2, 4) else 0)
                        name = tsec.data()[pos:tsec.data().index(b"\0", pos)]
                    else:
                        name = re.sub(r"\.\d+", "", tsec.name.split(".", 2)[-1])
                else:
                    name = re.sub(r"\.\d+", "", t.name)
                targets.append((off, r["r_info_type"], name))
            out[sym.name] = (bytes(code), targets)
    return out


def changed_by_machine_code(tmp_path: Path, patch: str, unit: str, kernel: str = "modern") -> set[str]:
    """The functions of `unit` whose machine code the patch changes, by a
    build and a comparison of this test's own."""
    tree = tmp_path / "independent" / "fixtures"
    for d in ("kernel", "include"):
        shutil.copytree(FIXTURES / d, tree / d)
    flags = [*_kflags(kernel), "-ffunction-sections", "-fdata-sections", "-Iinclude", "-Ikernel/include"]
    cmd = ["gcc", *flags, "-c", unit, "-o"]
    subprocess.run([*cmd, str(tmp_path / "orig.o")], cwd=tree, check=True)
    subprocess.run(["patch", "-p1", "-s", "-i", str(PATCHES / f"{patch}.patch")], cwd=tree.parent
                   if "fixtures/" in (PATCHES / f"{patch}.patch").read_text() else tree, check=True)
    subprocess.run([*cmd, str(tmp_path / "patched.o")], cwd=tree, check=True)
    before, after = _functions(tmp_path / "orig.o"), _functions(tmp_path / "patched.o")
    return {name for name, body in after.items() if name in before and before[name] != body}


# ---------------------------------------------------------------- scope 2: what it gets right
@pytest.mark.parametrize("patch,unit", [
    ("inline-weight", TARGETS), ("isra-pair-sum", TARGETS), ("constprop-mix", TARGETS),
    ("part-lookup", TARGETS), ("sympos-helper", "kernel/klp_sympos_b.c"), ("klp-rela", TARGETS),
    ("new-function", TARGETS), ("wait-fix", TARGETS), ("schedule-inline", "kernel/sched.c"),
    ("weak-hook", "kernel/lib/vsprintf.c")])
def test_the_functions_patched_are_those_whose_machine_code_changed(build, tmp_path, patch, unit) -> None:
    result = build(patch)
    assert set(result.patched_functions) == changed_by_machine_code(tmp_path, patch, unit)
    assert {f.unit for f in result.functions} == {unit}


def test_a_static_function_inlined_into_two_callers_is_patched_through_both(build) -> None:
    """klp-diff patches the functions whose checksum changed: klpbuild_weight()
    has no code of its own, its two callers have it inlined."""
    result = build("inline-weight")
    assert sorted(result.patched_functions) == ["klpbuild_weigh_one", "klpbuild_weigh_two"]
    assert not any("klpbuild_weight" == f.name for f in result.functions)
    m = boot()
    assert (m.call("klpbuild_weigh_one", 5), m.call("klpbuild_weigh_two", 5)) == (26, 32)
    load_lp(m, result.output)
    assert (m.call("klpbuild_weigh_one", 5), m.call("klpbuild_weigh_two", 5)) == (5 * 3 + 2 + 10, (5 * 3 + 2) * 2)


def _s64(v: int) -> int:
    return ((v + 2**63) % 2**64) - 2**63


def _pair_sum(a: int, b: int, n: int, step: int) -> int:
    """klpbuild_pair_sum() in C's wrapping 64-bit arithmetic (klpbuild_table is all zero)."""
    s = 0
    for i in range(n):
        s = _s64(s + (s >> 2) * b + step * i)
    for i in range(n):
        s = _s64(s ^ _s64((s << 1) + a))
    return s


def _mix(x: int, factor: int) -> int:
    r = x
    for i in range(4):
        r = ((r * factor + i + 2**31) % 2**32) - 2**31
    return r


CLONES = {
    "isra-pair-sum": ("klpbuild_pair_sum.isra.", [("klpbuild_isra_one", 2, 3, 4), ("klpbuild_isra_two", 2, 3, 4)],
                      lambda step: [_pair_sum(2, 3, 4, step), _pair_sum(3, 2, 5, step) + 1], (1, 2)),
    "constprop-mix": ("klpbuild_mix.constprop.", [("klpbuild_constprop_one", 1), ("klpbuild_constprop_two", 1)],
                      lambda f: [_mix(1, f), _mix(2, f) - 1], (31, 37)),
}


@pytest.mark.parametrize("patch", [*CLONES, "part-lookup"])
def test_a_clone_gcc_made_is_patched_under_its_own_name(build, patch: str) -> None:
    """.isra/.constprop/.part functions are what runs: their callers do not
    change, the clone does, and its klp_func has the clone's name."""
    result = build(patch)
    prefix = CLONES[patch][0] if patch in CLONES else "klpbuild_lookup.part."
    assert len(result.patched_functions) == 1 and result.patched_functions[0].startswith(prefix)
    assert any(r.startswith("gcc's .") for r in result.functions[0].reasons)
    m = boot()
    assert result.patched_functions[0] in m.read_file("/proc/kallsyms")
    if patch not in CLONES:
        before = [m.call("klpbuild_part_one", k) for k in (3, -3)]
        load_lp(m, result.output)
        after = [m.call("klpbuild_part_one", k) for k in (3, -3)]
        assert after[0] != before[0] and after[1] == before[1] == 0     # the inlined check is unchanged
        return
    _prefix, calls, expected, (old, new) = CLONES[patch]
    assert [m.call(*c) for c in calls] == expected(old)
    load_lp(m, result.output)
    assert [m.call(*c) for c in calls] == expected(new)
    assert m.listdir(f"{SYSFS}/{result.module_name}/vmlinux") == [f"{result.patched_functions[0]},1", "patched"]


def test_a_duplicate_static_name_is_patched_by_its_sympos(build) -> None:
    """Two files define a static klp_sympos_helper(); kallsyms lists the one
    of klp_sympos_b.c second, so its klp_func has old_sympos 2."""
    result = build("sympos-helper")
    assert [(f.old_name, f.sympos) for f in result.functions] == [("klp_sympos_helper", 2)]
    m = boot()
    load_lp(m, result.output)
    assert m.listdir(f"{SYSFS}/{result.module_name}/vmlinux") == ["klp_sympos_helper,2", "patched"]
    assert (m.call("klp_sympos_first", 1), m.call("klp_sympos_second", 1)) == (1001, 3001)


def test_references_to_statics_and_unexported_symbols_are_livepatch_relocations(build) -> None:
    """A copied function cannot reach a static variable or an unexported
    function through the module loader: klp-diff turns those references
    into .klp.rela.vmlinux.* relocations against .klp.sym.vmlinux.NAME,POS;
    an exported function keeps a plain relocation."""
    result = build("klp-rela")
    assert {(r.symbol, r.sympos, r.why) for r in result.klp_references} == {
        ("klpbuild_hits", 0, "static"), ("klpbuild_limit", 0, "not exported"),
        ("klpbuild_weigh_one", 0, "not exported")}
    assert result.exported_references == ["seq_printf"]
    with result.output.open("rb") as f:
        elf = ELFFile(f)
        klp = [s for s in elf.iter_sections() if s.name.startswith(".klp.rela.")]
        assert [s.name for s in klp] == [".klp.rela.vmlinux..text.klpbuild_show"]
        assert klp[0]["sh_flags"] & SHF_RELA_LIVEPATCH
        symtab = elf.get_section_by_name(".symtab")
        names = {symtab.get_symbol(r["r_info_sym"]).name for r in klp[0].iter_relocations()}
        assert names == {".klp.sym.vmlinux.klpbuild_hits,0", ".klp.sym.vmlinux.klpbuild_limit,0",
                         ".klp.sym.vmlinux.klpbuild_weigh_one,0"}
        for s in symtab.iter_symbols():
            if s.name.startswith(".klp.sym."):
                assert s["st_shndx"] == SHN_LIVEPATCH
        assert symtab.get_symbol_by_name("seq_printf")[0]["st_shndx"] == "SHN_UNDEF"
    m = boot()
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10\n"         # hits 1
    load_lp(m, result.output)
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10, hits 2, weight 14\n"


def test_a_new_function_is_carried_by_the_module_and_patched_in_through_its_caller(build) -> None:
    result = build("new-function")
    assert [(f.name, f.status) for f in result.functions] == [("klpbuild_show", "changed"),
                                                              ("klpbuild_bonus", "new")]
    assert result.patched_functions == ["klpbuild_show"]
    assert result.functions[1].reasons == ("the patch adds klpbuild_bonus",)
    m = boot()
    assert "klpbuild_bonus" not in m.read_file("/proc/kallsyms")
    load_lp(m, result.output)
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10, bonus 21\n"
    assert f"klpbuild_bonus\t[{result.module_name}]" in m.read_file("/proc/kallsyms")


def test_a_weak_symbol_nothing_defines_stays_weak(build) -> None:
    """vsnprintf() tests `if (vsprintf_symbol_hook)`: weak and undefined in
    vmlinux, so it is 0 there; the copy keeps a weak reference (the module
    loader makes it 0 too) instead of failing on an unknown symbol."""
    result = build("weak-hook")
    assert result.patched_functions == ["vsnprintf"]
    with result.output.open("rb") as f:
        hook = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("vsprintf_symbol_hook")[0]
        assert (hook["st_shndx"], hook["st_info"]["bind"]) == ("SHN_UNDEF", "STB_WEAK")
    m = boot()
    meminfo = m.read_file("/proc/meminfo")
    load_lp(m, result.output)
    assert m.read_file("/proc/meminfo").splitlines()[0] == meminfo.splitlines()[0]


@pytest.mark.parametrize("patch,symbol", [
    ("static-local", "ticket (static local of klpbuild_ticket(), ticket.0)"),
    ("global-data", "klpbuild_limit")])
def test_changed_data_is_refused_with_the_symbol_and_shadow_variables(build, patch, symbol) -> None:
    """klp-diff: `changed data: NAME`; a livepatch replaces code only."""
    with pytest.raises(PatchRefused) as exc:
        build(patch)
    assert exc.value.summary.startswith("changed data")
    assert [r.symbol for r in exc.value.refusals] == [symbol]
    assert "shadow variables" in exc.value.refusals[0].reason


def test_a_notrace_function_is_refused(build) -> None:
    with pytest.raises(PatchRefused) as exc:
        build("notrace")
    assert [r.symbol for r in exc.value.refusals] == ["klpbuild_untraced"]
    assert "has no fentry/mcount call, unable to patch" in exc.value.refusals[0].reason


def test_a_patch_to_assembly_is_refused_before_any_build(build) -> None:
    with pytest.raises(BuildError, match=r"unsupported patch to kernel/entry\.S: assembly has no fentry"):
        build("entry-asm")


def test_what_gcc_inlined_into_schedule_is_refused_on_legacy_and_patched_on_modern(build) -> None:
    """On legacy, __schedule() switches stacks without saving RIP (klpemu
    hazards): a change to finish_task_switch(), inlined into it, changes
    __schedule() and is refused, naming both. The modern kernel has no such
    switch: both functions are patched."""
    with pytest.raises(PatchRefused) as exc:
        build("schedule-inline", kernel="legacy")
    refusals = {r.symbol: r.reason for r in exc.value.refusals}
    assert set(refusals) == {"__schedule", "finish_task_switch"}
    assert "switches stacks without saving RIP" in refusals["__schedule"]
    assert "inlined into __schedule" in refusals["finish_task_switch"]
    result = build("schedule-inline")
    assert sorted(result.patched_functions) == ["__schedule", "finish_task_switch"]


def test_a_patch_that_changes_no_code_is_no_change(build) -> None:
    """The comment moves the WARN_ON() of klpbuild_ticket() four lines down:
    #line directives keep its __LINE__, so no machine code changes."""
    text = (PATCHES / "comment-only.patch").read_text()
    added = [line for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(added) == 4 and "WARN_ON" in (FIXTURES / TARGETS).read_text()
    with pytest.raises(PatchRefused, match="^no changes detected") as exc:
        build("comment-only")
    assert [r.symbol for r in exc.value.refusals] == [TARGETS]


def test_line_numbers_are_kept_after_each_change() -> None:
    old = "a\nb\n#define X(y) \\\n\ty\nc\n"
    new = "a\nadded\nb\n#define X(y) \\\n\t(y + 1)\nc\n"
    assert keep_line_numbers(old, new) == "a\nadded\n#line 2\nb\n#define X(y) \\\n\t(y + 1)\n#line 5\nc\n"


def test_a_patch_that_does_not_apply_shows_patch_output(build) -> None:
    with pytest.raises(BuildError) as exc:
        build("does-not-apply")
    assert "Hunk #1 FAILED at 133." in str(exc.value)
    assert str(exc.value).endswith("does-not-apply.patch did not apply")


def test_a_patch_with_offsets_applies_with_a_warning(cache, tmp_path) -> None:
    """klp-build: "applied with fuzz" when patch had to look for the hunk."""
    text = (PATCHES / "inline-weight.patch").read_text()
    shifted = tmp_path / "shifted.patch"
    shifted.write_text(re.sub(r"@@ -(\d+),", lambda m: f"@@ -{int(m[1]) + 5},", text))
    result = build_from_patch([shifted], tmp_path / "shifted.ko", cache_dir=cache)
    assert len(result.warnings) == 1 and "shifted.patch applied with fuzz" in result.warnings[0]
    assert "offset -5 lines" in result.warnings[0]


def test_what_a_patch_may_touch_and_what_gcc_says_of_it(cache, tmp_path) -> None:
    mixed = tmp_path / "mixed.patch"
    mixed.write_text((PATCHES / "wait-fix.patch").read_text()
                     + "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# klpemu\n+# klpemu!\n")
    with pytest.raises(BuildError, match="unsupported patch to README.md: not part of the guest kernel"):
        build_from_patch([mixed], tmp_path / "x.ko", cache_dir=cache)
    module = tmp_path / "module.patch"
    module.write_text("--- a/modules/klpemu_bench.c\n+++ b/modules/klpemu_bench.c\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(BuildError, match="unsupported patch to modules/klpemu_bench.c: only the guest "
                                         "kernel's sources"):
        build_from_patch([module], tmp_path / "x.ko", cache_dir=cache)
    broken = tmp_path / "broken.patch"
    broken.write_text((PATCHES / "inline-weight.patch").read_text().replace("x * 3 + 2;", "x * 3 + ;"))
    with pytest.raises(BuildError, match=r"(?s)gcc failed on kernel/klpbuild_targets.c:.*error: expected"):
        build_from_patch([broken], tmp_path / "x.ko", cache_dir=cache)


def test_the_original_must_give_back_the_image_that_boots(cache, tmp_path) -> None:
    """A stale image (one code byte of klpbuild_weigh_one differs) is refused."""
    fl = flavour("modern")
    image = tmp_path / "vmlinux-stale"
    data = bytearray(fl.image.read_bytes())
    with fl.image.open("rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name("klpbuild_weigh_one")[0]
        text = elf.get_section_by_name(".text")
        offset = text["sh_offset"] + sym["st_value"] - text["sh_addr"] + 8
    data[offset] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.raises(BuildError, match=r"does not give back .*vmlinux-stale: the code of function "
                                         r"klpbuild_weigh_one of kernel/klpbuild_targets.c differs at \+0x8"):
        original_build(Flavour("modern", fl.cflags, image), tmp_path / "cache")
    orig, _cached = original_build(fl, cache)
    with pytest.raises(BuildError, match="gcc makes other functions of kernel/proc.c"):
        check_same_functions({"kernel/proc.c": orig.object("kernel/proc.c")},
                             {"kernel/proc.c": orig.object("kernel/sched.c")})


def test_the_original_build_is_reused(build) -> None:
    build("inline-weight")
    assert build("sympos-helper").original_cached


def test_the_command_line(cache, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KLPEMU_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    assert klpemu(["build", "--from-patch", str(PATCHES / "inline-weight.patch"), "-v"]) == 0
    out = capsys.readouterr().out
    assert "kernel/klpbuild_targets.c: changed function: klpbuild_weigh_two (klp_func klpbuild_weigh_two, " \
           "sympos 0)\n    gcc inlined klpbuild_weight into it, which the patch edits\n" in out
    assert (tmp_path / "livepatch_inline_weight.ko").exists()
    assert out.endswith("livepatch_inline_weight.ko: livepatch livepatch_inline_weight for the modern "
                        "kernel, 2 function(s) patched, atomic replace on\n")
    assert klpemu(["build", "--from-patch", str(PATCHES / "sympos-helper.patch"), "-o", "livepatch-x.ko"]) == 0
    assert capsys.readouterr().out.endswith("livepatch-x.ko: livepatch livepatch_x for the modern kernel, "
                                            "1 function(s) patched, atomic replace on\n")   # kbuild's name
    assert klpemu(["build", "--from-patch", str(PATCHES / "notrace.patch")]) == 1
    assert "klpbuild_untraced: function has no fentry/mcount call" in capsys.readouterr().err
    assert klpemu(["build", "--from-patch", str(PATCHES / "x.patch")]) == 1
    assert capsys.readouterr().err == f"klpemu: build: {PATCHES / 'x.patch'} doesn't exist\n"
    assert klpemu(["build", "a.c", "--from-patch", str(PATCHES / "notrace.patch")]) == 2
    assert klpemu(["build", "a.c", "--no-replace", "-o", "a.ko"]) == 2
    assert "--no-replace goes with --from-patch" in capsys.readouterr().err
    assert klpemu(["build", "--from-patch", str(PATCHES / "notrace.patch"), "-o", "x.o"]) == 1
    assert "output filename should end with .ko" in capsys.readouterr().err


# ---------------------------------------------------------------- scope 3: a real patch binary
@pytest.fixture(params=["native", "python"])
def backend(request) -> str:
    return request.param


def test_the_modules_transition_disable_and_replace_one_another(build, backend: str) -> None:
    """wait-fix patches klpbuild_wait(), where a reader of /proc/klpbuild_wait
    sleeps: the transition waits for it. The second module is built from
    both patches (cumulative) and atomically replaces the first."""
    first = build("wait-fix")
    second = build("wait-fix", "inline-weight")
    assert sorted(second.patched_functions) == ["klpbuild_show", "klpbuild_wait",
                                                "klpbuild_weigh_one", "klpbuild_weigh_two"]
    m = boot(backend)
    sleeper = reader(m, "/proc/klpbuild_wait", "klpbuild_wait")
    m.insmod(first.output)
    m.run(2.5)
    assert attr(m, first.module_name, "transition") == "1\n"
    assert patch_state(m, sleeper.pid) == "0\n"
    assert [str(b) for b in Livepatch.attach(m).transition.blocking] == [
        f"sh:{sleeper.pid} is sleeping on function klpbuild_wait"]
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10 (fixed)\n"     # the shell has switched
    m.write_file("/sys/kernel/debug/klpbuild/release", "1")
    assert sleeper.cat_result("/proc/klpbuild_wait") == "klpbuild: released\n"  # it left the old code
    wait_done(m, first.module_name)
    assert attr(m, first.module_name, "transition") == "0\n"
    assert m.read_file("/proc/klpbuild_wait") == "klpbuild: released, fixed\n"

    disable_lp(m, first.module_name)
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10\n"
    m.rmmod(first.module_name)
    load_lp(m, first.output)
    assert m.call("klpbuild_weigh_one", 5) == 26
    load_lp(m, second.output)
    assert m.listdir(SYSFS) == [second.module_name]                           # replaced
    assert m.read_file("/proc/klpbuild") == "klpbuild: limit 10 (fixed)\n"
    assert m.call("klpbuild_weigh_one", 5) == 27
    if backend == "python":
        assert Livepatch.attach(m).dispatch.python_calls > 0
    disable_lp(m, second.module_name)
    assert (m.read_file("/proc/klpbuild_wait"), m.call("klpbuild_weigh_one", 5)) == ("klpbuild: released\n", 26)


def test_no_replace_stacks(build) -> None:
    result = build("inline-weight", output="stacked.ko", replace=False)
    m = boot()
    load_lp(m, build("wait-fix").output)
    load_lp(m, result.output)
    assert sorted(m.listdir(SYSFS)) == ["stacked", "wait_fix"]
    assert attr(m, "stacked", "replace") == "0\n"
