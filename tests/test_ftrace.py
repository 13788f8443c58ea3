"""ftrace sites: NOPed at start-up; rewrites reach every CPU's translated code."""
import pytest

from emu import EmuError, Machine
from emu.trace.ftrace import JMP, NOP5, rel32_insn


def test_every_mcount_site_is_a_nop_before_the_first_instruction() -> None:
    m = Machine(cpus=1)
    sites = m.kernel.mcount_sites()
    assert len(sites) > 150
    assert all(m.mem.read(site, 5) == NOP5 for site in sites)
    assert m.ftrace.sites[m.ftrace.site_of("cmdline_proc_show")] == "cmdline_proc_show"


def test_a_rewritten_site_takes_effect_on_every_cpu() -> None:
    """Both CPUs translate cmdline_proc_show, then its site becomes a jmp to
    uptime_proc_show: both must run the new code (stale TB regression)."""
    m = Machine(cpus=2, seed=0).boot()
    shells = [m.shell] + [m.spawn_shell() for _ in range(3)]
    cpus = {s.task().cpu for s in shells}
    assert cpus == {0, 1}
    for s in shells:
        assert s.cat("/proc/cmdline") == "console=ttyS0 klpemu\n"
    site = m.ftrace.site_of("cmdline_proc_show")
    m.ftrace.write_site(site, rel32_insn(JMP, site, m.symbol_address("uptime_proc_show")))
    for s in shells:
        assert s.cat("/proc/cmdline").endswith(" 0.00\n")          # uptime's format
    m.ftrace.reset_site(site)
    for s in shells:
        assert s.cat("/proc/cmdline") == "console=ttyS0 klpemu\n"


def test_a_host_write_without_invalidation_leaves_stale_code() -> None:
    """Why write_site invalidates: Unicorn keeps running translated code."""
    m = Machine(cpus=1, seed=0).boot()
    assert m.read_file("/proc/cmdline").startswith("console=")
    site = m.ftrace.site_of("cmdline_proc_show")
    m.mem.write(site, rel32_insn(JMP, site, m.symbol_address("uptime_proc_show")))
    assert m.read_file("/proc/cmdline").startswith("console=")     # stale translation
    m.cpus[0].engine.invalidate(site, 5)
    assert m.read_file("/proc/cmdline").endswith(" 0.00\n")


def test_bad_site_writes_are_refused(machine: Machine) -> None:
    with pytest.raises(EmuError, match="is not an ftrace site"):
        machine.ftrace.write_site(machine.symbol_address("cmdline_proc_show") + 1, NOP5)
    with pytest.raises(EmuError, match="exactly 5 bytes"):
        machine.ftrace.write_site(machine.ftrace.site_of("cmdline_proc_show"), b"\x90")
    with pytest.raises(EmuError, match="has no fentry site"):
        machine.ftrace.site_of("__switch_to_asm")


def test_a_cpu_in_user_mode_does_not_keep_running_stale_code() -> None:
    """A site rewritten while a CPU is in user mode: that CPU too runs the new
    code the next time it enters the function (ctl_remove_cache resolves the
    kernel address with the CPU's current privilege, and in user mode it
    silently removes nothing; this once let a hammering getpid task run the
    unpatched syscall forever)."""
    from collections import Counter

    from emu.kernel.shell import MODE_GETPID_LOOP
    from emu.trace.ftrace import FtraceOps

    m = Machine(cpus=2, seed=0).boot()
    for _ in range(2):                           # one getpid loop per CPU
        m.shell.spawn(MODE_GETPID_LOOP, "hammer")
    m.run(0.05)                                  # both have translated the syscall by now
    m.run_until(lambda: m.cpus[1].in_user_mode(), 1, "CPU 1 in user mode")
    hits: Counter[int] = Counter()
    ops = FtraceOps("test", 0, callback=m.ftrace.python_callback(lambda cpu: hits.update([cpu.index])))
    assert m.ftrace.register(ops, m.ftrace.site_of("__x64_sys_getpid")) == 0   # now: no round is running
    m.run(0.01)
    assert hits[0] > 0 and hits[1] > 0
