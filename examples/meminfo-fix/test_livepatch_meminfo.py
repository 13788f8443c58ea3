"""Regression test for livepatch_meminfo.ko, with the klpemu pytest plugin.

Run from the repository root:
    .venv/bin/python -m pytest examples/meminfo-fix
Each test builds the module from its source with the guest kernel's flags
(klp.build, as `klpemu build` does) into the test's own directory.
"""
import re

import pytest

MODULE = "livepatch_meminfo"


@pytest.mark.klpemu(cpus=2)
def test_meminfo_gains_memavailable_and_loses_it_again(klp) -> None:
    klp.build(f"{MODULE}.c", livepatch=True)
    assert "MemAvailable" not in klp.read("/proc/meminfo")

    klp.start_test("add MemAvailable to /proc/meminfo")
    klp.load_lp(MODULE)
    meminfo = klp.read("/proc/meminfo")
    total = int(re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M).group(1))
    available = int(re.search(r"^MemAvailable:\s+(\d+) kB$", meminfo, re.M).group(1))
    assert 0 < available <= total

    klp.disable_lp(MODULE)
    klp.unload_lp(MODULE)
    assert "MemAvailable" not in klp.read("/proc/meminfo")

    # as in the kernel selftests, check_result compares the log lines that
    # contain "livepatch:" or "test_klp" since start_test
    klp.check_result(f"""livepatch: enabling patch '{MODULE}'
livepatch: '{MODULE}': initializing patching transition
livepatch: '{MODULE}': starting patching transition
livepatch: '{MODULE}': completing patching transition
livepatch: '{MODULE}': patching complete
livepatch: '{MODULE}': initializing unpatching transition
livepatch: '{MODULE}': starting unpatching transition
livepatch: '{MODULE}': completing unpatching transition
livepatch: '{MODULE}': unpatching complete""")


def test_every_task_runs_the_fix_once_the_transition_is_done(klp) -> None:
    klp.build(f"{MODULE}.c", livepatch=True)
    klp.load_lp(MODULE)
    for task in klp.machine.tasks():
        assert klp.read(f"/proc/{task.pid}/patch_state") == "-1\n"
    assert "MemAvailable" in klp.read("/proc/meminfo")
