"""Atomic replace (klp-spec.md §5) on the real guest, at kernel parity.

Three livepatches of klpemu_test_target, each with its own klpemu_test_wait()
so that a reader of /proc/klpemu_test_target tells which one it ran:
klpemu_test_patch (P1: "released by the livepatch"), klpemu_test_patch2 (P2:
"released by livepatch 2", `replace` parameter, logging callbacks) and the
replace klpemu_test_patch3 (P3: patches klpemu_test_sleep() only, so the
functions older patches change get NOP funcs; the original says "released").
A reader blocked in klpemu_test_wait() until `release` holds a transition open.
"""
from __future__ import annotations

import errno
import re

import pytest

from emu import Machine, ShellError
from emu.kernel.shell import Shell
from emu.trace.ftrace import JMP, NOP5
from klp import Livepatch
from klp.objects import KlpPatch
from klp_helpers import MODULES, SEC, SYSFS, TICK, attr, errno_of, load_lp, patch_state, set_dynamic_debug
from klp_helpers import reader as shared_reader
from klp_helpers import wait_done, wait_sleeping_in

TARGET = "klpemu_test_target"
PROC = f"/proc/{TARGET}"
P1, P2, P3 = "klpemu_test_patch", "klpemu_test_patch2", "klpemu_test_patch3"
CMDLINE_LP = "test_klp_livepatch"
ORIGINAL, BY_P1, BY_P2 = "released", "released by the livepatch", "released by livepatch 2"
WARN = "livepatch: forcing remaining tasks to the patched state"


@pytest.fixture(params=["native", "python"])
def backend(request) -> str:
    return request.param


def boot(backend: str = "native", target_args: str = "") -> Machine:
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m, backend)
    set_dynamic_debug(m)
    m.insmod(MODULES / f"{TARGET}.ko", target_args)
    return m


def load(m: Machine, patch: str, args: str = "") -> None:
    load_lp(m, patch, args, timeout_s=2.5)


def release(m: Machine, value: int = 1) -> None:
    m.write_file(f"/sys/module/{TARGET}/parameters/release", str(value))


def reader(m: Machine) -> Shell:
    """A new shell (forked from the first one) blocked in `cat /proc/klpemu_test_target`."""
    return shared_reader(m, PROC, "klpemu_test_wait")


def answer(sh: Shell) -> str:
    """What klpemu_test_wait() returned to a reader."""
    return sh.cat_result(PROC).removeprefix(f"{TARGET}: ").removesuffix("\n")


def in_effect(m: Machine) -> str:
    """What klpemu_test_wait() returns now (released) to the first shell."""
    return m.read_file(PROC).removeprefix(f"{TARGET}: ").removesuffix("\n")


def stack(m: Machine, pid: int) -> list[str]:
    """The task's symbolised frames without the offsets, the compiler's business: "name [module]"."""
    return [re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "", frame)
            for frame in m.walker.format(m.walker.trace(m.task(pid)))]


def site(m: Machine, func: str) -> str:
    """What the fentry site of a klpemu_test_target function does: "nop" or "jmp <symbol>"."""
    address = m.kallsyms.find(func, TARGET).address
    insn = m.ftrace.read_site(address)
    if insn == NOP5:
        return "nop"
    assert insn[0] == JMP
    target = address + 5 + int.from_bytes(insn[1:], "little", signed=True)
    return f"jmp {m.symbolize(target).split('+')[0]}"


def symbol_range(m: Machine, name: str, module: str) -> tuple[int, int]:
    sym = m.kallsyms.find(name, module)
    return sym.address, sym.address + sym.size


def check_ranges(m: Machine) -> dict[str, tuple[int, int, bool]]:
    """klp_check_stack's range of each func of the transition patch: (start, end, nop)."""
    return {f.old_name: (start, end, f.nop) for start, end, f in Livepatch.attach(m).transition.check_ranges()}


def sysfs_funcs(m: Machine, patch: str, obj: str = TARGET) -> list[str]:
    return sorted(m.listdir(f"{SYSFS}/{patch}/{obj}"))


