"""--watchdog-thresh takes what the kernel's sysctl takes: 0 (off) to 60."""
import pytest

from emu import EmuError, Machine
from emu.faults.watchdog import check_watchdog_thresh
from klpemu.cli import main


@pytest.mark.parametrize("value", ["nan", "-1", "61", "inf", "ten"])
def test_a_bad_threshold_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["boot", "--watchdog-thresh", value])
    assert err.value.code == 2
    assert "argument --watchdog-thresh: watchdog_thresh must be" in capsys.readouterr().err


@pytest.mark.parametrize("value", [float("nan"), -1.0, 60.5])
def test_the_machine_refuses_a_bad_threshold(value: float) -> None:
    with pytest.raises(EmuError, match="watchdog_thresh must be 0 \\(off\\) to 60 seconds"):
        Machine(watchdog_thresh_s=value)


def test_zero_disables_the_watchdog() -> None:
    assert check_watchdog_thresh(0) == 0.0
    m = Machine(cpus=1, seed=0, watchdog_thresh_s=0).boot()
    m.run(1.0)
    assert m.read_file("/proc/cmdline").startswith("console=")
