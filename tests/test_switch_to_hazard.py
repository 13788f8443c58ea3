"""The switch_to/RIP hazard (issue 5) on genuine gcc output: the legacy kernel
switches stacks inline in __schedule without saving RIP; a livepatch of
__schedule with a different frame crashes it (override) or is refused; the
modern kernel, whose resume point is a return address, runs the same patch."""
import errno

import pytest

from emu import Machine, MachineCrashed
from emu.errors import ShellError
from klp import Livepatch
from klp.hazard import SwitchCheck
from klp.objects import KlpFunc
from klpemu.cli import main

MODS = "fixtures/build/modules"
FRAME_MSG = ("livepatch: function '__schedule' switches stacks without saving RIP: a task sleeping "
             "in it would resume in a different frame (old: 64 bytes, rbp@CFA-16 r15@CFA-24 "
             "r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-64; new: 88 bytes, rbp@CFA-16 "
             "r15@CFA-24 r14@CFA-32 r13@CFA-40 r12@CFA-48 rbx@CFA-56 rbp@CFA-88)")


def _boot(kernel: str, seed: int = 1) -> tuple[Machine, Livepatch]:
    m = Machine(cpus=2, seed=seed, kernel=kernel).boot()
    return m, Livepatch.attach(m)


def test_legacy_sleeping_tasks_walk_reliably_from_the_resume_point():
    m, _ = _boot("legacy")
    m.run(1.0)
    resume = m.walker.resume_ip
    assert resume is not None and m.kallsyms.lookup(resume).symbol.name == "__schedule"
    sleeping = [t for t in m.tasks() if m.running_on(t) is None]
    assert sleeping
    for t in sleeping:
        trace = m.walker.trace(t)
        assert trace.reliable, (t.comm, trace.reason)
        assert trace.frames[0].ip == resume


def test_legacy_refuses_a_schedule_with_another_frame():
    m, _ = _boot("legacy")
    with pytest.raises(ShellError) as exc:
        m.insmod(f"{MODS}/klpemu_sched_frame.ko")
    assert exc.value.errno == errno.EINVAL
    lines = m.dmesg_lines()
    assert FRAME_MSG in lines
    assert not any("enabling patch" in l for l in lines)
    assert not m.vfs.is_dir("/sys/kernel/livepatch/klpemu_sched_frame")
    m.run(1.0)
    assert not m.oopses


def test_legacy_refuses_patching_the_container_of_an_inlined_fix():
    m, _ = _boot("legacy")
    with pytest.raises(ShellError):
        m.insmod(f"{MODS}/klpemu_sched_inline.ko")
    assert any("function '__schedule' switches stacks without saving RIP" in l and "new: 72 bytes" in l
               for l in m.dmesg_lines())


def test_legacy_reports_targets_inlined_into_schedule():
    m, _ = _boot("legacy")
    check = SwitchCheck(m)
    assert check.problems(None, KlpFunc("finish_task_switch", 0, 0, None)) == [
        "function 'finish_task_switch' is inlined into '__schedule', which switches stacks without "
        "saving RIP: patch '__schedule' instead"]
    assert check.problems(None, KlpFunc("cmdline_proc_show", 0, 0, None)) == []


def _crash(seed: int) -> list[str]:
    m, lp = _boot("legacy", seed)
    lp.allow_unsafe_switch_to()
    try:
        m.insmod(f"{MODS}/klpemu_sched_frame.ko")
        m.run(3.0)
    except MachineCrashed:
        pass
    lines = m.dmesg_lines()
    assert "livepatch: UNSAFE: switch_to/RIP frame check disabled: patching a function that " \
           "switches stacks without saving RIP may crash the kernel" in lines
    assert "livepatch: UNSAFE: enabling patch 'klpemu_sched_frame' anyway (switch_to/RIP check " \
           "overridden)" in lines
    assert m.oopses, f"seed {seed}: no crash"
    return m.oopses[0].lines


def test_legacy_override_crashes_deterministically():
    first = _crash(1)
    assert first == _crash(1)
    text = "\n".join(first)
    assert first[0].startswith("BUG: ")
    for what in ("RIP: 0010:", "RSP: 0018:", "RBP: ", "Call Trace:"):
        assert what in text


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_legacy_override_crashes_across_seeds(seed):
    _crash(seed)


def test_modern_runs_the_same_patch_and_completes():
    m, lp = _boot("modern")
    m.insmod(f"{MODS}/klpemu_sched_frame.ko")
    new = m.kallsyms.find("livepatch___schedule", "klpemu_sched_frame", 0).address
    old = m.kernel.find_symbol("__schedule").address
    transition = "/sys/kernel/livepatch/klpemu_sched_frame/transition"
    seen: set[str] = set()
    for _ in range(10):
        m.insmod(f"{MODS}/klpemu_sched_kick.ko")      # every kworker runs
        for _ in range(4):
            m.run(0.25)
            for t in m.tasks():
                if m.running_on(t) is not None or t.is_idle:
                    continue
                trace = m.walker.trace(t)
                assert trace.reliable, (t.comm, trace.reason)
                func = m.kallsyms.lookup(trace.frames[0].ip).symbol.address
                # a task resumes in the __schedule it slept in: its own patch state's
                assert func == (old if t.patch_state == 0 else new), t.comm
                seen.add("new" if func == new else "old")
        m.rmmod("klpemu_sched_kick")
        if m.read_file(transition) == "0\n":
            break
    assert m.read_file(transition) == "0\n"
    assert seen == {"old", "new"}
    assert not m.oopses
    assert "livepatch: 'klpemu_sched_frame': patching complete" in m.dmesg_lines()


def test_hazards_lists_both_flavours(capsys):
    assert main(["hazards", "--kernel", "legacy"]) == 0
    legacy = capsys.readouterr().out.splitlines()
    assert any(l.startswith("__schedule ") and "switches stacks without saving RIP: a task resumes at "
               "__schedule+0x" in l for l in legacy)
    assert any(l.startswith("finish_task_switch ") and "inlined into __schedule" in l for l in legacy)
    assert any(l.startswith("pick_next_task ") for l in legacy)
    assert any(l.startswith("ret_from_fork_asm ") and l.endswith("notrace: no fentry site")
               for l in legacy)
    assert main(["hazards", "--kernel", "modern"]) == 0
    modern = capsys.readouterr().out.splitlines()
    assert not any("without saving RIP" in l or "inlined into" in l for l in modern)
    assert any(l.startswith("__switch_to_asm ") and l.endswith("notrace: no fentry site") for l in modern)
