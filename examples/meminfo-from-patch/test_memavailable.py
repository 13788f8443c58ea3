"""Regression tests for a livepatch made from a source patch.

memavailable.patch is the fix as a kernel developer writes it (a diff of
fixtures/kernel/proc.c); `klpemu build --from-patch` turns it into
livepatch_memavailable.ko, as the kernel's klp-build would. Run from the
repository root:
    .venv/bin/klpemu build --from-patch examples/meminfo-from-patch/memavailable.patch \\
        -o examples/meminfo-from-patch/livepatch_memavailable.ko -v
    .venv/bin/python -m pytest -p no:xdist examples/meminfo-from-patch
(the `built` fixture below builds it too, before the tests).
"""
import re
from pathlib import Path

import pytest

from klpemu.build.from_patch import build_from_patch

HERE = Path(__file__).resolve().parent
MODULE = "livepatch_memavailable"


@pytest.fixture(scope="module", autouse=True)
def built():
    """The module, built afresh (the original kernel build is cached in ~/.cache/klpemu)."""
    return build_from_patch([HERE / "memavailable.patch"], HERE / f"{MODULE}.ko")


def test_the_build_patches_only_meminfo_proc_show(built) -> None:
    assert built.patched_functions == ["meminfo_proc_show"]
    # show_val_kb() is static and gcc inlined it: nothing else changed
    assert [f.name for f in built.functions] == ["meminfo_proc_show"]


@pytest.mark.klpemu(cpus=2)
def test_meminfo_gains_memavailable_and_loses_it_again(klp) -> None:
    assert "MemAvailable" not in klp.read("/proc/meminfo")

    klp.start_test("add MemAvailable to /proc/meminfo")
    klp.load_lp(MODULE)
    meminfo = klp.read("/proc/meminfo")
    free = int(re.search(r"^MemFree:\s+(\d+) kB$", meminfo, re.M).group(1))
    available = int(re.search(r"^MemAvailable:\s+(\d+) kB$", meminfo, re.M).group(1))
    assert 0 < available and abs(available - free) <= 64        # both read nr_free_pages()

    klp.disable_lp(MODULE)
    klp.unload_lp(MODULE)
    assert "MemAvailable" not in klp.read("/proc/meminfo")
    klp.check_result(f"""livepatch: enabling patch '{MODULE}'
livepatch: '{MODULE}': initializing patching transition
livepatch: '{MODULE}': starting patching transition
livepatch: '{MODULE}': completing patching transition
livepatch: '{MODULE}': patching complete
livepatch: '{MODULE}': initializing unpatching transition
livepatch: '{MODULE}': starting unpatching transition
livepatch: '{MODULE}': completing unpatching transition
livepatch: '{MODULE}': unpatching complete""")


@pytest.mark.klpemu(cpus=2, dispatch="python")
def test_every_task_switches_and_the_fix_is_atomic_replace(klp) -> None:
    """klp-build sets replace: loading the module again after a new build
    would replace this one; here, every task runs the fix."""
    klp.load_lp(MODULE)
    assert klp.read(f"/sys/kernel/livepatch/{MODULE}/replace") == "1\n"
    for task in klp.machine.tasks():
        assert klp.read(f"/proc/{task.pid}/patch_state") == "-1\n"
    assert "MemAvailable" in klp.read("/proc/meminfo")