def blocking(m: Machine) -> list[str]:
    return [str(b) for b in Livepatch.attach(m).transition.blocking]


def klp_patch(m: Machine, name: str) -> KlpPatch:
    return next(p for p in Livepatch.attach(m).patches if p.name == name)


def guest_forced(m: Machine, patch: KlpPatch) -> bool:
    """klp_patch.forced as the guest's struct holds it."""
    return bool(Livepatch.attach(m).g.u8(patch.struct, "KLP_PATCH_forced"))


class Log:
    """The livepatch lines (the core's and the patches' callbacks) from now on."""

    def __init__(self, m: Machine) -> None:
        self.m, self.mark = m, len(m.dmesg_lines())

    def lines(self) -> list[str]:
        return [line for line in self.m.dmesg_lines()[self.mark:]
                if line.startswith(("livepatch:", "klpemu_test_patch"))]


def enabling(patch: str) -> list[str]:
    return [f"livepatch: enabling patch '{patch}'",
            f"livepatch: '{patch}': initializing patching transition",
            f"{patch}: pre_patch_callback: {TARGET}",
            f"livepatch: '{patch}': starting patching transition"]


def patched(patch: str) -> list[str]:
    return [f"livepatch: '{patch}': completing patching transition",
            f"{patch}: post_patch_callback: {TARGET}",
            f"livepatch: '{patch}': patching complete"]


def rmmod_refused(m: Machine, name: str) -> int:
    return errno_of(m.rmmod, name)


# ---------------------------------------------------------------- 1. older patches mid-stack
def test_a_task_in_the_older_patch_runs_it_and_blocks_the_replace_until_it_leaves(backend: str) -> None:
    m = boot(backend, "sleeper=1")
    release(m)                                        # the kthread waits outside, in its loop
    load(m, P1)
    release(m, 0)                                     # and goes back in: into P1's function
    sleeper = wait_sleeping_in(m, lambda: next(t for t in m.tasks() if t.comm == "klpemu_sleeper"),
                               "klpemu_test_sleep").pid
    old = reader(m)
    assert f"livepatch_klpemu_test_sleep [{P1}]" in stack(m, sleeper)
    assert f"livepatch_klpemu_test_wait [{P1}]" in stack(m, old.pid)
    log = Log(m)
    m.insmod(MODULES / f"{P2}.ko", "replace=1")
    m.run(1.1)                                        # the first retry
    assert blocking(m) == [f"klpemu_sleeper:{sleeper} is sleeping on function klpemu_test_sleep",
                           f"sh:{old.pid} is sleeping on function klpemu_test_wait"]
    assert patch_state(m, old.pid) == "0\n" and patch_state(m, sleeper) == "0\n"
    assert patch_state(m, 1) == "1\n"
    # checked: the previous func_stack entry (P1's functions), not the originals
    assert check_ranges(m) == {
        "klpemu_test_sleep": (*symbol_range(m, "livepatch_klpemu_test_sleep", P1), False),
        "klpemu_test_wait": (*symbol_range(m, "livepatch_klpemu_test_wait", P1), False),
        "klpemu_test_spin": (*symbol_range(m, "livepatch_klpemu_test_spin", P1), True),
    }
    assert sysfs_funcs(m, P2) == ["klpemu_test_sleep,1", "klpemu_test_spin,1", "klpemu_test_wait,1", "patched"]
    assert attr(m, P1, "enabled") == "1\n" and attr(m, P2, "transition") == "1\n"
    new = reader(m)                                   # forked from the switched shell
    assert patch_state(m, new.pid) == "1\n"
    assert f"livepatch2_klpemu_test_wait [{P2}]" in stack(m, new.pid)
    m.run(1.0)
    assert len(blocking(m)) == 2 and attr(m, P2, "transition") == "1\n"

    release(m)
    released = m.clock_ns
    assert answer(old) == BY_P1 and answer(new) == BY_P2
    wait_done(m, P2)
    if backend == "python":
        assert Livepatch.attach(m).dispatch.python_calls > 0
    assert m.clock_ns - released <= SEC + TICK        # at the next retry
    assert log.lines() == enabling(P2) + patched(P2)  # P1's are never called
    assert m.listdir(SYSFS) == [P2]
    assert sysfs_funcs(m, P2) == ["klpemu_test_sleep,1", "klpemu_test_wait,1", "patched"]
    assert in_effect(m) == BY_P2
    assert m.read_file(f"/sys/module/{P1}/refcnt") == "0\n"
    m.rmmod(P1)
    assert in_effect(m) == BY_P2


