"""tracefs available_filter_functions and enabled_functions, before and after a livepatch."""
import re

from emu import Machine
from klp import Livepatch
from tests.klp_helpers import MODULES, disable_lp, load_lp

TRACING = "/sys/kernel/debug/tracing"


def test_available_filter_functions_lists_every_fentry_site_and_no_notrace_function() -> None:
    m = Machine(cpus=1, seed=0).boot()
    names = m.read_file(f"{TRACING}/available_filter_functions").splitlines()
    assert names == list(m.ftrace.sites.values())
    assert "cmdline_proc_show" in names
    assert m.read_file("/sys/kernel/tracing/available_filter_functions") == "".join(f"{n}\n" for n in names)
    notrace = [s.name for s in m.kallsyms.functions() if s.address not in m.ftrace.sites]
    assert notrace and not set(notrace) & set(names)


def test_enabled_functions_shows_the_livepatch_ops_as_the_kernel_does() -> None:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m, "native")
    assert m.read_file(f"{TRACING}/enabled_functions") == ""
    load_lp(m, "test_klp_livepatch")
    text = m.read_file(f"{TRACING}/enabled_functions")
    target = m.kallsyms.lookup(m.ftrace.owner(m.ftrace.site_of("cmdline_proc_show")).target)
    # where the site jumps: the replacement itself once no task needs the trampoline's check
    assert text == f"cmdline_proc_show (1) R I     M \ttramp: {target} (klp)\n"
    assert str(target).startswith("livepatch_cmdline_proc_show+0x0/") and target.module == "test_klp_livepatch"
    disable_lp(m, "test_klp_livepatch")
    assert m.read_file(f"{TRACING}/enabled_functions") == ""


def test_a_module_function_is_listed_with_its_module_and_the_tracer_shows_its_chain() -> None:
    m = Machine(cpus=1, seed=0).boot()
    m.insmod(MODULES / "klpemu_test_target.ko")
    names = m.read_file(f"{TRACING}/available_filter_functions").splitlines()
    module = [n for n in names if n.endswith(" [klpemu_test_target]")]
    assert module and all(re.fullmatch(r"[\w.]+ \[klpemu_test_target\]", n) for n in module)
    m.write_file(f"{TRACING}/set_ftrace_filter", "uptime_proc_show")
    m.write_file(f"{TRACING}/current_tracer", "function")
    text = m.read_file(f"{TRACING}/enabled_functions")
    assert re.fullmatch(r"uptime_proc_show \(1\)           \ttramp: 0x[0-9a-f]+ \(0x[0-9a-f]+\)\n", text), text
