"""ftrace ops on sites: IPMODIFY ownership, PERMANENT ops and the
kernel.ftrace_enabled sysctl, callback chains, and the function tracer."""
import errno

import pytest

from emu import EmuError, Machine, ShellError
from emu.trace.ftrace import FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_PERMANENT, NOP5, SYSCTL, FtraceOps
from emu.trace.slots import SlotPool
from klp import Livepatch
from klp_helpers import MODULES, PATCHED, disable_lp, load_lp

TRACING = "/sys/kernel/debug/tracing"
CMDLINE = "console=ttyS0 klpemu\n"


def test_one_ipmodify_ops_per_site(machine: Machine) -> None:
    ft = machine.ftrace
    site = ft.site_of("cmdline_proc_show")
    first = FtraceOps("a", FTRACE_OPS_FL_IPMODIFY, target=machine.symbol_address("uptime_proc_show"))
    second = FtraceOps("b", FTRACE_OPS_FL_IPMODIFY, target=machine.symbol_address("meminfo_proc_show"))
    assert ft.register(first, site) == 0
    assert ft.register(second, site) == -errno.EBUSY
    assert machine.read_file("/proc/cmdline").endswith(" 0.00\n")        # uptime's format
    ft.unregister(first, site)
    assert ft.read_site(site) == NOP5
    assert machine.read_file("/proc/cmdline") == CMDLINE


def test_register_on_a_non_site_is_einval(machine: Machine) -> None:
    ops = FtraceOps("a", 0, callback=machine.symbol_address("cmdline_proc_show"))
    assert machine.ftrace.register(ops, machine.symbol_address("cmdline_proc_show") + 1) == -errno.EINVAL


def test_sysctl_reads_and_writes(machine: Machine) -> None:
    assert machine.file_mode(SYSCTL) == 0o644
    assert machine.read_file(SYSCTL) == "1\n"
    machine.write_file(SYSCTL, "0")
    assert machine.read_file(SYSCTL) == "0\n"
    for bad in ("yes", "", "+1", "99999999999"):
        with pytest.raises(ShellError) as err:
            machine.write_file(SYSCTL, bad)
        assert err.value.errno == errno.EINVAL, bad
    # proc_dointvec: the int the table holds is read, the rest left unread
    # (a short write of 2); echo's retry at position 2 is ignored, counted
    assert machine.shell.write_once(SYSCTL, "1 2\n") == 2
    assert machine.write_file(SYSCTL, "1 2") == 4
    assert machine.read_file(SYSCTL) == "1\n"


def test_permanent_ops_refused_while_disabled_and_block_disabling(machine: Machine) -> None:
    ft = machine.ftrace
    site = ft.site_of("cmdline_proc_show")
    ops = FtraceOps("p", FTRACE_OPS_FL_IPMODIFY | FTRACE_OPS_FL_PERMANENT,
                    target=machine.symbol_address("uptime_proc_show"))
    machine.write_file(SYSCTL, "0")
    assert ft.register(ops, site) == -errno.EBUSY
    machine.write_file(SYSCTL, "1")
    assert ft.register(ops, site) == 0
    with pytest.raises(ShellError) as err:
        machine.write_file(SYSCTL, "0")
    assert err.value.errno == errno.EBUSY
    assert machine.read_file(SYSCTL) == "1\n"
    machine.write_file(SYSCTL, "1")                         # same value: always fine


def test_disabling_ftrace_silences_ordinary_ops_and_enabling_restores_them(machine: Machine) -> None:
    ft = machine.ftrace
    site = ft.site_of("cmdline_proc_show")
    ft.register(FtraceOps("o", FTRACE_OPS_FL_IPMODIFY, target=machine.symbol_address("uptime_proc_show")), site)
    machine.write_file(SYSCTL, "0")
    assert ft.read_site(site) == NOP5
    assert machine.read_file("/proc/cmdline") == CMDLINE
    machine.write_file(SYSCTL, "1")
    assert machine.read_file("/proc/cmdline").endswith(" 0.00\n")