def test_nop_funcs_send_switched_tasks_to_the_original(backend: str) -> None:
    m = boot(backend)
    load(m, P1)
    old = reader(m)
    log = Log(m)
    m.insmod(MODULES / f"{P3}.ko")
    new = reader(m)
    # the original klpemu_test_wait, through the NOP: no livepatch frame on the way
    assert f"klpemu_test_wait [{TARGET}]" in stack(m, new.pid)
    assert not any("livepatch" in frame for frame in stack(m, new.pid))
    m.run(1.0)
    assert blocking(m) == [f"sh:{old.pid} is sleeping on function klpemu_test_wait"]
    assert check_ranges(m)["klpemu_test_wait"] == (*symbol_range(m, "livepatch_klpemu_test_wait", P1), True)
    release(m)
    assert answer(old) == BY_P1 and answer(new) == ORIGINAL
    wait_done(m, P3)
    assert log.lines() == enabling(P3) + patched(P3)
    assert in_effect(m) == ORIGINAL
    assert site(m, "klpemu_test_wait") == "nop" and site(m, "klpemu_test_spin") == "nop"
    lp = Livepatch.attach(m)
    assert lp.dispatch.find_ops(m.kallsyms.find("klpemu_test_wait", TARGET).address) is None
    assert [f.new_func for _, f in klp_patch(m, P3).funcs()] == [
        m.kallsyms.find("livepatch3_klpemu_test_sleep", P3).address]


# ---------------------------------------------------------------- 2. reversal
def test_reversing_a_replace_leaves_the_older_patches_untouched(backend: str) -> None:
    m = boot(backend)
    load(m, P2)
    old = reader(m)                                   # in P2's klpemu_test_wait
    log = Log(m)
    m.insmod(MODULES / f"{P3}.ko")
    new = reader(m)                                   # in the original, through the NOP
    for path, value, err in (("enabled", "0", errno.EBUSY), ("force", "1", errno.EINVAL)):
        with pytest.raises(ShellError) as e:
            m.write_file(f"{SYSFS}/{P2}/{path}", value)
        assert e.value.errno == err
    m.write_file(f"{SYSFS}/{P3}/enabled", "0")
    assert attr(m, P3, "enabled") == "0\n" and attr(m, P3, "transition") == "1\n"
    assert patch_state(m, old.pid) == "0\n" and patch_state(m, new.pid) == "1\n"
    m.run(1.0)
    # unpatching checks the NOP's new_func: the original function
    assert blocking(m) == [f"sh:{new.pid} is sleeping on function klpemu_test_wait"]
    assert check_ranges(m)["klpemu_test_wait"] == (*symbol_range(m, "klpemu_test_wait", TARGET), True)
    release(m)
    assert answer(old) == BY_P2 and answer(new) == ORIGINAL
    m.run_until(lambda: not m.exists(f"{SYSFS}/{P3}"), 1.5, "the replace patch to be freed")
    assert log.lines() == enabling(P3) + [
        f"livepatch: '{P3}': reversing transition from patching to unpatching",
        f"livepatch: '{P3}': starting unpatching transition",
        f"livepatch: '{P3}': completing unpatching transition",
        f"{P3}: post_unpatch_callback: {TARGET}",
        f"livepatch: '{P3}': unpatching complete",
    ]
    assert m.listdir(SYSFS) == [P2]
    assert (attr(m, P2, "enabled"), attr(m, P2, "transition"), attr(m, P2, "stack_order")) == ("1\n", "0\n", "1\n")
    assert attr(m, P2, f"{TARGET}/patched") == "1\n"
    assert in_effect(m) == BY_P2
    assert m.read_file(f"/sys/module/{P2}/refcnt") == "1\n"
    assert m.read_file(f"/sys/module/{P3}/refcnt") == "0\n"
    m.rmmod(P3)
    assert in_effect(m) == BY_P2


