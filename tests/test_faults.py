"""Guest crashes become oops reports; hangs are stopped by the watchdog.
The host process always survives, and after an oops the machine goes on."""
import pytest

from emu import GuestHang, Machine, MachineCrashed, ShellError

DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"


def provoke(m: Machine, what: str) -> None:
    """LKDTM from a shell of its own (the one that writes dies)."""
    shell = m.spawn_shell()
    shell.write(DIRECT, what + "\n")


def test_null_dereference_oopses_and_kills_only_the_task(machine: Machine) -> None:
    with pytest.raises(ShellError, match="died during the command"):
        provoke(machine, "EXCEPTION")
    log = machine.dmesg_lines()
    start = log.index("lkdtm: Performing direct entry EXCEPTION")
    assert log[start + 1:start + 5] == [
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "#PF: supervisor write access in kernel mode",
        "#PF: error_code(0x0002) - not-present page",
        "Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI",
    ]
    oops = "\n".join(log[start:])
    assert "RIP: 0010:lkdtm_EXCEPTION+0x" in oops
    assert "RSP: 0018:ffffc900" in oops          # a vmap stack (VMAP_STACK)
    assert " <TASK>\n direct_store+0x" in oops
    assert " entry_SYSCALL_64+0x" in oops
    assert "---[ end trace 0000000000000000 ]---" in oops
    assert machine.oopses[-1].address == 0
    # the machine is still usable
    assert machine.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert machine.dmesg_lines()[-1] != ""


def test_bug_prints_file_and_line_then_an_invalid_opcode_oops(machine: Machine) -> None:
    with pytest.raises(ShellError):
        provoke(machine, "BUG")
    log = "\n".join(machine.dmesg_lines())
    assert "kernel BUG at kernel/lkdtm.c:" in log
    assert "Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI" in log
    assert " lkdtm_BUG+0x" in log
    provoke_ok = machine.spawn_shell()
    assert provoke_ok.cat("/proc/cmdline").startswith("console=")


def test_warning_does_not_kill(machine: Machine) -> None:
    provoke(machine, "WARNING")
    assert any(line.startswith("WARNING: CPU: ") and "at kernel/lkdtm.c:" in line
               for line in machine.dmesg_lines())


def test_unknown_crash_type_is_einval(machine: Machine) -> None:
    with pytest.raises(ShellError) as err:
        provoke(machine, "NOSUCH")
    assert err.value.errno == 22


def test_hard_lockup_is_stopped_by_the_watchdog() -> None:
    m = Machine(cpus=2, seed=0, watchdog_thresh_s=0.3).boot()
    with pytest.raises(GuestHang) as err:
        provoke(m, "HARDLOCKUP")
    assert "Watchdog detected hard LOCKUP on cpu" in str(err.value)
    report = err.value.report
    assert "RIP: 0010:lkdtm_HARDLOCKUP+0x" in report
    assert " direct_store+0x" in report
    assert m.dmesg_lines()[-1] == "Kernel panic - not syncing: Hard LOCKUP"
    with pytest.raises(MachineCrashed):
        m.run(0.1)


def test_soft_lockup_is_stopped_by_the_watchdog() -> None:
    m = Machine(cpus=2, seed=0, watchdog_thresh_s=0.3).boot()
    with pytest.raises(GuestHang, match=r"BUG: soft lockup - CPU#\d stuck for \d+s! \[sh:\d+\]"):
        provoke(m, "SOFTLOCKUP")
    assert "Kernel panic - not syncing: softlockup: hung tasks" in m.dmesg_lines()


def test_waiting_for_a_guest_that_never_answers_times_out(machine: Machine) -> None:
    from emu import EmuError
    with pytest.raises(EmuError, match="went idle with nothing pending while waiting for forever"):
        machine.run_until(lambda: False, timeout_s=5, what="forever")


def test_a_kernel_entry_leaves_no_fault_address_behind() -> None:
    """A #GP is told from a page fault by CR2 (the Engine clears it; a page
    fault's exit sets it). Every entry to CPL 0 restores a saved context,
    CR2 included, inside a run too (the syscall entry): that context must
    carry the cleared CR2, or a #GP after a syscall in the same quantum
    reads as a page fault at address 0."""
    from emu.arch.engine import _CR2_CLEAR, RIP_INDEX
    engine = Machine(cpus=1).cpus[0].engine
    engine.enter_kernel_mode(lambda regs: regs.__setitem__(RIP_INDEX, regs[RIP_INDEX]))
    assert engine.reg("cr2") == _CR2_CLEAR
