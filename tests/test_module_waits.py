"""A second insmod of a module whose init is still running waits for it, as
kernel/module/main.c module_patient_check_exists does: interruptibly, until
the first goes live (-EEXIST) or fails (-EBUSY: the kernel does not load it
again right away). A module whose init was killed stays coming for good:
the second insmod then waits until the hang report's SIGKILL ends it."""
import errno
import re

import pytest

from emu import GuestHang, Machine, ShellError
from emu.abi import NR
from emu.machine import USER_STAGING
from emu.faults.kill_point import KillPoints
from klp_helpers import MODULES

SLOW = (MODULES / "klpemu_slow_init.ko").read_bytes()
CMDLINE = "console=ttyS0 klpemu\n"


def both_load(m: Machine, args: str) -> tuple[int, int, int]:
    """insmod SLOW ARGS from a second shell while the first one's init sleeps:
    (the first's result, the second's, the virtual ns the second waited)."""
    first, second = m.spawn_shell(), m.spawn_shell()
    m.mem.write(USER_STAGING, SLOW)
    first.syscall_background(NR["__NR_init_module"], USER_STAGING, len(SLOW), first.put_string(args))
    m.run(0.05)                                        # its init is asleep in msleep(200)
    assert m.modules.modules["klpemu_slow_init"].state.name == "COMING"
    start = m.clock_ns
    ret = second.syscall(NR["__NR_init_module"], USER_STAGING, len(SLOW), second.put_string(args))
    return first.syscall_result(), ret, m.clock_ns - start


def test_a_second_insmod_waits_for_the_first_to_go_live_then_is_eexist() -> None:
    m = Machine(cpus=2, seed=0).boot()
    first, second, waited = both_load(m, "")
    assert (first, second) == (0, -errno.EEXIST)
    assert waited >= 100_000_000                       # it waited out the rest of the first's init
    m.rmmod("klpemu_slow_init")


def test_a_second_insmod_of_a_module_whose_init_fails_meanwhile_is_ebusy() -> None:
    m = Machine(cpus=2, seed=0).boot()
    first, second, _ = both_load(m, "fail=1")
    assert (first, second) == (-errno.EINVAL, -errno.EBUSY)
    assert "klpemu_slow_init" not in m.modules.modules
    m.insmod(MODULES / "klpemu_slow_init.ko")          # afterwards it loads
    m.rmmod("klpemu_slow_init")


def test_reloading_a_module_whose_init_was_killed_waits_until_the_hang_report_kills_it() -> None:
    m = Machine(cpus=2, seed=0, hung_task_timeout_s=2).boot()
    with pytest.raises(GuestHang, match="still running"):
        m.insmod(MODULES / "klpemu_hostile_spin.ko")
    with pytest.raises(GuestHang) as err:
        m.insmod(MODULES / "klpemu_hostile_spin.ko")
    assert re.fullmatch(r"klpemu: guest hang: task sh:\d+ asleep after 2 seconds \(state:S, an interruptible "
                        r"wait nothing ends: sending SIGKILL\)", str(err.value))
    assert re.search(r"^ klpemu_module_wait\+0x[0-9a-f]+/0x[0-9a-f]+$", err.value.report, re.M)
    assert m.read_file("/proc/cmdline") == CMDLINE      # the shell respawned
    with pytest.raises(ShellError, match="Device or resource busy"):
        m.rmmod("klpemu_hostile_spin")                  # still coming: delete_module's -EBUSY
    assert not m.crashed


def test_klpemu_run_reports_both_hangs_and_runs_the_next_step(tmp_path, capsys) -> None:
    from klpemu.cli import main
    script = tmp_path / "reload.sh"
    script.write_text("insmod klpemu_hostile_spin.ko\ninsmod klpemu_hostile_spin.ko\ncat /proc/cmdline\n")
    assert main(["run", "--module-dir", str(MODULES), "--hung-task-timeout", "2", str(script)]) == 3
    out, err = capsys.readouterr()
    assert CMDLINE in out
    assert "the guest hung (2x)" in err, err


def test_a_sleeper_that_ignores_its_sigkill_is_reported_as_still_there() -> None:
    """schedule_timeout_interruptible in a loop: SIGKILL makes each sleep
    return at once, but the loop goes on. The hang report says the task is
    still there (the hang is recorded and raised, not a timeout of the
    detector's own)."""
    m = Machine(cpus=2, seed=0, hung_task_timeout_s=2).boot()
    with pytest.raises(GuestHang) as err:
        m.insmod(MODULES / "klpemu_hostile_isleep.ko")
    assert "asleep after 2 seconds (state:S" in str(err.value)
    assert re.fullmatch(r"klpemu: task sh:\d+ is still there 1 s after SIGKILL", err.value.report.splitlines()[-1])
    assert m.hung_task.hangs[-1] is err.value
    assert "is still there 1 s after SIGKILL" in m.dmesg_lines()[-1]
    assert not m.crashed


@pytest.mark.parametrize("seed", [0, 2])
def test_a_sleeper_that_keeps_waking_is_killed_in_no_wait_and_the_machine_goes_on(seed: int) -> None:
    """Once its SIGKILL makes every sleep return at once, the isleep loop is
    a runaway: the next command's hang report kills it. Killed inside
    schedule_timeout, it left its on-stack timer armed and the next tick
    panicked in run_local_timers (seed 0), or a dead shell was woken (seed 2);
    the kill now waits for a point in no wait."""
    m = Machine(cpus=2, seed=seed, hung_task_timeout_s=2).boot()
    reports = []
    with pytest.raises(GuestHang) as err:
        m.insmod(MODULES / "klpemu_hostile_isleep.ko")
    reports.append(err.value.report)
    while "still running on CPU" not in reports[-1]:
        assert len(reports) < 4, reports
        with pytest.raises(GuestHang) as err:
            m.read_file("/proc/sys/kernel/ftrace_enabled")
        reports.append(err.value.report)
    killed = reports[-1]
    assert "klpemu_hostile_isleep" in killed or "RIP: 0010:init_module+" in killed
    assert "schedule_timeout+" not in killed and "schedule+" not in killed
    assert m.read_file("/proc/sys/kernel/ftrace_enabled") == "1\n"
    assert m.read_file("/proc/sys/kernel/ftrace_enabled") == "1\n"
    assert not m.crashed and not m.oopses


def test_kill_points_are_outside_the_functions_that_call_schedule_or_schedule_timeout() -> None:
    """The waiters (they link their stack into the kernel while asleep) are
    found in the machine code; a wrapper that only calls one is no waiter."""
    m = Machine(cpus=1).boot()
    points = KillPoints(m.prog, m.walker)
    def waits(name: str) -> bool:
        sym = m.prog.kallsyms.find(name)
        assert sym is not None, name
        return points.is_waiter(sym, None)
    assert waits("schedule") and waits("schedule_timeout") and waits("wait_for_common")
    assert waits("__mutex_lock_slowpath")
    assert not waits("schedule_timeout_interruptible") and not waits("do_syscall_64")
