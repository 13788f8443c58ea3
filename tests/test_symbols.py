"""`klpemu symbols`: functions, sympos, DWARF source lines, why a function is not patchable."""
import json
from pathlib import Path

import pytest

from emu import Machine
from klpemu.cli import main

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "fixtures" / "build" / "modules" / "klpemu_test_target.ko"


def symbols(capsys, *args: str) -> dict:
    assert main(["symbols", "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == 1
    return {(f["name"], f["sympos"]): f for f in out["functions"]}


def test_json_lists_vmlinux_functions_as_kallsyms_sees_them(capsys) -> None:
    funcs = symbols(capsys)
    m = Machine(cpus=1)
    for name in ("cmdline_proc_show", "__schedule", "wait_for_completion"):
        f = funcs[(name, None)]
        sym = m.kallsyms.find(name)
        assert (f["address"], f["size"], f["object"]) == (sym.address, sym.size, "vmlinux")
        assert "patchable" not in f


def test_a_duplicated_static_gets_the_kernels_sympos_and_its_own_source_line(capsys) -> None:
    funcs = symbols(capsys, "--kernel", "legacy")
    first, second = funcs[("klp_sympos_helper", 1)], funcs[("klp_sympos_helper", 2)]
    assert first["address"] < second["address"]
    assert (first["file"], second["file"]) == ("klp_sympos_a.c", "klp_sympos_b.c")
    assert isinstance(first["line"], int) and first["line"] > 0
    m = Machine(kernel="legacy", cpus=1)
    assert m.kallsyms.find("klp_sympos_helper", sympos=2).address == second["address"]


def test_patchable_says_notrace_hazard_and_inlined_everywhere(capsys) -> None:
    funcs = symbols(capsys, "--kernel", "legacy", "--patchable")
    assert funcs[("cmdline_proc_show", None)]["patchable"] is True
    untraced = funcs[("klpbuild_untraced", None)]
    assert untraced["patchable"] is False and untraced["reasons"] == ["notrace: no fentry site"]
    assert "switches stacks without saving RIP" in funcs[("__schedule", None)]["reasons"][0]
    inlined = [f for f in funcs.values() if "inlined everywhere: no out-of-line copy to patch" in f["reasons"]]
    assert inlined and all(f["address"] is None for f in inlined)
    assert not {f["name"] for f in inlined} & {f["name"] for f in funcs.values() if f["address"] is not None}
    # a gcc clone has its function's source line, and its function is not "inlined everywhere"
    clone = funcs[("detach_timer.part.0", None)]
    assert (clone["file"], clone["patchable"]) == ("time.c", True) and clone["line"]
    assert "detach_timer" not in {f["name"] for f in inlined}


def test_text_output_is_aligned(capsys) -> None:
    assert main(["symbols", "--patchable"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "SIZE", "SYMPOS", "SOURCE", "PATCHABLE"]
    column = lines[0].index("ADDRESS")
    assert all(len(line) > column and line[column - 2:column] == "  " for line in lines)
    row = next(line for line in lines if line.startswith("klpbuild_untraced "))
    assert row.endswith("no: notrace: no fentry site")


def test_a_module_is_listed_by_section_offset_with_its_fentry_sites(capsys) -> None:
    funcs = symbols(capsys, "--module", str(TARGET), "--patchable")
    f = funcs[("klpemu_test_sleep", None)]
    assert (f["object"], f["section"]) == ("klpemu_test_target", ".text") and f["patchable"] is True
    m = Machine(cpus=1).boot()
    m.insmod(TARGET)
    assert m.kallsyms.find("klpemu_test_sleep", "klpemu_test_target").size == f["size"]
    assert "klpemu_test_sleep [klpemu_test_target]" in m.read_file(
        "/sys/kernel/tracing/available_filter_functions").splitlines()


@pytest.mark.parametrize("args, message", [
    (["--kernel", "nope"], "no kernel 'nope'"),
    (["--module", "/nonexistent/x.ko"], "no module '/nonexistent/x.ko': not a file"),
    (["--module", str(ROOT / "fixtures" / "build" / "vmlinux-modern")], "a linked image, not a module"),
    (["--kernel", str(TARGET)], "a relocatable object (a module?): use --module"),
    (["--kernel", str(ROOT / "README.md")], "not an ELF image"),
])
def test_a_bad_kernel_or_module_is_a_usage_error(capsys, args: list[str], message: str) -> None:
    assert main(["symbols", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("klpemu: symbols: ") and message in err and "Traceback" not in err


def test_a_modules_duplicated_static_gets_the_sympos_its_kallsyms_resolves(tmp_path: Path, capsys,
                                                                            machine: Machine) -> None:
    """klp_find_object_symbol counts a module's symbols of one name in its
    kallsyms order: what `klpemu symbols --module` says is what the loaded
    module resolves."""
    from klpemu.build.compile import build_module
    twin = "static noinline int twin(int x) { return x + %d; }\nint call_%s(int x) { return twin(x); }\n"
    (tmp_path / "twin_a.c").write_text("#include <linux/module.h>\n" + twin % (1, "a")
                                       + "MODULE_LICENSE(\"GPL\");\n")
    (tmp_path / "twin_b.c").write_text("#include <linux/module.h>\n" + twin % (2, "b"))
    ko = build_module([tmp_path / "twin_a.c", tmp_path / "twin_b.c"], tmp_path / "klpemu_twins.ko")
    funcs = symbols(capsys, "--module", str(ko))
    first, second = funcs[("twin", 1)], funcs[("twin", 2)]
    m = machine
    m.insmod(ko)
    loaded = m.modules.modules["klpemu_twins"].image
    for f, pos in ((first, 1), (second, 2)):
        address = loaded.sections[f["section"]][0] + f["address"]
        assert m.kallsyms.find("twin", "klpemu_twins", pos).address == address
        assert m.kallsyms.sympos("twin", address, "klpemu_twins") == pos