def test_livepatch_fails_with_ebusy_while_ftrace_is_disabled(machine: Machine) -> None:
    Livepatch.attach(machine)
    machine.write_file(SYSCTL, "0")
    with pytest.raises(ShellError) as err:
        machine.insmod(MODULES / "test_klp_livepatch.ko")
    assert err.value.errno == errno.EBUSY
    assert ("livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)"
            in machine.dmesg_lines())
    assert not machine.exists("/sys/module/test_klp_livepatch")
    machine.write_file(SYSCTL, "1")
    load_lp(machine, "test_klp_livepatch")
    assert machine.read_file("/proc/cmdline") == PATCHED


@pytest.mark.parametrize("backend", ["native", "python"])
def test_tracer_and_livepatch_share_a_site(machine: Machine, backend: str) -> None:
    """Tracing first, then the patch: the site chains the tracer's callback
    and the livepatch's trampoline, and both take effect."""
    Livepatch.attach(machine, backend)
    machine.write_file(f"{TRACING}/current_tracer", "function")
    machine.write_file(f"{TRACING}/set_ftrace_filter", "cmdline_proc_show")
    load_lp(machine, "test_klp_livepatch")
    machine.write_file(f"{TRACING}/trace", "")
    assert machine.read_file("/proc/cmdline") == PATCHED
    trace = machine.read_file(f"{TRACING}/trace")
    assert trace.count(" cmdline_proc_show <-__x64_sys_open") == 1, trace
    disable_lp(machine, "test_klp_livepatch")
    assert machine.read_file("/proc/cmdline") == CMDLINE
    assert machine.read_file(f"{TRACING}/trace").count(" cmdline_proc_show <-") == 2
    machine.write_file(f"{TRACING}/current_tracer", "nop")
    assert machine.ftrace.read_site(machine.ftrace.site_of("cmdline_proc_show")) == NOP5


def test_tracer_files(machine: Machine) -> None:
    assert machine.read_file(f"{TRACING}/current_tracer") == "nop\n"
    assert machine.read_file(f"{TRACING}/set_ftrace_filter") == "#### all functions enabled ####\n"
    assert machine.read_file(f"{TRACING}/available_tracers") == "function nop\n"
    with pytest.raises(ShellError) as err:
        machine.write_file(f"{TRACING}/current_tracer", "graph")
    assert err.value.errno == errno.EINVAL
    with pytest.raises(ShellError) as err:
        machine.write_file(f"{TRACING}/set_ftrace_filter", "no_such_function")
    assert err.value.errno == errno.EINVAL
    machine.write_file(f"{TRACING}/set_ftrace_filter", "*_proc_show")
    assert "cmdline_proc_show\n" in machine.read_file(f"{TRACING}/set_ftrace_filter")
    machine.write_file(f"{TRACING}/current_tracer", "function")
    with pytest.raises(ShellError) as err:
        machine.write_file(f"{TRACING}/tracing_on", "on")
    assert err.value.errno == errno.EINVAL
    machine.write_file(f"{TRACING}/tracing_on", "0")
    machine.read_file("/proc/cmdline")
    assert "cmdline_proc_show" not in machine.read_file(f"{TRACING}/trace")
    machine.write_file(f"{TRACING}/tracing_on", "1")
    machine.read_file("/proc/meminfo")
    trace = machine.read_file(f"{TRACING}/trace")
    assert trace.startswith("# tracer: function\n")
    assert " meminfo_proc_show <-__x64_sys_open" in trace
    assert machine.read_file("/sys/kernel/tracing/current_tracer") == "function\n"


def test_generated_code_slots_are_reused_last(machine: Machine) -> None:
    """A task preempted inside a freed chain must not find other code there
    soon: freed slots go to the back of the queue."""
    pool = SlotPool(machine.modules.alloc_pages, 1024)
    a, b = pool.take(), pool.take()
    assert b == a + 1024
    pool.give(a)
    assert [pool.take(), pool.take()] == [a + 2048, a + 3072]
    assert pool.take() == a                                   # only once the page is used up
    with pytest.raises(EmuError, match="a slot holds"):
        SlotPool(machine.modules.alloc_pages, 0)
