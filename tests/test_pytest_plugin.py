"""The pytest plugin and `klpemu build`, as a livepatch author uses them:
the worked example passes, a broken patch fails with a clear report,
--klpemu-seeds reruns tests on several seeds."""
import json
import shutil
from pathlib import Path

import pytest

from emu.elf.image import ElfImage
from emu.elf.module_loader import load_module
from emu.machine import resolve_kernel
from emu.module.manager import module_name_field
from klpemu.build.compile import BuildError, build_module
from klpemu.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "meminfo-fix"
pytest_plugins = ["pytester"]


@pytest.fixture
def example(pytester: pytest.Pytester) -> Path:
    for f in ("livepatch_meminfo.c", "test_livepatch_meminfo.py"):
        shutil.copy(EXAMPLE / f, pytester.path / f)
    return pytester.path


def test_the_worked_example_passes(pytester: pytest.Pytester, example: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_broken_patch_fails_with_the_log_diff_and_kernel_log(pytester: pytest.Pytester, example: Path) -> None:
    src = example / "livepatch_meminfo.c"
    src.write_text(src.read_text().replace('"MemAvailable:   "', '"MemAvail:       "'))
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*klpemu kernel log*", "*livepatch: 'livepatch_meminfo': patching complete*"])


def test_check_result_failure_shows_the_diff(pytester: pytest.Pytester, example: Path) -> None:
    test = example / "test_livepatch_meminfo.py"
    test.write_text(test.read_text().replace("initializing patching", "initialising patching"))
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*KlpemuFailure: not ok*", "*-livepatch: 'livepatch_meminfo': initialising*",
                                 "*+livepatch: 'livepatch_meminfo': initializing*",
                                 "*(check_result compares the kernel log lines after the test's canary that contain "
                                 "'livepatch:' or 'test_klp' (as functions.sh does), taint notices left out; the "
                                 "other lines since the canary:)",
                                 "*% insmod test_modules/livepatch_meminfo.ko*"])
    # the report points at the test's line, not into the plugin
    result.stdout.fnmatch_lines(["test_livepatch_meminfo.py:*: KlpemuFailure"])
    result.stdout.no_fnmatch_line("*pytest_plugin.py*")


def test_seeds_option_reruns_each_test(pytester: pytest.Pytester, example: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--klpemu-seeds", "3")
    result.assert_outcomes(passed=6)
    result.stdout.no_fnmatch_line("*seed3*")


def test_unknown_marker_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.klpemu(cpu=2)
        def test_x(klp):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*unknown option(s) cpu (the options: cpus, seed, kernel, dispatch, cmdline, "
                                 "module_dirs, schedule, klp_version, snapshot)*"])
    assert result.ret != 0


def test_build_marks_a_livepatch_and_compiles_with_the_kernel_flags(tmp_path: Path) -> None:
    ko = build_module([EXAMPLE / "livepatch_meminfo.c"], tmp_path / "lp.ko", livepatch=True)
    name_field = module_name_field(ElfImage(resolve_kernel("modern")).offsets())
    image = load_module(ko.read_bytes(), "lp", 0xFFFFFFFFA0000000, lambda name: 0xFFFFFFFF81000000,
                        name_field=name_field)
    assert image.name == "lp"
    assert image.modinfo["livepatch"] == ["Y"]           # the source says so already: not twice
    assert image.mcount_sites                               # -pg -mfentry -mrecord-mcount
    plain = tmp_path / "plain.c"
    plain.write_text("#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n")
    image = load_module(build_module([plain], tmp_path / "plain.ko", livepatch=True).read_bytes(),
                        "plain", 0xFFFFFFFFA0000000, lambda name: 0xFFFFFFFF81000000, name_field=name_field)
    assert image.modinfo["livepatch"] == ["Y"]


def test_a_dash_in_the_file_name_is_an_underscore_in_the_module_name(tmp_path: Path) -> None:
    """As Kbuild does: livepatch-meminfo.ko is module livepatch_meminfo."""
    ko = build_module([EXAMPLE / "livepatch_meminfo.c"], tmp_path / "livepatch-meminfo.ko", livepatch=True)
    name_field = module_name_field(ElfImage(resolve_kernel("modern")).offsets())
    image = load_module(ko.read_bytes(), "livepatch_meminfo", 0xFFFFFFFFA0000000,
                        lambda name: 0xFFFFFFFF81000000, name_field=name_field)
    assert image.name == "livepatch_meminfo"


def test_build_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undeclared_thing; }\n")
    with pytest.raises(BuildError, match="undeclared_thing"):
        build_module([bad], tmp_path / "bad.ko")
    with pytest.raises(BuildError, match="NAME.ko"):
        build_module([bad], tmp_path / "bad.name.ko")
    with pytest.raises(BuildError, match="no such source file"):
        build_module([tmp_path / "missing.c"], tmp_path / "m.ko")
    assert main(["build", str(bad), "-o", str(tmp_path / "bad.ko")]) == 1
    assert "undeclared_thing" in capsys.readouterr().err
    assert main(["build", str(EXAMPLE / "livepatch_meminfo.c"), "-o", str(tmp_path / "ok.ko")]) == 0
    assert (tmp_path / "ok.ko").is_file()


