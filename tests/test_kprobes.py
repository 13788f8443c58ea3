"""kprobes on ftrace sites: genuine guest handlers, the IPMODIFY rule against
livepatches, sharing a site with the tracer and a livepatch, the debugfs
files, refused registrations with the kernel's errno."""
import errno

import pytest

from emu import Machine, ShellError
from emu.kernel.tasks import TaskView
from emu.trace.ftrace import JMP, NOP5, rel32_insn
from klp import Livepatch
from klp_helpers import MODULES, PATCHED, disable_lp, load_lp

CMDLINE = "console=ttyS0 klpemu\n"
KPROBES = "/sys/kernel/debug/kprobes"
TRACING = "/sys/kernel/debug/tracing"
PROBE = "klpemu_test_kprobe"
EBUSY_LINES = ["livepatch: failed to register ftrace handler for function 'cmdline_proc_show' (-16)",
               "livepatch: failed to patch object 'vmlinux'",
               "livepatch: failed to enable patch 'test_klp_livepatch'"]


def param(m: Machine, name: str) -> int:
    return int(m.read_file(f"/sys/module/{PROBE}/parameters/{name}"))


def probe(m: Machine, args: str = "") -> None:
    m.insmod(MODULES / f"{PROBE}.ko", args)


def test_pre_and_post_handlers_run_with_the_entry_registers(machine: Machine) -> None:
    m = machine
    site = m.ftrace.site_of("cmdline_proc_show")
    probe(m)
    assert m.read_file("/proc/cmdline") == CMDLINE
    assert (param(m, "pre_hits"), param(m, "post_hits"), param(m, "nmissed")) == (1, 1, 0)
    assert param(m, "pre_ip") == site + 1            # as after an int3
    assert param(m, "post_ip") == site + 5           # after the 5-byte NOP
    assert m.kallsyms.lookup(param(m, "ret_addr")).symbol.name == "__x64_sys_open"
    assert param(m, "regs_di") != 0                  # the seq_file argument
    m.read_file("/proc/cmdline")
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (2, 2)
    assert m.read_file(f"{KPROBES}/list") == f"{site:016x}  k  cmdline_proc_show+0x0    [FTRACE]\n"
    m.rmmod(PROBE)
    assert m.ftrace.read_site(site) == NOP5
    assert m.read_file(f"{KPROBES}/list") == ""


@pytest.mark.parametrize("post", ["1", "0"], ids=["ipmodify", "shared-ops"])
def test_a_pre_handler_that_moves_regs_ip_redirects_the_call(machine: Machine, post: str) -> None:
    """pre_handler sets regs->ip and returns 1: the call goes on there (with
    the stack as at the probed function's entry) and post_handler is skipped."""
    m = machine
    probe(m, f"has_post_handler={post} redirect={m.symbol_address('uptime_proc_show')}")
    assert m.read_file("/proc/cmdline").endswith(" 0.00\n")        # uptime's format
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (1, 0)
    m.rmmod(PROBE)
    assert m.read_file("/proc/cmdline") == CMDLINE


def test_the_probe_frame_unwinds_reliably(machine: Machine) -> None:
    """Inside a pre_handler, the running task's stack walks reliably from the
    handler through kprobe_ftrace_caller to the probed function's caller."""
    m = machine
    probe(m, "has_post_handler=0")
    handler = m.kallsyms.find("pre_handler", module=PROBE).address
    traces = []

    def inside(cpu_index: int) -> None:
        cpu = m.cpus[cpu_index]
        traces.append(m.walker.trace(TaskView(m.prog, m.current_task(cpu))))
    removers = [cpu.engine.hook_code_at(handler, lambda i=cpu.index: inside(i)) for cpu in m.cpus]
    m.read_file("/proc/cmdline")
    for remove in removers:
        remove()
    [trace] = traces
    assert trace.reliable, trace.reason
    names = [m.kallsyms.lookup(ip - (i > 0)).symbol.name for i, ip in enumerate(trace.ips[:4])]
    assert names == ["pre_handler", "kprobe_ftrace_handler", "kprobe_ftrace_caller", "__x64_sys_open"]


@pytest.mark.parametrize("backend", ["native", "python"])
def test_a_probe_with_post_handler_keeps_livepatches_off(machine: Machine, backend: str) -> None:
    m = machine
    Livepatch.attach(m, backend)
    m.insmod(MODULES / "test_klp_kprobe.ko", "has_post_handler=true")
    with pytest.raises(ShellError) as err:
        m.insmod(MODULES / "test_klp_livepatch.ko")
    assert err.value.errno == errno.EBUSY
    lines = m.dmesg_lines()
    start = lines.index(EBUSY_LINES[0])
    assert lines[start:start + 3] == EBUSY_LINES
    assert m.read_file("/proc/cmdline") == CMDLINE
    m.rmmod("test_klp_kprobe")
    load_lp(m, "test_klp_livepatch")
    assert m.read_file("/proc/cmdline") == PATCHED


def test_a_probe_with_post_handler_on_a_livepatched_function_fails(machine: Machine) -> None:
    m = machine
    Livepatch.attach(m)
    load_lp(m, "test_klp_livepatch")
    with pytest.raises(ShellError) as err:
        m.insmod(MODULES / "test_klp_kprobe.ko", "has_post_handler=true")
    assert err.value.errno == errno.EBUSY
    lines = m.dmesg_lines()
    warn = lines.index("Failed to register kprobe-ftrace (error -16)")
    assert lines[warn - 1] == "------------[ cut here ]------------"
    assert lines[warn + 1].startswith("WARNING: CPU: ") and " at kernel/kprobes.c:" in lines[warn + 1]
    assert m.read_file("/proc/cmdline") == PATCHED
    assert m.read_file(f"{KPROBES}/list") == ""
    # without a post_handler it is an ordinary ops, which may join the patch
    m.insmod(MODULES / "test_klp_kprobe.ko", "has_post_handler=false")
    m.rmmod("test_klp_kprobe")
    disable_lp(m, "test_klp_livepatch")


