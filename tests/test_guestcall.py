"""Python -> guest calls run as continuations, without re-entering emu_start."""
from emu import Machine

SYS_KLPEMU_SELFTEST = 502


def test_a_service_calls_guest_functions_one_of_which_sleeps(machine: Machine) -> None:
    """The service calls strlen(linux_banner) and msleep(20) in the guest,
    on the task that made the hypercall, then returns to it."""
    before = machine.clock_ns
    assert machine.shell.syscall(SYS_KLPEMU_SELFTEST, 7) == 49 * 1000 + 7
    assert machine.clock_ns - before >= 20_000_000        # msleep(20) really slept
    assert machine.shell.syscall(SYS_KLPEMU_SELFTEST, 8) == 49 * 1000 + 8


def test_a_service_that_makes_no_call_returns_directly(machine: Machine) -> None:
    assert machine.shell.syscall(SYS_KLPEMU_SELFTEST, -22) == -22


def test_unknown_syscall_is_enosys(machine: Machine) -> None:
    assert machine.shell.syscall(333) == -38
