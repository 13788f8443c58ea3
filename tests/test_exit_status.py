"""A dead task's exit code is a wait status, as in Linux (kernel/exit.c's
sys_exit: do_exit((error_code & 0xff) << 8); a fatal signal: do_exit(signr)),
so the host tells exit(9) from a death by SIGKILL (WIFSIGNALED/WTERMSIG,
include/uapi/linux/wait.h)."""
import pytest

from emu import Machine, ShellError
from emu.abi import NR
from emu.kernel.wait_status import wexitstatus, wifsignaled, wtermsig
from klpemu.scenario.killed import CommandKilled, check_killed

SYS_EXIT = 60
SIGKILL = 9


@pytest.mark.parametrize("code", [0, 3, 9, 137, 0x1FF])
def test_a_shell_that_calls_exit_is_not_reported_killed(machine: Machine, code: int) -> None:
    shell = machine.spawn_shell()
    task = machine.task(shell.pid).address
    with pytest.raises(ShellError, match=f"shell pid {shell.pid} exited with status {code & 0xff} "
                                         "during the command") as err:
        shell.syscall(SYS_EXIT, code)
    assert machine.services.dead_tasks[task] == (code & 0xFF) << 8
    assert err.value.signal is None and err.value.exit_status == code & 0xFF
    check_killed(err.value)                  # a scenario's command does not end as "Killed"
    assert machine.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"


def test_a_shell_that_sigkill_ends_is_still_reported_killed(machine: Machine) -> None:
    shell = machine.spawn_shell()
    task = machine.task(shell.pid).address
    with pytest.raises(ShellError, match=f"shell pid {shell.pid} died during the command") as err:
        shell.syscall(NR["__NR_kill"], shell.pid, SIGKILL)      # dies on its way back to user mode
    assert machine.services.dead_tasks[task] == SIGKILL
    assert err.value.signal == SIGKILL and err.value.exit_status is None
    with pytest.raises(CommandKilled) as killed:
        check_killed(err.value)
    assert killed.value.status == 128 + SIGKILL


@pytest.mark.parametrize("status, signaled, signal, exit_status", [
    (0x0900, False, None, 9), (0x0000, False, None, 0), (0xFF00, False, None, 255),
    (9, True, 9, None), (0x8B, True, 11, None),
])
def test_the_wait_status_decodes_as_the_uapi_macros(status: int, signaled: bool, signal: int | None,
                                                    exit_status: int | None) -> None:
    assert (wifsignaled(status), wtermsig(status), wexitstatus(status)) == (signaled, signal, exit_status)
