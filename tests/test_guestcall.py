"""Python -> guest calls run as continuations, without re-entering emu_start."""
import pytest

from emu import EmuError, Machine
from emu.kernel.tasks import TASK_INTERRUPTIBLE
from klp_helpers import MODULES, wait_sleeping_in

SIGTERM = 15


def test_call_a_kernel_function(machine: Machine) -> None:
    banner = machine.symbol_address("linux_banner")
    assert machine.call("strlen", banner) == len("Linux version 6.12.0-klpemu (gcc) #1 SMP PREEMPT\n")
    assert machine.call("kstrtobool", banner, 0, returns="int") == -22   # "Linux..." is no boolean
    with pytest.raises(EmuError, match="returns must be"):
        machine.call("strlen", banner, returns="char *")


def test_a_called_function_may_sleep(machine: Machine) -> None:
    before = machine.clock_ns
    machine.call("msleep", 40)
    assert machine.clock_ns - before >= 40_000_000


def test_calls_on_a_busy_machine_are_preemptible(demo_machine: Machine) -> None:
    for _ in range(5):
        demo_machine.call("msleep", 10)
    assert demo_machine.call("strlen", demo_machine.symbol_address("linux_banner")) == 49


def test_calling_outside_kernel_text_is_refused(machine: Machine) -> None:
    with pytest.raises(EmuError, match="is not in kernel text"):
        machine.call(0x1234)
    with pytest.raises(EmuError, match="has no symbol nosuch"):
        machine.call("nosuch")


def test_unknown_syscall_is_enosys(machine: Machine) -> None:
    assert machine.shell.syscall(333) == -38


def test_kill_delivers_a_signal_through_the_exit_to_user_path(demo_machine: Machine) -> None:
    m = demo_machine
    victims = [t for t in m.tasks() if t.comm in ("sleeper", "spin", "getpid_loop")]
    for t in victims:
        assert m.shell.syscall(62, t.pid, SIGTERM) == 0
    doomed = {t.pid for t in victims}
    m.run_until(lambda: not {t.pid for t in m.tasks()} & doomed, 1.0, "the killed tasks to exit")
    assert m.shell.syscall(62, 9999, SIGTERM) == -3                # ESRCH


def test_a_fake_signal_wakes_a_sleeping_user_task_without_killing_it(machine: Machine) -> None:
    """set_notify_signal(): TIF_SIGPENDING with no signal behind it, as the
    livepatch core sends to tasks that block a transition. A reader of
    /proc/klpemu_test_target sleeps interruptibly until released; the fake
    signal interrupts its sleep, its syscall returns, and it lives on."""
    m = machine
    m.insmod(MODULES / "klpemu_test_target.ko")
    sh = m.spawn_shell()
    sh.cat_background("/proc/klpemu_test_target")
    reader = wait_sleeping_in(m, sh.task, "klpemu_test_wait")
    assert reader.state == TASK_INTERRUPTIBLE
    m.call("set_notify_signal", reader.address)
    assert sh.cat_result("/proc/klpemu_test_target") == "klpemu_test_target: interrupted\n"
    assert not reader.ti_flags & (1 << 2)                           # TIF_SIGPENDING handled
    assert sh.cat("/proc/cmdline") == "console=ttyS0 klpemu\n"      # alive and well