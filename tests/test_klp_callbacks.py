"""Livepatch callbacks at kernel parity (kernel/livepatch/core.c, core.h,
transition.c), each rule on its own, and the ported test-callbacks.sh and
test-sysfs.sh. Everything runs on the gcc-built guest: the callbacks are the
test_klp_callbacks_demo module's own code."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from klp_helpers import Session, errno_of
from klpemu.scenario import FIXTURE_MODULES

SELFTESTS = Path(__file__).resolve().parent.parent / "scenarios" / "selftests"
D, D2 = "test_klp_callbacks_demo", "test_klp_callbacks_demo2"
T, B = "test_klp_callbacks_mod", "test_klp_callbacks_busy"
LIVE = "[MODULE_STATE_LIVE] Normal state"
COMING = "[MODULE_STATE_COMING] Full formed, running module_init"
GOING = "[MODULE_STATE_GOING] Going away"


def cb(callback: str, obj: str | None = None, state: str = LIVE, patch: str = D) -> str:
    return f"{patch}: {callback}_callback: " + ("vmlinux" if obj is None else f"{obj} -> {state}")


def lp(text: str) -> str:
    return f"livepatch: {text}"


def insmod_refused(s: Session, name: str, args: str = "") -> int:
    return errno_of(s.m.insmod, FIXTURE_MODULES / f"{name}.ko", args)


# ---------------------------------------------------------------- enable, disable
def test_enable_and_disable_call_back_every_loaded_object_in_list_order() -> None:
    s = Session()
    s.run(f"load_mod {B} block_transition=N\nload_mod {T}\nstart_test x\nload_lp {D}\ndisable_lp {D}")
    # objs[] order is vmlinux, T, B: the load order (B first) does not matter
    assert s.log() == [
        f"% insmod test_modules/{D}.ko",
        lp(f"enabling patch '{D}'"),
        lp(f"'{D}': initializing patching transition"),
        cb("pre_patch"), cb("pre_patch", T), cb("pre_patch", B),
        lp(f"'{D}': starting patching transition"),
        lp(f"'{D}': completing patching transition"),
        cb("post_patch"), cb("post_patch", T), cb("post_patch", B),
        lp(f"'{D}': patching complete"),
        f"% echo 0 > /sys/kernel/livepatch/{D}/enabled",
        lp(f"'{D}': initializing unpatching transition"),
        cb("pre_unpatch"), cb("pre_unpatch", T), cb("pre_unpatch", B),
        lp(f"'{D}': starting unpatching transition"),
        lp(f"'{D}': completing unpatching transition"),
        cb("post_unpatch"), cb("post_unpatch", T), cb("post_unpatch", B),
        lp(f"'{D}': unpatching complete"),
    ]


@pytest.mark.parametrize("err", [errno.ENODEV, errno.EBUSY])
def test_a_failing_pre_patch_refuses_the_livepatch_module_with_its_errno(err: int) -> None:
    s = Session()
    s.run(f"load_mod {T}\nstart_test x")
    assert insmod_refused(s, D, f"pre_patch_ret=-{err}") == err
    # the failed object gets no post_unpatch, and T's pre_patch never ran
    assert s.log() == [
        lp(f"enabling patch '{D}'"),
        lp(f"'{D}': initializing patching transition"),
        cb("pre_patch"),
        lp("pre-patch callback failed for object 'vmlinux'"),
        lp(f"failed to enable patch '{D}'"),
        lp(f"'{D}': canceling patching transition, going to unpatch"),
        lp(f"'{D}': completing unpatching transition"),
        lp(f"'{D}': unpatching complete"),
    ]
    assert not s.m.exists(f"/sys/kernel/livepatch/{D}")
    assert not s.m.exists(f"/sys/module/{D}")
    s.run(f"unload_mod {T}")            # nobody holds T


def test_a_failed_enable_calls_post_unpatch_for_every_object_whose_pre_patch_ran() -> None:
    # with ftrace off, B's object (the one with a function) cannot be patched
    s = Session()
    s.run(f"load_mod {T}\nload_mod {B} block_transition=N\nset_ftrace_enabled 0\nstart_test x")
    assert insmod_refused(s, D) == errno.EBUSY
    # B's pre_patch succeeded, so B gets post_unpatch although patching it failed
    assert s.log()[2:] == [
        cb("pre_patch"), cb("pre_patch", T), cb("pre_patch", B),
        lp("failed to register ftrace handler for function 'busymod_work_func' (-16)"),
        lp(f"failed to patch object '{B}'"),
        lp(f"failed to enable patch '{D}'"),
        lp(f"'{D}': canceling patching transition, going to unpatch"),
        lp(f"'{D}': completing unpatching transition"),
        cb("post_unpatch"), cb("post_unpatch", T), cb("post_unpatch", B),
        lp(f"'{D}': unpatching complete"),
    ]


# ---------------------------------------------------------------- module coming / going
def test_a_coming_module_is_patched_and_called_back_before_its_init() -> None:
    s = Session()
    s.run(f"load_lp {D}\nstart_test x\nload_mod {T}")
    assert s.log() == [
        f"% insmod test_modules/{T}.ko",
        lp(f"applying patch '{D}' to loading module '{T}'"),
        cb("pre_patch", T, COMING), cb("post_patch", T, COMING),
        f"{T}: {T}_init",
    ]
    assert s.m.read_file(f"/sys/kernel/livepatch/{D}/{T}/patched") == "1\n"


def test_a_going_module_is_called_back_and_reverted_after_its_exit() -> None:
    s = Session()
    s.run(f"load_mod {T}\nload_lp {D}\nstart_test x\nunload_mod {T}")
    assert s.log() == [
        f"% rmmod {T}",
        f"{T}: {T}_exit",
        cb("pre_unpatch", T, GOING),
        lp(f"reverting patch '{D}' on unloading module '{T}'"),
        cb("post_unpatch", T, GOING),
    ]
    assert s.m.read_file(f"/sys/kernel/livepatch/{D}/{T}/patched") == "0\n"
    # the object is gone for good: disabling calls back vmlinux only
    s.run(f"start_test y\ndisable_lp {D}")
    assert [ln for ln in s.log() if ln.startswith(f"{D}:")] == [cb("pre_unpatch"), cb("post_unpatch")]


def test_a_failing_pre_patch_refuses_the_coming_module() -> None:
    s = Session()
    s.run(f"load_lp {D}\nset_pre_patch_ret {D} -19\nstart_test x")
    assert insmod_refused(s, T) == errno.ENODEV
    assert s.log() == [
        lp(f"applying patch '{D}' to loading module '{T}'"),
        cb("pre_patch", T, COMING),
        lp(f"pre-patch callback failed for object '{T}'"),
        lp(f"patch '{D}' failed for module '{T}', refusing to load module '{T}'"),
    ]
    assert not s.m.exists(f"/sys/module/{T}")
    assert s.m.read_file(f"/sys/kernel/livepatch/{D}/{T}/patched") == "0\n"
    # the refusal left nothing behind: with pre_patch fixed, T loads as usual
    s.run(f"set_pre_patch_ret {D} 0\nstart_test y\nload_mod {T}")
    assert s.log()[-3:] == [cb("pre_patch", T, COMING), cb("post_patch", T, COMING), f"{T}: {T}_init"]


def test_a_coming_module_that_cannot_be_patched_is_refused_after_post_unpatch() -> None:
    s = Session()
    s.run(f"load_lp {D}\nset_ftrace_enabled 0\nstart_test x")
    assert insmod_refused(s, B) == errno.EBUSY
    assert s.log() == [
        lp(f"applying patch '{D}' to loading module '{B}'"),
        cb("pre_patch", B, COMING),
        lp("failed to register ftrace handler for function 'busymod_work_func' (-16)"),
        lp(f"failed to apply patch '{D}' to module '{B}' (-16)"),
        cb("post_unpatch", B, COMING),
        lp(f"patch '{D}' failed for module '{B}', refusing to load module '{B}'"),
    ]
    assert not s.m.exists(f"/sys/module/{B}")


# ---------------------------------------------------------------- during a transition
BUSY_TRANSITION = f"""
load_mod {B} block_transition=Y
load_lp_nowait {D}
loop_until 'grep -q ^1$ /sys/kernel/livepatch/{D}/transition'
"""


def test_post_patch_of_a_coming_module_waits_for_the_transition_to_complete() -> None:
    s = Session()
    s.run(BUSY_TRANSITION + f"start_test x\nload_mod {T}")
    assert s.log()[-3:] == [lp(f"applying patch '{D}' to loading module '{T}'"),
                            cb("pre_patch", T, COMING), f"{T}: {T}_init"]
    # let busymod_work_func() return: the transition completes, and with it
    # every loaded object's post_patch, the late one included
    s.run(f"start_test y\necho 0 > /sys/module/{B}/parameters/block_transition\n"
          f"loop_until 'grep -q ^0$ /sys/kernel/livepatch/{D}/transition'")
    assert s.log() == [
        f"{B}: busymod_work_func exit",
        lp(f"'{D}': completing patching transition"),
        cb("post_patch"), cb("post_patch", T), cb("post_patch", B),
        lp(f"'{D}': patching complete"),
    ]


def test_a_going_module_skips_pre_unpatch_while_its_patch_is_in_transition() -> None:
    s = Session()
    s.run(BUSY_TRANSITION + f"load_mod {T}\nstart_test x\nunload_mod {T}")
    assert s.log() == [
        f"% rmmod {T}",
        f"{T}: {T}_exit",
        lp(f"reverting patch '{D}' on unloading module '{T}'"),
        cb("post_unpatch", T, GOING),
    ]


def test_reversing_a_transition_calls_nothing_back() -> None:
    s = Session()
    s.run(BUSY_TRANSITION + f"start_test x\ndisable_lp {D}")
    # no pre_unpatch at the reversal; at completion post_unpatch for the
    # objects whose pre_patch ran
    assert s.log() == [
        f"% echo 0 > /sys/kernel/livepatch/{D}/enabled",
        lp(f"'{D}': reversing transition from patching to unpatching"),
        lp(f"'{D}': starting unpatching transition"),
        lp(f"'{D}': completing unpatching transition"),
        cb("post_unpatch"), cb("post_unpatch", B),
        lp(f"'{D}': unpatching complete"),
    ]


def test_callbacks_run_as_guest_code_on_the_task_that_triggers_them() -> None:
    s = Session()
    s.run(BUSY_TRANSITION)
    m = s.m
    seen: list[tuple[str, str]] = []

    def record(cpu, what: str) -> None:
        current = m.current_task(cpu)
        seen.append((what, next(t.comm for t in m.tasks() if t.address == current)))

    for what in ("pre_patch_callback", "post_patch_callback"):
        address = m.kallsyms.find(what, D).address
        for cpu in m.cpus:
            cpu.engine.hook_code_at(address, lambda cpu=cpu, what=what: record(cpu, what))
    s.run(f"load_mod {T}\necho 0 > /sys/module/{B}/parameters/block_transition\n"
          f"loop_until 'grep -q ^0$ /sys/kernel/livepatch/{D}/transition'")
    # T's pre_patch on insmod's task; the deferred post_patches on the
    # kworker that ran the transition work which completed the transition
    assert seen[0] == ("pre_patch_callback", "sh")
    assert [w for w, _ in seen[1:]] == ["post_patch_callback"] * 3
    assert len({comm for _, comm in seen[1:]}) == 1 and seen[1][1].startswith("kworker/")


def test_atomic_replace_calls_back_only_the_new_patch() -> None:
    s = Session()
    s.run(f"load_lp {D}\nstart_test x\nload_lp {D2} replace=1\nunload_lp {D}\n"
          f"disable_lp {D2}\nunload_lp {D2}")
    assert [ln for ln in s.log() if ln.startswith(f"{D}:")] == []
    assert [ln.split(": ", 1)[1] for ln in s.log() if ln.startswith(f"{D2}:")] == [
        "pre_patch_callback: vmlinux", "post_patch_callback: vmlinux",
        "pre_unpatch_callback: vmlinux", "post_unpatch_callback: vmlinux"]


# ---------------------------------------------------------------- the ported selftests
@pytest.mark.parametrize("cpus", [1, 2], ids=["1cpu", "2cpu"])
@pytest.mark.parametrize("script", ["test-callbacks.sh", "test-sysfs.sh"])
def test_ported_selftest_passes_with_the_kernels_output(script: str, cpus: int) -> None:
    text = (SELFTESTS / script).read_text()
    s = Session(cpus)
    result = s.r.run_text(text)
    report = s.out.getvalue()
    assert result.exit_code == 0, report + "\n" + s.m.dmesg()
    tests = text.count("\nstart_test ")
    assert report.count(" ... ok\n") == tests and " ... not ok" not in report, report
