"""Runaway guests (#19 point 4): a shell command that never finishes is a
hang. A task asleep in D state gets khungtaskd's report; a task that keeps
running preemptibly (no hung task, no soft lockup) gets the host's "klpemu:
guest hang" report and is killed, and init's shell respawns."""
import re

import pytest

from emu import EmuError, GuestHang, Machine
from emu.abi import NR
from emu.machine import USER_STAGING
from klp_helpers import MODULES
from klpemu.cli import main

CMDLINE = "console=ttyS0 klpemu\n"


@pytest.fixture(scope="module")
def m() -> Machine:
    return Machine(cpus=2, seed=0, hung_task_timeout_s=2).boot()


def test_a_runaway_init_is_reported_killed_and_the_shell_respawns(m: Machine) -> None:
    before, pid = len(m.dmesg_lines()), m.shell.pid
    with pytest.raises(GuestHang) as err:
        m.insmod(MODULES / "klpemu_hostile_spin.ko")
    assert re.fullmatch(r"klpemu: guest hang: task sh:\d+ still running on CPU#\d after 2 seconds "
                        r"\(state:R, not blocked: no hung task, and a preemptible loop is no soft lockup\)",
                        str(err.value))
    report = err.value.report
    assert re.search(r"^RIP: 0010:init_module\+0x[0-9a-f]+/0x[0-9a-f]+ \[klpemu_hostile_spin\]$", report, re.M)
    assert "Call Trace:\n <TASK>\n" in report and " entry_SYSCALL_64+0x" in report
    log = "\n".join(m.dmesg_lines()[before:])
    assert str(err.value) in log and "[klpemu_hostile_spin]" in log
    assert m.hung_task.hangs[-1] is err.value
    assert m.read_file("/proc/cmdline") == CMDLINE          # the next operation works
    assert m.shell.pid != pid                               # on init's respawned shell
    assert not m.crashed


def test_a_d_state_init_gets_the_hung_task_report(m: Machine) -> None:
    shell = m.spawn_shell()
    m.mem.write(USER_STAGING, (MODULES / "klpemu_hostile_dsleep.ko").read_bytes())
    posted = m.clock_ns
    with pytest.raises(GuestHang) as err:
        shell.syscall(NR["__NR_init_module"], USER_STAGING, len((MODULES / "klpemu_hostile_dsleep.ko").read_bytes()),
                      shell.put_string(""))
    assert str(err.value) == f"INFO: task sh:{shell.pid} blocked for more than 2 seconds."
    assert m.clock_ns - posted == 2_000_000_000             # the idle guest's clock ran on to the timeout, no further
    lines = err.value.report.splitlines()
    assert lines[1:3] == ["      Tainted: G           O       6.12.0-klpemu #1",   # the module taints before init
                          '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.']
    assert re.match(rf"task:sh +state:D stack:0 +pid:{shell.pid} ", lines[3])
    trace = "\n".join(lines[4:])
    assert re.search(r"^ schedule\+0x[0-9a-f]+/0x[0-9a-f]+\n init_module\+0x[0-9a-f]+/0x[0-9a-f]+ "
                     r"\[klpemu_hostile_dsleep\]$", trace, re.M)
    assert not re.search(r"^ 0x", trace, re.M)              # kernel frames only
    # nothing kills a D-state task (as on Linux); the rest of the machine goes on
    assert m.task(shell.pid).state_letter == "D"
    assert m.read_file("/proc/cmdline") == CMDLINE


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_a_bad_hung_task_timeout_is_refused(value: float) -> None:
    with pytest.raises(EmuError, match="hung_task_timeout_s must be a positive number of seconds"):
        Machine(hung_task_timeout_s=value)


def test_klpemu_run_exits_3_on_a_hang_and_runs_the_next_step(tmp_path, capsys) -> None:
    script = tmp_path / "spin.sh"
    script.write_text("insmod klpemu_hostile_spin.ko\ncat /proc/cmdline\n")
    assert main(["run", "--module-dir", str(MODULES), "--hung-task-timeout", "2", str(script)]) == 3
    out, err = capsys.readouterr()
    assert CMDLINE in out                                   # the step after the hang ran
    assert f"klpemu: {script}: the guest hung (1x): klpemu: guest hang: task sh:1 still running" in err


@pytest.mark.parametrize("value", ["nan", "-1", "0", "ten"])
def test_a_bad_hung_task_timeout_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["boot", "--hung-task-timeout", value])
    assert err.value.code == 2
    assert "argument --hung-task-timeout: hung_task_timeout_s must be" in capsys.readouterr().err


def test_an_explored_run_with_a_hang_is_a_hang_outcome(tmp_path) -> None:
    from klpemu.explore.outcome import HANG, classify
    machine = Machine(cpus=1, seed=0, hung_task_timeout_s=1).boot()
    with pytest.raises(GuestHang):
        machine.insmod(MODULES / "klpemu_hostile_spin.ko")
    outcome = classify(machine, "", None, None)
    assert outcome.kind == HANG and outcome.key.startswith("klpemu: guest hang: task sh:# still running")


def test_a_loop_with_preemption_off_is_left_to_the_soft_lockup_watchdog() -> None:
    from test_faults import provoke
    machine = Machine(cpus=2, seed=0, watchdog_thresh_s=0.3, hung_task_timeout_s=0.2).boot()
    with pytest.raises(GuestHang, match=r"BUG: soft lockup - CPU#\d stuck for \d+s! \[sh:\d+\]"):
        provoke(machine, "SOFTLOCKUP")
    assert not machine.hung_task.hangs


def test_with_the_watchdog_off_a_loop_with_preemption_off_is_reported_not_killed() -> None:
    from test_faults import provoke
    machine = Machine(cpus=2, seed=0, watchdog_thresh_s=0, hung_task_timeout_s=0.2).boot()
    with pytest.raises(GuestHang, match=r"klpemu: guest hang: task sh:\d+ still running on CPU#\d after 0.2 seconds "
                                        r"\(state:R, never where it may be killed \(task context, preemption on"):
        provoke(machine, "SOFTLOCKUP")
    assert "RIP: 0010:lkdtm_SOFTLOCKUP+0x" in machine.hung_task.hangs[0].report
