"""The livepatch core on genuine modules: enable, dispatch, disable, modules, sysfs."""
import pytest

from emu import Machine, ShellError
from klp import Livepatch
from klp_helpers import MODULES, PATCHED, SYSFS, TICK, disable_lp, klp_lines, load_lp, set_dynamic_debug


@pytest.fixture(params=[(1, "native"), (2, "native"), (1, "python"), (2, "python")],
                ids=["1cpu-native", "2cpu-native", "1cpu-python", "2cpu-python"])
def lp_machine(request) -> Machine:
    cpus, backend = request.param
    m = Machine(cpus=cpus, seed=0).boot()
    Livepatch.attach(m, backend)
    set_dynamic_debug(m)
    return m


def test_enable_patches_the_function_and_disable_restores_it(lp_machine: Machine) -> None:
    m = lp_machine
    load_lp(m, "test_klp_livepatch")
    dispatch = m.extensions["klp"].dispatch
    before = dispatch.python_calls
    assert m.read_file("/proc/cmdline") == PATCHED
    # the python backend's hook chose the function; the native one never calls Python
    assert dispatch.python_calls - before == (1 if dispatch.backend == "python" else 0)
    assert m.read_file(f"{SYSFS}/test_klp_livepatch/enabled") == "1\n"
    assert m.read_file("/sys/module/test_klp_livepatch/refcnt") == "1\n"
    disable_lp(m, "test_klp_livepatch")
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert m.read_file("/sys/module/test_klp_livepatch/refcnt") == "0\n"
    m.rmmod("test_klp_livepatch")
    assert klp_lines(m) == [
        "livepatch: enabling patch 'test_klp_livepatch'",
        "livepatch: 'test_klp_livepatch': initializing patching transition",
        "livepatch: 'test_klp_livepatch': starting patching transition",
        "livepatch: 'test_klp_livepatch': completing patching transition",
        "livepatch: 'test_klp_livepatch': patching complete",
        "livepatch: 'test_klp_livepatch': initializing unpatching transition",
        "livepatch: 'test_klp_livepatch': starting unpatching transition",
        "livepatch: 'test_klp_livepatch': completing unpatching transition",
        "livepatch: 'test_klp_livepatch': unpatching complete",
    ]


def test_the_transition_completes_at_the_first_retry_a_second_later(lp_machine: Machine) -> None:
    """As on the real kernel: on 2 CPUs the other CPU's idle task is running at
    enable time, so the first try fails and the retry completes; it comes
    round_jiffies_relative(HZ) later: at a whole second of jiffies (skewed by
    3 jiffies a CPU), 0.75 to 1.75 s on. On 1 CPU the idle task sleeps while
    the shell enables, so the first try (at enable time) completes."""
    m = lp_machine
    load_lp(m, "test_klp_livepatch")
    records = m.dmesg_log.records()
    started = next(r for r in records if r.text.endswith("starting patching transition"))
    done = next(r for r in records if r.text.endswith("patching complete"))
    if m.config.cpus == 1:
        assert done.timestamp_ns - started.timestamp_ns < TICK
    else:
        assert 0.75e9 <= done.timestamp_ns - started.timestamp_ns < 1.75e9
        jiffies = (-300 * 250 & 0xFFFFFFFF) + done.timestamp_ns // TICK
        assert any((jiffies + 3 * cpu) % 250 == 0 for cpu in range(m.config.cpus))


def test_a_livepatch_module_cannot_be_removed_while_enabled(lp_machine: Machine) -> None:
    load_lp(lp_machine, "test_klp_livepatch")
    with pytest.raises(ShellError) as err:
        lp_machine.rmmod("test_klp_livepatch")
    assert err.value.errno == 11


def test_sysfs_layout_and_rights(lp_machine: Machine) -> None:
    m = lp_machine
    load_lp(m, "test_klp_livepatch")
    root = f"{SYSFS}/test_klp_livepatch"
    assert m.listdir(root) == ["enabled", "force", "replace", "stack_order", "transition", "vmlinux"]
    assert m.listdir(f"{root}/vmlinux") == ["cmdline_proc_show,1", "patched"]
    modes = {name: m.file_mode(f"{root}/{name}") for name in ("enabled", "transition", "force", "replace")}
    assert modes == {"enabled": 0o644, "transition": 0o444, "force": 0o200, "replace": 0o444}
    assert m.read_file(f"{root}/vmlinux/patched") == "1\n"
    assert m.read_file(f"{root}/replace") == "0\n"
    assert m.read_file(f"{root}/stack_order") == "1\n"


@pytest.mark.parametrize("path,value,err", [
    ("enabled", "1", 22),            # already enabled
    ("enabled", "garbage", 22),
    ("force", "1", 22),              # not in transition
    ("force", "x", 22),
    ("transition", "0", 13),         # read-only
])
def test_bad_sysfs_writes_get_the_kernels_errno(lp_machine: Machine, path: str, value: str, err: int) -> None:
    load_lp(lp_machine, "test_klp_livepatch")
    with pytest.raises(ShellError) as e:
        lp_machine.write_file(f"{SYSFS}/test_klp_livepatch/{path}", value)
    assert e.value.errno == err