@pytest.mark.parametrize("backend", ["native", "python"])
def test_a_probe_without_post_handler_and_a_livepatch_both_take_effect(machine: Machine, backend: str) -> None:
    m = machine
    Livepatch.attach(m, backend)
    site = m.ftrace.site_of("cmdline_proc_show")
    probe(m, "has_post_handler=0")
    load_lp(m, "test_klp_livepatch")
    assert m.read_file("/proc/cmdline") == PATCHED
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (1, 0)
    m.rmmod(PROBE)                                   # the patch alone owns the site again
    owner = m.ftrace.owner(site)
    assert [o.name for o in m.ftrace.ops[site]] == ["klp"]
    assert m.ftrace.read_site(site) == rel32_insn(JMP, site, owner.target)
    assert m.read_file("/proc/cmdline") == PATCHED
    disable_lp(m, "test_klp_livepatch")
    assert m.ftrace.read_site(site) == NOP5


def test_tracer_probe_and_livepatch_on_one_site(machine: Machine) -> None:
    m = machine
    Livepatch.attach(m)
    m.write_file(f"{TRACING}/set_ftrace_filter", "cmdline_proc_show")
    m.write_file(f"{TRACING}/current_tracer", "function")
    probe(m, "has_post_handler=0")
    load_lp(m, "test_klp_livepatch")
    m.write_file(f"{TRACING}/trace", "")
    assert m.read_file("/proc/cmdline") == PATCHED
    assert param(m, "pre_hits") == 1
    assert m.read_file(f"{TRACING}/trace").count(" cmdline_proc_show <-__x64_sys_open") == 1
    disable_lp(m, "test_klp_livepatch")
    assert m.read_file("/proc/cmdline") == CMDLINE
    assert param(m, "pre_hits") == 2
    m.rmmod(PROBE)
    m.write_file(f"{TRACING}/current_tracer", "nop")
    assert m.ftrace.read_site(m.ftrace.site_of("cmdline_proc_show")) == NOP5


def test_two_probes_on_one_function_both_run(machine: Machine) -> None:
    """The second probe at an address joins the first (an aggregate probe),
    keeping the IPMODIFY ops the first was armed with."""
    m = machine
    site = m.ftrace.site_of("cmdline_proc_show")
    m.insmod(MODULES / "test_klp_kprobe.ko")
    probe(m)
    m.read_file("/proc/cmdline")
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (1, 1)
    assert m.read_file(f"{KPROBES}/list").count("  k  cmdline_proc_show+0x0    [FTRACE]\n") == 2
    m.rmmod("test_klp_kprobe")
    m.read_file("/proc/cmdline")
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (2, 2)
    m.rmmod(PROBE)
    assert m.ftrace.read_site(site) == NOP5


def test_the_enabled_file_disarms_and_rearms_every_probe(machine: Machine) -> None:
    m = machine
    site = m.ftrace.site_of("cmdline_proc_show")
    assert m.file_mode(f"{KPROBES}/enabled") == 0o600
    assert m.file_mode(f"{KPROBES}/list") == 0o400
    assert m.read_file(f"{KPROBES}/enabled") == "1\n"
    probe(m)
    m.write_file(f"{KPROBES}/enabled", "0")
    assert m.read_file(f"{KPROBES}/enabled") == "0\n"
    assert m.ftrace.read_site(site) == NOP5
    m.read_file("/proc/cmdline")
    assert param(m, "pre_hits") == 0
    m.write_file(f"{KPROBES}/enabled", "0")            # already: nothing to do
    assert m.dmesg_lines().count("kprobes: Kprobes globally disabled") == 1
    m.write_file(f"{KPROBES}/enabled", "1")
    assert "kprobes: Kprobes globally enabled" in m.dmesg_lines()
    m.read_file("/proc/cmdline")
    assert (param(m, "pre_hits"), param(m, "post_hits")) == (1, 1)
    with pytest.raises(ShellError) as err:
        m.write_file(f"{KPROBES}/enabled", "maybe")
    assert err.value.errno == errno.EINVAL
    m.write_file(f"{KPROBES}/enabled", "0")
    m.rmmod(PROBE)                                     # a disarmed probe goes quietly
    m.write_file(f"{KPROBES}/enabled", "1")
    assert m.ftrace.read_site(site) == NOP5


@pytest.mark.parametrize("args, err", [
    ("symbol=no_such_function", errno.ENOENT),
    ("symbol=cmdline_proc_show offset=1", errno.EILSEQ),        # inside the fentry call
    ("symbol=kprobe_ftrace_handler", errno.EOPNOTSUPP),         # notrace: no ftrace site
    ("symbol=kprobes_all_disarmed", errno.EINVAL),              # data, not text
    ("addr=4096", errno.ENOENT),                                # in no symbol
], ids=["unknown-symbol", "mid-instruction", "not-an-ftrace-site", "not-text", "no-symbol"])
def test_bad_registrations_get_the_kernels_errno(machine: Machine, args: str, err: int) -> None:
    with pytest.raises(ShellError) as exc:
        probe(machine, args)
    assert exc.value.errno == err
    assert not machine.exists(f"/sys/module/{PROBE}")
    assert machine.read_file(f"{KPROBES}/list") == ""
