"""An oops that kills init's shell: the caller gets the oops, and the kernel
respawns the shell (a new task, a new pid) for the next operation."""
import pytest

from emu import Machine, ShellError

DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"


@pytest.mark.parametrize("crash, headline, signal", [
    ("EXCEPTION", "BUG: kernel NULL pointer dereference, address: 0000000000000000", 9),   # page_fault_oops: SIGKILL
    ("BUG", "Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", 11),                     # die(): SIGSEGV
])
def test_an_oops_in_the_shell_respawns_it(machine: Machine, crash: str, headline: str, signal: int) -> None:
    old_pid = machine.shell.pid
    with pytest.raises(ShellError, match=f"shell pid {old_pid} died during the command") as err:
        machine.write_file(DIRECT, crash)
    assert err.value.signal == signal and err.value.errno == 4 and err.value.pid == old_pid
    assert headline in machine.dmesg_lines()
    assert len(machine.oopses) == 1
    # the next operation runs on a fresh shell, a new task
    assert machine.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert machine.shell.pid != old_pid
    assert machine.shell.syscall(39) == machine.shell.pid          # getpid
    assert machine.task(machine.shell.pid).comm == "sh"
    # and it survives a second oops the same way
    with pytest.raises(ShellError, match="died during the command"):
        machine.write_file(DIRECT, crash)
    assert len(machine.oopses) == 2
    assert machine.read_file("/proc/cmdline").startswith("console=")


def test_a_background_shell_stays_gone(machine: Machine) -> None:
    shell = machine.spawn_shell()
    with pytest.raises(ShellError):
        shell.write(DIRECT, "EXCEPTION\n")
    with pytest.raises(ShellError, match=f"shell pid {shell.pid} is gone"):
        shell.cat("/proc/cmdline")
    assert machine.read_file("/proc/cmdline").startswith("console=")


def test_klpemu_run_exits_3_after_an_oops_and_the_script_goes_on(tmp_path, capsys) -> None:
    from klpemu.cli import main
    script = tmp_path / "oops.sh"
    script.write_text(f"echo EXCEPTION > {DIRECT}\necho \"after: $(cat /proc/cmdline)\"\n")
    assert main(["run", str(script)]) == 3
    out, err = capsys.readouterr()
    assert "after: console=ttyS0 klpemu\n" in out
    assert "the kernel oopsed (1x, pid 1): BUG: kernel NULL pointer dereference, address: 0000000000000000" in err


@pytest.mark.parametrize("crash, signal_line, status", [
    ("EXCEPTION", "Killed                  ", 137),           # page_fault_oops: SIGKILL
    ("BUG", "Segmentation fault      ", 139),               # die(): SIGSEGV
])
def test_a_command_an_oops_kills_ends_as_bash_reports_a_killed_job(tmp_path, capsys, crash: str,
                                                                   signal_line: str, status: int) -> None:
    """bash's notice of a job a signal ended (pid, the signal's description
    in its 24-column field, the command) and the status 128 + signal."""
    from klpemu.cli import main
    script = tmp_path / "killed.sh"
    script.write_text(f"echo {crash} > {DIRECT}\necho \"status $?\"\n")
    assert main(["run", str(script)]) == 3
    out, err = capsys.readouterr()
    assert f"status {status}\n" in out
    assert f"./killed.sh: line 1:     1 {signal_line}echo {crash}\n" in out