def test_reading_force_is_eacces(lp_machine: Machine) -> None:
    load_lp(lp_machine, "test_klp_livepatch")
    with pytest.raises(ShellError) as e:
        lp_machine.read_file(f"{SYSFS}/test_klp_livepatch/force")
    assert e.value.errno == 13


def test_two_patches_stack_and_disable_in_any_order(lp_machine: Machine) -> None:
    m = lp_machine
    load_lp(m, "test_klp_livepatch")
    load_lp(m, "test_klp_atomic_replace", "replace=0")
    assert m.read_file("/proc/cmdline") == PATCHED
    assert m.read_file("/proc/meminfo") == "test_klp_atomic_replace: this has been live patched\n"
    assert m.read_file(f"{SYSFS}/test_klp_atomic_replace/stack_order") == "2\n"
    disable_lp(m, "test_klp_livepatch")
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert m.read_file("/proc/meminfo").startswith("test_klp_atomic_replace")
    disable_lp(m, "test_klp_atomic_replace")
    assert m.read_file("/proc/meminfo").startswith("MemTotal:")


def test_module_target_loaded_before_and_after_the_patch(lp_machine: Machine) -> None:
    m = lp_machine
    m.insmod(MODULES / "test_klp_mod_target.ko")
    load_lp(m, "test_klp_mod_patch")
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_patch: this has been live patched\n"
    m.rmmod("test_klp_mod_target")                       # reverted on the way out
    assert "livepatch: reverting patch 'test_klp_mod_patch' on unloading module 'test_klp_mod_target'" \
        in m.dmesg_lines()
    assert m.read_file(f"{SYSFS}/test_klp_mod_patch/test_klp_mod_target/patched") == "0\n"
    m.insmod(MODULES / "test_klp_mod_target.ko")         # applied on the way in
    assert "livepatch: applying patch 'test_klp_mod_patch' to loading module 'test_klp_mod_target'" \
        in m.dmesg_lines()
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_patch: this has been live patched\n"
    disable_lp(m, "test_klp_mod_patch")
    assert m.read_file("/proc/test_klp_mod_target") == "test_klp_mod_target: original output\n"


def test_module_parameters_in_sysfs(lp_machine: Machine) -> None:
    m = lp_machine
    load_lp(m, "test_klp_atomic_replace", "replace=1")
    path = "/sys/module/test_klp_atomic_replace/parameters/replace"
    assert m.read_file(path) == "1\n" and m.file_mode(path) == 0o644
    assert m.read_file(f"{SYSFS}/test_klp_atomic_replace/replace") == "1\n"
    m.write_file(path, "7")
    assert m.read_file(path) == "7\n"
    with pytest.raises(ShellError) as e:
        m.write_file(path, "seven")
    assert e.value.errno == 22


def test_patch_state_in_proc(lp_machine: Machine) -> None:
    assert lp_machine.read_file("/proc/1/patch_state") == "-1\n"


def test_klp_enable_patch_of_null_is_einval() -> None:
    """klp_enable_patch(NULL) and klp_register_patch(NULL) (4.12) are -EINVAL,
    as in the kernel: the core checks the pointer before reading the struct."""
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m)
    set_dynamic_debug(m)
    assert m.call("klp_enable_patch", 0, returns="int") == -22
    old = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(old, klp_version="4.12")
    assert old.call("klp_register_patch", 0, returns="int") == -22


NOT_A_LIVEPATCH = """#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/livepatch.h>

static noinline int new_cmdline(void) { return 0; }
static struct klp_func funcs[] = { { .old_name = "cmdline_proc_show", .new_func = new_cmdline }, { } };
static struct klp_object objs[] = { { .funcs = funcs }, { } };
static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs };

static int not_lp_init(void)
{
	return klp_enable_patch(&patch);
}

module_init(not_lp_init);
MODULE_LICENSE("GPL");
"""


def test_a_module_not_marked_livepatch_cannot_enable_a_patch(tmp_path) -> None:
    from klpemu.build.compile import build_module
    src = tmp_path / "klp_not_lp.c"
    src.write_text(NOT_A_LIVEPATCH)
    ko = build_module([src], tmp_path / "klp_not_lp.ko")
    m = Machine(cpus=1, seed=0).boot()
    Livepatch.attach(m)
    set_dynamic_debug(m)
    with pytest.raises(ShellError) as e:
        m.insmod(ko)
    assert e.value.errno == 22
    assert "livepatch: module klp_not_lp is not marked as a livepatch module" in m.dmesg_lines()
    assert not m.exists(f"{SYSFS}/klp_not_lp")
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