def test_a_stuck_transition_is_explained_in_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_stuck(klp):
            klp.load_mod("klpemu_test_target", "sleeper=1")
            klp.load_lp_nowait("klpemu_test_patch")
            klp.sleep(2)
            assert klp.read("/sys/kernel/livepatch/klpemu_test_patch/transition") == "0\\n"
    """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*klpemu blocking tasks*",
                                 "*klpemu_sleeper:* is sleeping on function klpemu_test_sleep*"])


def test_junit_xml_keeps_the_kernel_log_and_the_blocking_tasks(pytester: pytest.Pytester) -> None:
    import xml.etree.ElementTree as ET
    pytester.makepyfile("""
        def test_stuck(klp):
            klp.load_mod("klpemu_test_target", "sleeper=1")
            klp.load_lp_nowait("klpemu_test_patch")
            klp.sleep(2)
            assert klp.read("/sys/kernel/livepatch/klpemu_test_patch/transition") == "0\\n"
    """)
    pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--junitxml=out.xml")
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "out.xml").iter("property")}
    assert "livepatch: 'klpemu_test_patch': starting patching transition" in props["klpemu kernel log"]
    assert "is sleeping on function klpemu_test_sleep" in props["klpemu blocking tasks"]
    assert "still running at the end" in props["klpemu timeline"]
    assert "klpemu_sleeper:" in props["klpemu timeline"]


def test_blocking_is_typed_and_build_compiles_next_to_the_test(pytester: pytest.Pytester) -> None:
    shutil.copy(EXAMPLE / "livepatch_meminfo.c", pytester.path / "fix.c")
    (pytester.path / "broken.c").write_text("int f(void) { return nope; }\n")
    pytester.makepyfile("""
        import pytest
        from klp.transition import BlockingTask
        from klpemu.pytest_plugin import KlpemuFailure

        def test_blocking(klp):
            assert klp.blocking() == []
            klp.load_mod("klpemu_test_target", "sleeper=1")
            klp.load_lp_nowait("klpemu_test_patch")
            klp.sleep(2)
            (task,) = klp.blocking()
            assert isinstance(task, BlockingTask) and task.blocker == "klpemu_test_sleep"
            assert str(task) == f"klpemu_sleeper:{task.pid} is sleeping on function klpemu_test_sleep"
            assert "klpemu_test_sleep+" in "\\n".join(task.stack)
            assert klp.livepatch.transition.patch.name == "klpemu_test_patch"

        def test_build(klp):
            ko = klp.build("fix.c", name="lp-fix", livepatch=True)
            assert ko.name == "lp-fix.ko"
            klp.load_lp("lp_fix")
            assert "MemAvailable" in klp.read("/proc/meminfo")
            with pytest.raises(KlpemuFailure, match="nope"):
                klp.build("broken.c")
    """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_skipping_helper_skips_the_test(pytester: pytest.Pytester) -> None:
    """functions.sh's skip (here: kernel.ftrace_enabled refuses the value) skips the test."""
    pytester.makepyfile("""
        def test_skips(klp):
            klp.set_ftrace_enabled("x")
            raise AssertionError("not reached")
    """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*failed to set kernel.ftrace_enabled = x*"])


def test_seeds_must_be_positive(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--klpemu-seeds", "0")
    result.stderr.fnmatch_lines(["*--klpemu-seeds needs a positive number*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_strategy_option_sets_every_machines_schedule(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_x(klpemu_machine, klpemu_seed):
            spec = klpemu_machine.schedule_spec
            assert (spec.strategy, spec.seed, spec.params) == ("pct", klpemu_seed, (("depth", 2.0),))
        """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--klpemu-seeds", "2",
                                           "--klpemu-strategy", "pct,depth=2")
    result.assert_outcomes(passed=2)


def test_a_bad_strategy_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--klpemu-strategy", "fifo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--klpemu-strategy: unknown schedule strategy 'fifo'*"])


def test_klp_explore_passes_and_fails_with_the_replay_line(pytester: pytest.Pytester,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """klp.explore from a test: a scenario that passes on every schedule
    gives its summary; one whose transition stays blocked fails naming the
    first schedule and a replay line that `klpemu run` replays."""
    pytester.makepyfile("""
        import pytest

        BASIC = "setup_config\\nload_lp test_klp_livepatch\\ndisable_lp test_klp_livepatch\\nunload_lp test_klp_livepatch\\n"

        @pytest.mark.klpemu(cpus=1)
        def test_basic(klp):
            summary = klp.explore(BASIC, runs=3, cpus=(1, 2), jobs=1)
            assert summary["runs"] == 6 and summary["failing_runs"] == 0

        def test_stall(klp):
            klp.explore("insmod klpemu_test_target.ko sleeper=1\\ninsmod klpemu_test_patch.ko\\nsleep 2\\n",
                        runs=2, strategy="pct,depth=2", jobs=1)
        """)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*KlpemuExplorationFailure: * of 2 schedules did not pass:*",
                                 "*stalled x* ('klpemu_test_patch' blocked by klpemu_test_sleep)*",
                                 "*first: pct:0,depth=2 on 2 CPUs; replay: klpemu run */explore0.sh --seed 0 "
                                 "--schedule pct,depth=2 --module-dir *"])
    result.stdout.no_fnmatch_line("*klpemu kernel log*")
    replay = next(line for line in result.stdout.lines if "replay: klpemu run" in line).split("replay: ")[1]
    capsys.readouterr()
    assert main(replay.split()[1:] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["blocking"]["patch"] == "klpemu_test_patch"    # replayed
