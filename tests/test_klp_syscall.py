"""test_klp_syscall and what it stands on: sysfs kobjects in the guest, user
tasks hammering getpid, kill, the scenario language of test-syscall.sh, and
that selftest itself."""
from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from emu import Machine, ShellError
from emu.kernel.shell import MODE_GETPID_LOOP, MODE_SLEEPER
from klp import Livepatch
from klp_helpers import MODULES, SYSFS, disable_lp, errno_of, load_lp
from klpemu.scenario import ScenarioRunner

ROOT = Path(__file__).resolve().parent.parent
MODULE = MODULES / "test_klp_syscall.ko"
SCRIPT = ROOT / "scenarios" / "selftests" / "test-syscall.sh"
KOBJ = "/sys/kernel/test_klp_syscall"
NPIDS = f"{KOBJ}/npids"
KLP = f"{SYSFS}/test_klp_syscall"
SIGTERM = 15


@pytest.fixture
def m() -> Machine:
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m)
    return m


def load(m: Machine, args: str = "") -> None:
    load_lp(m, MODULE, args, timeout_s=5)


def unload(m: Machine) -> None:
    disable_lp(m, "test_klp_syscall", timeout_s=5)
    m.rmmod("test_klp_syscall")


# ---------------------------------------------------------------- guest sysfs
def test_the_kernels_own_kobjects(m: Machine) -> None:
    assert m.read_file("/sys/devices/system/cpu/online") == "0\n"
    assert {"devices", "kernel"} <= set(m.listdir("/sys"))
    assert m.is_dir("/sys/kernel") and m.is_dir("/sys/devices/system/cpu")
    assert m.listdir("/sys/devices/system/cpu") == ["online"]
    assert m.file_mode("/sys/devices/system/cpu") == 0o755
    assert m.file_mode("/sys/devices/system/cpu/online") == 0o444
    assert errno_of(m.read_file, "/sys/kernel") == errno.EISDIR
    assert errno_of(m.write_file, "/sys/devices/system/cpu/online", "1") == errno.EACCES
    assert Machine(cpus=2, seed=0).boot().read_file("/sys/devices/system/cpu/online") == "0-1\n"


def test_the_module_adds_its_kobject_and_rmmod_removes_it(m: Machine) -> None:
    load(m)
    assert {"livepatch", "test_klp_syscall"} <= set(m.listdir("/sys/kernel"))
    assert m.listdir(KOBJ) == ["npids"]
    assert (m.file_mode(KOBJ), m.file_mode(NPIDS)) == (0o755, 0o444)
    assert m.read_file(NPIDS) == "0\n"                    # shown by the module's npids_show()
    assert not m.exists("/sys/module/test_klp_syscall/parameters/klp_pids")   # perm 0
    with pytest.raises(ShellError, match="write error: .*/npids: Permission denied"):
        m.write_file(NPIDS, "3")
    assert errno_of(m.write_file, KOBJ, "3") == errno.EISDIR
    assert m.shell.syscall(39) == m.shell.pid             # the new getpid gives the same answer
    unload(m)
    assert not m.exists(KOBJ) and not m.is_dir(KOBJ)
    assert "test_klp_syscall" not in m.listdir("/sys/kernel")
    assert errno_of(m.read_file, NPIDS) == errno.ENOENT
    assert m.read_file("/sys/devices/system/cpu/online") == "0\n"   # the other kobjects stay


def test_a_duplicate_kobject_is_refused_with_the_kernels_messages(m: Machine) -> None:
    load(m)
    kernel_kobj = m.mem.read_u64(m.symbol_address("kernel_kobj"))
    assert m.call("kobject_create_and_add", m.shell.put_string("test_klp_syscall"), kernel_kobj) == 0
    assert m.dmesg_lines()[-3:] == [
        "sysfs: cannot create duplicate filename '/kernel/test_klp_syscall'",
        "kobject: kobject_add_internal failed for test_klp_syscall with -EEXIST, don't try to register "
        "things with the same name in the same directory.",
        "kobject: kobject_create_and_add: kobject_add error: -17"]
    assert m.read_file(NPIDS) == "0\n"                    # the module's kobject is untouched
    unload(m)


