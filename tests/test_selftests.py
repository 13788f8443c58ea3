"""The kernel's livepatch selftests (scenarios/selftests/test-*.sh, upstream's
newest, byte for byte) run beside klpemu's functions.sh, as kselftest runs
them: each must pass with exactly the kernel's expected output, on both
dispatch backends and on 1 and 2 CPUs. The built-in helpers (for scripts
that source no functions.sh) must log what that functions.sh logs."""
import hashlib
import io
import re
from pathlib import Path

import pytest

from emu import Machine
from klp import Livepatch
from klpemu.scenario import FIXTURE_MODULES, ScenarioRunner
from klpemu.selftest import Die, LoadStyle, Selftest, module_dirs_finder
from klpemu.selftest.coreutils import unified_diff

SELFTESTS_DIR = Path(__file__).resolve().parent.parent / "scenarios" / "selftests"
SELFTESTS = sorted(SELFTESTS_DIR.glob("test-*.sh"))
# The git blob ids of tools/testing/selftests/livepatch/test-*.sh in the newest
# kernel tree known (facts, as message strings are): the copies are those files.
UPSTREAM_BLOBS = {
    "test-callbacks.sh": "32b150e25b10b8ab8e3cbc8a20005b2e883f8b50",
    "test-ftrace.sh": "094176f1a46aee8cf08667ae9e31ae8720bc1ae1",
    "test-kprobe.sh": "b67dfad03d97f79dd642e6371241be98d812ae74",
    "test-livepatch.sh": "bd13257bfdfe51ec846884bf25773a0684f65a59",
    "test-shadow-vars.sh": "1218c155bffeaba5735b0b127348bbe569a9017a",
    "test-state.sh": "04b66380f8a05d93d270a3ee09bfeecb1b007e4c",
    "test-syscall.sh": "289eb7d4c4b34148a2353268ad65ca28ec4e2789",
    "test-sysfs.sh": "6c646afa7395e5324c24c0aeaa6ac606745ea4f4",
}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_the_scripts_are_upstreams_byte_for_byte() -> None:
    assert {p.name: git_blob_id(p.read_bytes()) for p in SELFTESTS} == UPSTREAM_BLOBS
    assert all(". $(dirname $0)/functions.sh" in p.read_text().splitlines() for p in SELFTESTS)


@pytest.mark.parametrize("cpus", [1, 2], ids=["1cpu", "2cpu"])
@pytest.mark.parametrize("dispatch", ["native", "python"])
@pytest.mark.parametrize("script", SELFTESTS, ids=[p.stem for p in SELFTESTS])
def test_selftest_passes(script: Path, dispatch: str, cpus: int) -> None:
    m = Machine(cpus=cpus, seed=0).boot()
    out = io.StringIO()
    result = ScenarioRunner(m, out, dispatch=dispatch).run_file(script)
    report = out.getvalue()
    assert result.exit_code == 0, report + "\n" + m.dmesg()
    names = re.findall(r'^start_test "([^"]+)"$', script.read_text(), re.M)
    assert report == "".join(f"TEST: {name} ... ok\n" for name in names)      # nothing else, no stderr
    assert result.stderr == ""
    # (whether a patched call went through the python hook depends on the
    # script: tests/test_klp_core.py checks that on every backend)
    assert m.extensions["klp"].dispatch.backend == dispatch


def kernel_log(m: Machine) -> list[str]:
    """The log's text, the canaries' timestamps left out (they say when)."""
    return [re.sub(r"timestamp: .*", "timestamp:", line) for line in m.dmesg_lines()]


@pytest.mark.parametrize("name", ["test-callbacks", "test-sysfs"])
def test_the_built_in_helpers_log_what_functions_sh_logs(name: str, tmp_path: Path) -> None:
    """The same script with its `. functions.sh` line taken out runs on the
    built-in helpers: same output, same kernel log line for line."""
    script = SELFTESTS_DIR / f"{name}.sh"
    logs, reports = [], []
    for text in (None, script.read_text().replace(". $(dirname $0)/functions.sh\n", "")):
        m = Machine(cpus=2, seed=0).boot()
        out = io.StringIO()
        if text is None:
            result = ScenarioRunner(m, out).run_file(script)
        else:
            (tmp_path / script.name).write_text(text)
            result = ScenarioRunner(m, out).run_file(tmp_path / script.name)
        assert result.exit_code == 0, out.getvalue()
        logs.append(kernel_log(m))
        reports.append(out.getvalue())
    assert reports[0] == reports[1]
    assert logs[0] == logs[1]


@pytest.mark.parametrize("a, b, diff", [
    ("dbbcdbead", "dyybcdbyxd",
     "@@ -1,9 +1,10 @@\n d\n-b\n+y\n+y\n b\n c\n d\n b\n-e\n-a\n+y\n+x\n d\n"),
    ("abcdefghijk", "aBcdefghiJk",
     "@@ -1,5 +1,5 @@\n a\n-b\n+B\n c\n d\n e\n@@ -7,5 +7,5 @@\n g\n h\n i\n-j\n+J\n k\n"),
    ("x", "", "@@ -1 +0,0 @@\n-x\n"),
    ("same", "same", None),
])
def test_check_results_diff_is_gnu_diffs(a: str, b: str, diff: str | None) -> None:
    """diff -u's hunks, lines aligned as GNU diffutils 3.8 aligns them (recorded from it)."""
    out = unified_diff(list(a), list(b), "expected", "result")
    assert out == ("" if diff is None else "--- expected\n+++ result\n" + diff)


def test_the_typed_helpers_in_the_modprobe_style() -> None:
    """LoadStyle.MODPROBE: the log and errors of the functions.sh before 6.9."""
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m)
    said: list[str] = []
    st = Selftest(m, module_dirs_finder([FIXTURE_MODULES]), style=LoadStyle.MODPROBE, stdout=said.append,
                  stderr=said.append, release="5.1.0")
    st.setup_config()
    st.start_test("modprobe style")
    st.set_ftrace_enabled(0)
    st.load_failing_mod("test_klp_livepatch")
    st.set_ftrace_enabled(1)
    st.load_lp("test_klp_livepatch")
    st.disable_lp("test_klp_livepatch")
    st.unload_lp("test_klp_livepatch")
    with pytest.raises(Die):
        st.load_mod("test_klp_livepatch")
    assert st.result().split("\n")[:4] == [
        "livepatch: kernel.ftrace_enabled = 0", "% modprobe test_klp_livepatch",
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition"]
    assert "modprobe: ERROR: could not insert 'test_klp_livepatch': Device or resource busy" in st.result()
    assert said == ["TEST: modprobe style ... ",
                    "ERROR: use load_lp() to load the livepatch module test_klp_livepatch\n"]
