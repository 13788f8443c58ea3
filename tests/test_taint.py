"""print_tainted() in every report (kernel/panic.c, 6.12's 19 flags): "Not
tainted" until something taints the kernel, then one letter per flag, a
space for each flag not set (G for P's). load_module taints O (every module
here is out of tree) and K (a livepatch) before the module's init runs;
oops_end taints D after the first oops's report. And the shell is refused
with a clear error before boot."""
import pytest

from emu import EmuError, Machine
from klp import Livepatch
from klp_helpers import MODULES

CRASH = "/sys/kernel/debug/provoke-crash/DIRECT"


def oops_task_line(m: Machine) -> str:
    shell = m.spawn_shell()
    before = len(m.oopses)
    with pytest.raises(Exception):
        shell.write(CRASH, "EXCEPTION\n")
    assert len(m.oopses) == before + 1
    line = next(ln for ln in m.oopses[-1].lines if ln.startswith("CPU: "))
    return line.split(" Comm: sh ", 1)[1]


def test_reports_print_the_taint_flags_as_the_kernel_does() -> None:
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m, "native")
    assert oops_task_line(m) == "Not tainted 6.12.0-klpemu #1"
    assert oops_task_line(m) == "Tainted: G      D            6.12.0-klpemu #1"
    m.insmod(MODULES / "test_klp_livepatch.ko")
    assert oops_task_line(m) == "Tainted: G      D    O  K    6.12.0-klpemu #1"
    assert m.read_file("/proc/cmdline") == "test_klp_livepatch: this has been live patched\n"


def test_the_shell_before_boot_is_a_clear_error() -> None:
    m = Machine(cpus=1, seed=0)
    for op in (lambda: m.insmod(MODULES / "test_klp_livepatch.ko"), lambda: m.read_file("/proc/cmdline"),
               lambda: m.rmmod("test_klp_livepatch"), lambda: m.write_file("/proc/sys/kernel/ftrace_enabled", "1")):
        with pytest.raises(EmuError, match=r"^the machine has not booted: call boot\(\) before using its shell"):
            op()
    m.boot()
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