def test_a_replace_that_fails_to_init_leaves_the_older_patches_untouched() -> None:
    """klp_find_func matches the same old_sympos only (before 6.19): P1's
    klpemu_test_wait (sympos 0) gets a NOP beside P2's (sympos 1), whose
    sysfs directory, "klpemu_test_wait,1", already exists."""
    m = boot()
    load(m, P1)
    log = Log(m)
    with pytest.raises(ShellError) as err:
        m.insmod(MODULES / f"{P2}.ko", "replace=1 sympos=1")
    assert err.value.errno == errno.EEXIST
    assert log.lines() == []
    assert m.listdir(SYSFS) == [P1] and not m.exists(f"/sys/module/{P2}")
    assert (attr(m, P1, "enabled"), attr(m, P1, "stack_order")) == ("1\n", "1\n")
    release(m)
    assert in_effect(m) == BY_P1
    load(m, P2, "replace=1")
    assert m.listdir(SYSFS) == [P2] and in_effect(m) == BY_P2


# ---------------------------------------------------------------- 3. force
def test_a_forced_replace_pins_the_replaced_modules_forever(backend: str) -> None:
    m = boot(backend)
    load(m, P1)
    load(m, P2)                                       # stacked on P1
    old = reader(m)                                   # in P2's klpemu_test_wait
    replaced = [klp_patch(m, P1), klp_patch(m, P2)]
    log = Log(m)
    m.insmod(MODULES / f"{P3}.ko")
    m.run(1.0)
    assert blocking(m) == [f"sh:{old.pid} is sleeping on function klpemu_test_wait"]
    # two older patches: each func checks the newest implementation before the replace's
    assert check_ranges(m) == {
        "klpemu_test_sleep": (*symbol_range(m, "livepatch2_klpemu_test_sleep", P2), False),
        "klpemu_test_wait": (*symbol_range(m, "livepatch2_klpemu_test_wait", P2), True),
        "klpemu_test_spin": (*symbol_range(m, "livepatch_klpemu_test_spin", P1), True),
    }
    m.write_file(f"{SYSFS}/{P3}/force", "1")
    assert patch_state(m, old.pid) == "1\n" and attr(m, P3, "transition") == "1\n"
    assert [guest_forced(m, p) for p in replaced + [klp_patch(m, P3)]] == [True, True, False]
    wait_done(m, P3, 1.5)
    assert log.lines() == enabling(P3) + [WARN] + patched(P3)
    assert next(r.level for r in m.dmesg_log.records() if r.text == WARN) == 4
    assert m.listdir(SYSFS) == [P3]
    for _ in range(2):
        for name in (P1, P2):
            assert rmmod_refused(m, name) == errno.EAGAIN
            assert m.read_file(f"/sys/module/{name}/refcnt") == "1\n"
        m.run(1.0)
    # the replace itself was not forced: it goes away
    m.write_file(f"{SYSFS}/{P3}/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/{P3}"), 1.5, "the replace patch to be freed")
    assert m.read_file(f"/sys/module/{P3}/refcnt") == "0\n"
    m.rmmod(P3)
    release(m)                                        # it was still running P2's code
    assert answer(old) == BY_P2
    assert rmmod_refused(m, P2) == errno.EAGAIN


