"""The kernel's livepatch selftests, ported (scenarios/selftests/): each must
pass with exactly the kernel's expected output, on both dispatch backends and
on 1 and 2 CPUs."""
import io
from pathlib import Path

import pytest

from emu import Machine
from klpemu.scenario import ScenarioRunner

SELFTESTS = sorted((Path(__file__).resolve().parent.parent / "scenarios" / "selftests").glob("test-*.sh"))


@pytest.mark.parametrize("cpus", [1, 2], ids=["1cpu", "2cpu"])
@pytest.mark.parametrize("dispatch", ["native", "python"])
@pytest.mark.parametrize("script", SELFTESTS, ids=[p.stem for p in SELFTESTS])
def test_selftest_passes(script: Path, dispatch: str, cpus: int) -> None:
    m = Machine(cpus=cpus, seed=0).boot()
    out = io.StringIO()
    runner = ScenarioRunner(m, out, dispatch=dispatch)
    result = runner.run_text(script.read_text())
    report = out.getvalue()
    assert result.exit_code == 0, report + "\n" + m.dmesg()
    assert " ... not ok" not in report and "SKIP" not in report
    assert report.count(" ... ok") == script.read_text().count("\nstart_test ")
    # (whether a patched call went through the python hook depends on the
    # script: tests/test_klp_core.py checks that on every backend)
    assert m.extensions["klp"].dispatch.backend == dispatch
