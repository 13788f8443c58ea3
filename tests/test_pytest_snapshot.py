"""Tests forked from a snapshot (@pytest.mark.klpemu(snapshot=...)): the
same bytes as a freshly booted test on every seed, one boot (and setup) per
worker, a failure that reaches pytest readable with the child's kernel log,
and a clear error when a fixture runs the shared machine."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
RUN = ("-p", "no:xdist", "-p", "no:cacheprovider")

SAME_RUN = '''
import pytest
from pathlib import Path

def basic(klp, path):
    klp.start_test("basic function patching")
    klp.load_lp("test_klp_livepatch")
    assert klp.read("/proc/cmdline") == "test_klp_livepatch: this has been live patched\\n"
    klp.disable_lp("test_klp_livepatch")
    klp.unload_lp("test_klp_livepatch")
    Path(path).write_text(klp.dmesg())

@pytest.mark.klpemu(schedule="pct,depth=3")
def test_fresh(klp, klpemu_seed):
    basic(klp, f"fresh-{klpemu_seed}")

@pytest.mark.klpemu(schedule="pct,depth=3", snapshot=True)
def test_forked(klp, klpemu_seed):
    basic(klp, f"forked-{klpemu_seed}")
'''


def test_a_forked_test_is_the_fresh_test_byte_for_byte_on_every_seed(pytester: pytest.Pytester) -> None:
    """snapshot=True: the snapshot is the booted machine, setup_config and
    the test run in the child under the test's seed, as on a fresh boot."""
    pytester.makepyfile(SAME_RUN)
    pytester.runpytest_subprocess(*RUN, "--klpemu-seeds", "3").assert_outcomes(passed=6)
    logs = {p.name: p.read_bytes() for p in pytester.path.glob("f*-[0-9]")}
    assert len(logs) == 6
    for seed in range(3):
        assert logs[f"forked-{seed}"] == logs[f"fresh-{seed}"]
        assert b"livepatch: 'test_klp_livepatch': unpatching complete" in logs[f"fresh-{seed}"]
    assert len({logs[f"fresh-{seed}"] for seed in range(3)}) > 1      # the seeds do interleave differently


SETUP_ONCE = '''
import pytest

PATCHED = "test_klp_livepatch: this has been live patched\\n"

def patched(klp):
    with open("setups", "a") as f:
        f.write("setup\\n")
    klp.load_lp("test_klp_livepatch")

@pytest.mark.klpemu(snapshot=patched)
def test_a_disables_it(klp):
    assert klp.read("/proc/cmdline") == PATCHED
    klp.disable_lp("test_klp_livepatch")
    assert klp.read("/proc/cmdline") != PATCHED

@pytest.mark.klpemu(snapshot=patched)
def test_b_still_finds_it_patched(klp, tmp_path):
    assert klp.read("/proc/cmdline") == PATCHED
    klp.build("extra.c")                    # into this test's tmp_path
    assert (tmp_path / "extra.ko").is_file()

@pytest.mark.klpemu(snapshot=patched)
def test_c_skips(klp):
    pytest.skip("skipped in the child")
'''

EXTRA = '''
#include <linux/module.h>
static int __init extra_init(void) { return 0; }
module_init(extra_init);
MODULE_LICENSE("GPL");
'''


def test_the_setup_runs_once_and_no_test_sees_anothers_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SETUP_ONCE)
    (pytester.path / "extra.c").write_text(EXTRA)
    result = pytester.runpytest_subprocess(*RUN, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*skipped in the child*"])
    assert (pytester.path / "setups").read_text() == "setup\n"


FAILING = '''
import pytest

@pytest.mark.klpemu(snapshot=True)
def test_wrong_cmdline(klp):
    klp.load_lp("test_klp_livepatch")
    cmdline = klp.read("/proc/cmdline")
    assert cmdline == "unpatched\\n"

@pytest.mark.klpemu(snapshot=True)
def test_oops(klp):
    klp.write("/sys/kernel/debug/provoke-crash/DIRECT", "EXCEPTION")

@pytest.fixture
def loaded(klp):
    klp.load_lp("test_klp_livepatch")
    return klp

@pytest.mark.klpemu(snapshot=True)
def test_fixture_runs_the_machine(loaded):
    pass
'''


def test_failures_reach_pytest_readable_with_the_childs_kernel_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    wrong = out[out.index("_ test_wrong_cmdline _"):out.index("_ test_oops _")]
    assert "E   AssertionError: assert 'test_klp_liv...ive patched\\n' == 'unpatched\\n'" in wrong
    assert "in test_wrong_cmdline\n    assert cmdline == \"unpatched\\n\"" in wrong    # the child's traceback
    assert "pytest_plugin.py" not in wrong                       # its frames hide, as in-process
    assert "klpemu kernel log" in wrong and "livepatch: 'test_klp_livepatch': patching complete" in wrong
    oops = out[out.index("_ test_oops _"):out.index("_ test_fixture_runs_the_machine _")]
    assert "ShellError" in oops and "died during the command" in oops
    assert "BUG: kernel NULL pointer dereference" in oops             # the child's log, in the report
    result.stdout.fnmatch_lines(["*KlpemuFailure: the snapshot's machine ran before the test (a fixture used "
                                 "klp or klpemu_machine?)*"])


def test_a_snapshot_that_is_not_true_or_a_function_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import pytest
        @pytest.mark.klpemu(snapshot="yes")
        def test_x(klp):
            pass
    ''')
    result = pytester.runpytest_subprocess(*RUN)
    result.stdout.fnmatch_lines(["*@pytest.mark.klpemu(snapshot=...) takes True or a function of klp, not 'yes'*"])
    assert result.ret != 0