# ---------------------------------------------------------------- the module
def test_npids_counts_down_as_each_listed_task_calls_the_new_getpid() -> None:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m)
    hammers = [m.shell.spawn(MODE_GETPID_LOOP, "test_klp-call_getpid") for _ in range(2)]
    sleeper = m.shell.spawn(MODE_SLEEPER, "sleeper")
    m.insmod(MODULE, f"klp_pids={hammers[0]},{hammers[1]},{sleeper},{m.shell.pid}")
    # The hammering tasks switch at their own syscall exit, long before the
    # transition's next retry (a second later) completes it, and then call
    # the new getpid.
    m.run_until(lambda: m.read_file(NPIDS) == "2\n", 0.5, "the hammering tasks to call the new getpid")
    assert m.read_file(f"{KLP}/transition") == "1\n"
    assert [m.task(p).patch_state for p in hammers] == [1, 1]     # KLP_TRANSITION_PATCHED
    # The shell (switched when it enabled the patch) counts when it calls
    # getpid; the sleeper never does.
    assert m.shell.syscall(39) == m.shell.pid
    assert m.read_file(NPIDS) == "1\n"
    for pid in [*hammers, sleeper]:
        assert m.shell.syscall(62, pid, SIGTERM) == 0
    m.run_until(lambda: m.read_file(f"{KLP}/transition") == "0\n", 5, "the patching transition")
    assert not {t.pid for t in m.tasks()} & {*hammers, sleeper}
    assert m.read_file(NPIDS) == "1\n"
    unload(m)
    assert not m.exists(KOBJ)


# ---------------------------------------------------------------- the selftest
@pytest.mark.parametrize("cpus", [1, 2])
def test_the_ported_selftest_passes(cpus: int) -> None:
    m = Machine(cpus=cpus, seed=0).boot()
    out = io.StringIO()
    result = ScenarioRunner(m, out).run_file(SCRIPT)          # beside its functions.sh
    assert out.getvalue() == "TEST: patch getpid syscall while being heavily hammered ... ok\n"
    assert result.ok and result.exit_code == 0, result.failures
    insmod, = [ln for ln in m.dmesg_lines() if ln.startswith("% insmod test_modules/test_klp_syscall.ko")]
    assert len(insmod.split("klp_pids=")[1].split(",")) == cpus         # one hammering task per CPU
    assert not [t for t in m.tasks() if t.comm == "test_klp-call_g"]  # killed
    assert not m.exists(KOBJ)


SYS_READ, SYS_OPEN, SYS_CLOSE = 0, 2, 3


def test_a_file_left_open_when_its_module_goes_fails_instead_of_calling_it(m: Machine) -> None:
    """kernfs (sysfs) gives -ENODEV, procfs -EIO, for an entry removed while
    open: the module's show()/store() is never called after it is gone, even
    when a new entry has taken the slot."""
    sh = m.shell
    buf = sh.mailbox + sh.layout.out                                # the mailbox's output area
    load(m)
    m.insmod(MODULES / "test_klp_mod_target.ko")
    sysfs_fd = sh.syscall(SYS_OPEN, sh.put_string(NPIDS), 0)
    proc_fd = sh.syscall(SYS_OPEN, sh.put_string("/proc/test_klp_mod_target"), 0)
    assert sysfs_fd >= 0 and proc_fd >= 0
    unload(m)
    m.rmmod("test_klp_mod_target")
    m.insmod(MODULES / "test_klp_mod_target.ko")   # reuses a slot
    assert sh.syscall(SYS_READ, sysfs_fd, buf, 64) == -errno.ENODEV
    assert sh.syscall(SYS_READ, proc_fd, buf, 64) == -errno.EIO
    assert sh.syscall(SYS_CLOSE, sysfs_fd) == 0 and sh.syscall(SYS_CLOSE, proc_fd) == 0
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_target: original output\n"
