"""Hostile modules: a bad pointer the kernel follows (in the module's own code
or in the livepatch core and module loader on its behalf) oopses the task
that loaded it, with the report Linux prints, and the machine goes on.

insmod runs in a shell of its own (`insmod_in`): the oops kills it, as Linux
kills insmod, and the next operation runs on a fresh shell."""
import pytest

from emu import Machine, ShellError
from emu.abi import NR
from emu.machine import USER_STAGING
from klp import Livepatch
from klp_helpers import MODULES

CMDLINE = "console=ttyS0 klpemu\n"


@pytest.fixture(scope="module")
def m() -> Machine:
    machine = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(machine, "native")
    return machine


def insmod_in(m: Machine, data: bytes, args: str = "") -> int:
    """init_module(2) from a fresh shell task: its return value."""
    shell = m.spawn_shell()
    m.mem.write(USER_STAGING, data)
    return shell.syscall(NR["__NR_init_module"], USER_STAGING, len(data), shell.put_string(args))


def oops_of(m: Machine, module: str, args: str = "") -> str:
    """insmod MODULE, which must oops its task: the new log lines."""
    before, oopses = len(m.dmesg_lines()), len(m.oopses)
    with pytest.raises(ShellError, match="died during the command"):
        insmod_in(m, (MODULES / f"{module}.ko").read_bytes(), args)
    assert len(m.oopses) == oopses + 1
    assert m.read_file("/proc/cmdline") == CMDLINE          # the machine goes on
    return "\n".join(m.dmesg_lines()[before:])


def test_garbage_klp_patch_pointer_is_a_general_protection_fault(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_patch_ptr")
    assert "Oops: general protection fault, probably for non-canonical address 0xdead000000000000: 0000 [#" in log
    assert "RIP: 0010:klpemu_hypercall+0x" in log
    assert "RDI: dead000000000000" in log
    assert " <TASK>\n klp_enable_patch+0x" in log
    assert "---[ end trace 0000000000000000 ]---" in log


def test_old_name_0x1234_is_a_page_fault_at_that_address(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_old_name")
    assert "BUG: unable to handle page fault for address: 0000000000001234\n" \
           "#PF: supervisor read access in kernel mode\n" \
           "#PF: error_code(0x0000) - not-present page\n" in log
    assert " klp_enable_patch+0x" in log


def test_unterminated_objs_array_faults_on_the_garbage_after_it(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_objs")
    assert "general protection fault, probably for non-canonical address 0xdead000000000000" in log
    assert " klp_enable_patch+0x" in log
    assert not m.exists("/sys/kernel/livepatch/klpemu_hostile_objs")


def test_non_canonical_read_in_module_code_is_a_general_protection_fault(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_gp_read")
    assert "Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000" in log
    assert "NULL pointer" not in log
    assert "RIP: 0010:init_module+0xd/0x14 [klpemu_hostile_gp_read]" in log


def test_return_to_a_non_canonical_address_is_a_general_protection_fault(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_stack_smash")
    assert "Oops: general protection fault: 0000 [#" in log
    assert "RIP: 0010:0x4141414141414141" in log
    assert " entry_SYSCALL_64+0x" in log


def test_param_with_a_null_arg_is_a_null_pointer_write(m: Machine) -> None:
    log = oops_of(m, "klpemu_hostile_param", "nowhere=3")
    assert "BUG: kernel NULL pointer dereference, address: 0000000000000000\n" \
           "#PF: supervisor write access in kernel mode\n" in log


def test_param_with_elem_size_0_is_stored_at_its_type_width(m: Machine) -> None:
    data = (MODULES / "klpemu_hostile_param.ko").read_bytes()
    assert insmod_in(m, data, "zero_width=-5") == 0
    assert m.read_file("/sys/module/klpemu_hostile_param/parameters/zero_width") == "-5\n"
    m.rmmod("klpemu_hostile_param")
    assert m.read_file("/proc/cmdline") == CMDLINE


def test_a_livepatch_whose_new_function_dereferences_null_oopses_each_caller(tmp_path, capsys) -> None:
    """The patched function's callers oops in the new function; the shell is
    respawned after each, and the patch can be disabled and removed. (The
    third oops ends while the dead shell is still in do_exit making its
    successor: the disable must wait for it, not be refused by the dead one.)"""
    from klpemu.cli import main
    script = tmp_path / "lp_null.sh"
    script.write_text(
        "P=/sys/kernel/livepatch/klpemu_hostile_lp_null\n"
        "insmod klpemu_hostile_lp_null.ko\n"
        "while [[ $(cat $P/transition) != 0 ]]; do sleep .1; done\n"
        "cat /proc/cmdline || echo \"first: $?\"\n"
        "cat /proc/cmdline || echo \"second: $?\"\n"
        "while read l; do :; done < /proc/cmdline || echo \"loop: $?\"\n"
        "echo 0 > $P/enabled\n"
        "for i in $(seq 50); do [[ -e $P ]] || break; sleep .1; done\n"
        "rmmod klpemu_hostile_lp_null\n"
        "echo \"after: $(cat /proc/cmdline)\"\n")
    assert main(["run", "--module-dir", str(MODULES), str(script)]) == 3
    out, err = capsys.readouterr()
    assert "first: 137\n" in out and "second: 137\n" in out and "loop: 137\n" in out   # killed: 128 + SIGKILL
    assert "lp_null.sh: line 4:     1 Killed                  cat /proc/cmdline\n" in out
    assert "after: console=ttyS0 klpemu\n" in out
    assert "the kernel oopsed (3x, pid 1): BUG: kernel NULL pointer dereference, address: 0000000000000000" in err
    assert out.count("RIP: 0010:klpemu_hostile_cmdline_proc_show+0x") == 3
    assert "livepatch: 'klpemu_hostile_lp_null': unpatching complete" in out