# ---------------------------------------------------------------- 4. re-loading a replaced module
def test_a_replaced_module_reloaded_stacks_on_or_replaces_back(backend: str) -> None:
    m = boot(backend)
    release(m)
    load(m, P2)
    load(m, P3)
    assert m.listdir(SYSFS) == [P3] and in_effect(m) == ORIGINAL
    assert m.read_file(f"/sys/module/{P2}/refcnt") == "0\n"
    log = Log(m)
    with pytest.raises(ShellError) as err:            # still loaded
        m.insmod(MODULES / f"{P2}.ko")
    assert err.value.errno == errno.EEXIST
    m.rmmod(P2)
    assert log.lines() == []                          # rmmod says nothing from livepatch

    load(m, P2, "replace=0")                          # stacks on the replace
    assert log.lines() == enabling(P2) + patched(P2)
    assert m.listdir(SYSFS) == [P2, P3]
    assert [attr(m, p, "stack_order") for p in (P3, P2)] == ["1\n", "2\n"]
    assert attr(m, P2, "replace") == "0\n" and attr(m, P3, "enabled") == "1\n"
    assert in_effect(m) == BY_P2
    m.write_file(f"{SYSFS}/{P2}/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/{P2}"), 1.5, "the patch to be freed")
    assert in_effect(m) == ORIGINAL                   # back to what P3 left: the NOP is long gone
    m.rmmod(P2)

    log = Log(m)
    load(m, P2, "replace=1")                          # replaces the replace
    assert log.lines() == enabling(P2) + patched(P2)  # P3's callbacks never run
    assert m.listdir(SYSFS) == [P2]
    assert (attr(m, P2, "replace"), attr(m, P2, "stack_order")) == ("1\n", "1\n")
    assert in_effect(m) == BY_P2
    assert m.read_file(f"/sys/module/{P3}/refcnt") == "0\n"
    m.rmmod(P3)
    assert in_effect(m) == BY_P2


# ---------------------------------------------------------------- 5. after the replace
def test_after_a_replace_unpatched_sites_go_back_to_the_nop_and_nops_are_discarded() -> None:
    m = boot()
    load(m, CMDLINE_LP)                               # vmlinux: cmdline_proc_show
    load(m, P1)
    load(m, P2)
    assert (site(m, "klpemu_test_sleep"), site(m, "klpemu_test_wait"), site(m, "klpemu_test_spin")) == (
        "jmp livepatch2_klpemu_test_sleep", "jmp livepatch2_klpemu_test_wait", "jmp livepatch_klpemu_test_spin")
    assert m.read_file("/proc/cmdline") == f"{CMDLINE_LP}: this has been live patched\n"
    old = reader(m)
    m.insmod(MODULES / f"{P3}.ko")
    # during the transition: a dynamic vmlinux object and NOP funcs, in sysfs too
    assert sorted(m.listdir(f"{SYSFS}/{P3}")) == sorted(
        ["enabled", "transition", "force", "replace", "stack_order", "vmlinux", TARGET])
    assert sysfs_funcs(m, P3, "vmlinux") == ["cmdline_proc_show,1", "patched"]
    assert sysfs_funcs(m, P3) == ["klpemu_test_sleep,1", "klpemu_test_spin,1", "klpemu_test_wait,1", "patched"]
    assert attr(m, P3, "vmlinux/patched") == "1\n"
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"   # switched: the NOP
    release(m)
    assert answer(old) == BY_P2
    wait_done(m, P3)
    assert m.listdir(SYSFS) == [P3] and attr(m, P3, "stack_order") == "1\n"
    assert sorted(m.listdir(f"{SYSFS}/{P3}")) == sorted(
        ["enabled", "transition", "force", "replace", "stack_order", TARGET])
    assert sysfs_funcs(m, P3) == ["klpemu_test_sleep,1", "patched"]
    assert (site(m, "klpemu_test_sleep"), site(m, "klpemu_test_wait"), site(m, "klpemu_test_spin")) == (
        "jmp livepatch3_klpemu_test_sleep", "nop", "nop")
    assert m.ftrace.read_site(m.ftrace.site_of("cmdline_proc_show")) == NOP5
    assert [f.old_name for _, f in klp_patch(m, P3).funcs()] == ["klpemu_test_sleep"]
    assert m.read_file("/proc/cmdline") == "console=ttyS0 klpemu\n"
    assert in_effect(m) == ORIGINAL
    for name in (CMDLINE_LP, P1, P2):
        assert m.read_file(f"/sys/module/{name}/refcnt") == "0\n"
        m.rmmod(name)
