"""klp_enable_patch()'s checks of a patch's structures, one hostile module
(fixtures/modules/klpemu_hostile_klp.c, `mode=N`) per rule, against
kernel/livepatch/core.c: klp_enable_patch (NULL patch, mod or objs; a
static object without funcs) and klp_init_patch -> klp_init_object (a name
of MODULE_NAME_LEN bytes or more) -> klp_init_func (no old_name, no
new_func, an old_name of KSYM_NAME_LEN bytes or more) are -EINVAL without a
message; kobject_add of a name already taken is -EEXIST after sysfs's and
kobject's errors; klp_init_object_loaded's lookups print
klp_find_object_symbol's messages (-EINVAL) and
kallsyms_lookup_size_offset's (-ENOENT), which any address inside a known
symbol satisfies. Each refusal leaves no sysfs directory and no module,
and the machine loads the next one."""
import errno

import pytest

from emu import Machine, ShellError
from klp import Livepatch
from klp_helpers import MODULES

MODULE = MODULES / "klpemu_hostile_klp.ko"
ROOT = "/sys/kernel/livepatch/klpemu_hostile_klp"
X511 = "x" * 511


def dup(name: str, path: str) -> list[str]:
    return [f"sysfs: cannot create duplicate filename '/kernel/livepatch/klpemu_hostile_klp{path}'",
            f"kobject: kobject_add_internal failed for {name} with -EEXIST, don't try to register things "
            "with the same name in the same directory."]


CASES = {
    1: (errno.EINVAL, []),                                   # objs NULL
    2: (errno.EINVAL, []),                                   # an object's funcs NULL
    3: (errno.EINVAL, []),                                   # old_name NULL
    4: (errno.EINVAL, []),                                   # new_func NULL
    5: (errno.EINVAL, []),                                   # strlen(old_name) >= KSYM_NAME_LEN
    6: (errno.EINVAL, [f"livepatch: symbol '{X511}' not found in symbol table"]),
    7: (errno.EINVAL, ["livepatch: symbol position 2 for symbol 'cmdline_proc_show' in object 'vmlinux' not found"]),
    8: (errno.EINVAL, ["livepatch: unresolvable ambiguity for symbol 'klp_sympos_helper' in object '(null)'"]),
    9: (errno.EINVAL, ["livepatch: symbol position 3 for symbol 'klp_sympos_helper' in object 'vmlinux' not found"]),
    10: (errno.EEXIST, dup("cmdline_proc_show,1", "/vmlinux/cmdline_proc_show,1")),
    11: (errno.EINVAL, []),                                  # strlen(obj->name) >= MODULE_NAME_LEN
    12: (errno.EEXIST, dup("vmlinux", "/vmlinux")),
    13: (errno.ENOENT, ["livepatch: kallsyms size lookup failed for 'cmdline_proc_show' replacement"]),
    15: (errno.EINVAL, []),                                  # klp_enable_patch(NULL)
}


@pytest.fixture(scope="module")
def m() -> Machine:
    machine = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(machine, "native")
    return machine


def klp_lines(m: Machine, since: int) -> list[str]:
    return [line for line in m.dmesg_lines()[since:]
            if any(w in line for w in ("livepatch:", "sysfs:", "kobject:"))]


@pytest.mark.parametrize("mode", sorted(CASES))
def test_each_broken_rule_is_the_kernels_error(m: Machine, mode: int) -> None:
    err, messages = CASES[mode]
    before = len(m.dmesg_lines())
    with pytest.raises(ShellError) as exc:
        m.insmod(MODULE, f"mode={mode}")
    assert exc.value.errno == err
    assert klp_lines(m, before) == messages
    assert not m.exists(ROOT) and "klpemu_hostile_klp" not in m.modules.modules
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and not m.oopses


def test_a_new_func_inside_a_function_is_accepted(m: Machine) -> None:
    """kallsyms_lookup_size_offset finds the function around new_func + 1:
    the patch is enabled (its new_size the whole function's)."""
    before = len(m.dmesg_lines())
    m.insmod(MODULE, "mode=14")
    assert klp_lines(m, before)[:2] == ["livepatch: enabling patch 'klpemu_hostile_klp'",
                                        "livepatch: 'klpemu_hostile_klp': starting patching transition"]
    m.write_file(f"{ROOT}/enabled", "0")
    m.run_until(lambda: not m.exists(ROOT), timeout_s=30, what="the patch to be disabled")
    m.rmmod("klpemu_hostile_klp")
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n" and not m.oopses
