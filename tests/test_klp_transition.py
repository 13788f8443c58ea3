"""The consistency model on real stacks (kernel/livepatch/transition.c).

klpemu_test_target's tasks sleep, spin or wait inside the functions that
klpemu_test_patch replaces until its `release` parameter lets them out: a
kthread (sleeper=1 uninterruptibly, sleeper=2 interruptibly), a spinning
kthread (spinner=1 inside a patched function, spinner=2 outside), and any
reader of /proc/klpemu_test_target (a user task, waiting interruptibly).
"""
import json
from pathlib import Path

import pytest

import klp_helpers
from emu import Machine, ShellError
from emu.kernel.shell import Shell
from emu.kernel.tasks import TaskView
from klp import Livepatch
from klp.transition import SwitchResult, Transition
from klp_helpers import MODULES, SEC, SYSFS, TICK, klp_lines, patch_state, set_dynamic_debug
from klpemu.cli import main

LP, TARGET = "klpemu_test_patch", "klpemu_test_target"
PROC = f"/proc/{TARGET}"
EAGAIN, EBUSY, EINVAL, EACCES, ENOENT = 11, 16, 22, 13, 2


def boot(cpus: int) -> Machine:
    m = Machine(cpus=cpus, seed=0).boot()
    Livepatch.attach(m)
    set_dynamic_debug(m)
    return m


@pytest.fixture(params=[1, 2], ids=["1cpu", "2cpu"])
def m(request) -> Machine:
    return boot(request.param)


def transition(m: Machine) -> Transition:
    return Livepatch.attach(m).transition


def start(m: Machine, target_args: str = "") -> None:
    """Load the target (its tasks settle in), then the livepatch, without waiting."""
    m.insmod(MODULES / f"{TARGET}.ko", target_args)
    m.run(0.2)
    m.insmod(MODULES / f"{LP}.ko")


def attr(m: Machine, name: str) -> str:
    return klp_helpers.attr(m, LP, name)


def wait_done(m: Machine, timeout_s: float = 2.5) -> None:
    klp_helpers.wait_done(m, LP, timeout_s)


def release(m: Machine) -> None:
    m.write_file(f"/sys/module/{TARGET}/parameters/release", "1")


def task(m: Machine, comm: str) -> TaskView:
    return next(t for t in m.tasks() if t.comm == comm)


def functions(stack: tuple[str, ...] | list[str]) -> list[str]:
    """The function of each symbolised frame ("name+0xoff/0xsize [mod]" -> "name"), offsets
    being the compiler's business."""
    return [frame.split("+")[0] for frame in stack]


def reader(m: Machine) -> Shell:
    """A second shell, blocked in `cat /proc/klpemu_test_target`."""
    return klp_helpers.reader(m, PROC, "klpemu_test_wait")


PATCHING = [
    f"livepatch: enabling patch '{LP}'",
    f"livepatch: '{LP}': initializing patching transition",
    f"livepatch: '{LP}': starting patching transition",
]
PATCHED = [f"livepatch: '{LP}': completing patching transition", f"livepatch: '{LP}': patching complete"]
UNPATCHED = [f"livepatch: '{LP}': completing unpatching transition", f"livepatch: '{LP}': unpatching complete"]
UNPATCHING = [f"livepatch: '{LP}': initializing unpatching transition",
              f"livepatch: '{LP}': starting unpatching transition"]


# ---------------------------------------------------------------- sleeping in a patched function
def test_a_sleeping_task_blocks_the_transition_retried_every_second_until_it_leaves(m: Machine) -> None:
    start(m, "sleeper=1")
    t = transition(m)
    sleeper = task(m, "klpemu_sleeper")
    assert attr(m, "transition") == "1\n"
    assert patch_state(m, sleeper.pid) == "0\n"
    assert patch_state(m, 1) == "1\n"              # the shell switched on its way back to user mode
    tries = []
    for n in (2, 3, 4):     # the first retry at a whole second of jiffies, 0.75 to 1.75 s on
        m.run_until(lambda: t.signals_cnt == n, 1.75, f"try {n}")
        tries.append(t.last_try_ns)
    assert all(abs(b - a - SEC) <= TICK for a, b in zip(tries, tries[1:]))
    assert [str(b) for b in t.blocking] == [f"klpemu_sleeper:{sleeper.pid} is sleeping on function "
                                            "klpemu_test_sleep"]
    assert t.blocking[0].reason is SwitchResult.SLEEPING
    assert functions(t.blocking[0].stack) == ["__schedule", "schedule", "schedule_timeout", "msleep",
                                              "klpemu_test_sleep", "klpemu_test_thread", "ret_from_fork",
                                              "ret_from_fork_asm"]
    assert t.blocking[0].stack[4].endswith(f" [{TARGET}]")
    assert attr(m, "transition") == "1\n" and patch_state(m, sleeper.pid) == "0\n"

    release(m)
    released = m.clock_ns
    wait_done(m)
    assert m.clock_ns - released <= SEC + TICK      # at the next retry
    assert patch_state(m, sleeper.pid) == "-1\n" and t.blocking == [] and t.patch is None
    assert klp_lines(m) == PATCHING + PATCHED


def test_unpatching_is_blocked_by_a_task_sleeping_in_the_new_function(m: Machine) -> None:
    m.insmod(MODULES / f"{TARGET}.ko")
    m.insmod(MODULES / f"{LP}.ko")
    wait_done(m)
    sh = reader(m)                                   # sleeps in livepatch_klpemu_test_wait
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    m.run(1.1)                                       # past the idle tasks, at the first retry
    t = transition(m)
    assert [str(b) for b in t.blocking] == [f"sh:{sh.pid} is sleeping on function klpemu_test_wait"]
    assert any(f.startswith("livepatch_klpemu_test_wait+") and f.endswith(f"[{LP}]") for f in t.blocking[0].stack)
    assert patch_state(m, sh.pid) == "1\n" and patch_state(m, 1) == "0\n"
    release(m)
    assert sh.cat_result(PROC) == f"{TARGET}: released by the livepatch\n"
    m.run_until(lambda: not m.exists(f"{SYSFS}/{LP}"), 2.5, "the patch to be freed")
    assert klp_lines(m)[-4:] == UNPATCHING + UNPATCHED
    assert m.read_file(PROC) == f"{TARGET}: released\n"


# ---------------------------------------------------------------- preempted: an interrupt frame on the stack
@pytest.mark.parametrize("cpus", [1, 2])
def test_preempted_inside_a_patched_function_the_walk_goes_through_the_iret_frame(cpus: int) -> None:
    m = boot(cpus)
    start(m, "spinner=1 spin_cpu=0")                # same CPU as the shell and the retries
    t = transition(m)
    m.run_until(lambda: t.signals_cnt == 2, 1.75, "the first retry")
    spinner = task(m, "klpemu_spinner")
    [blocked] = t.blocking
    assert str(blocked) == f"klpemu_spinner:{spinner.pid} is sleeping on function klpemu_test_spin"
    # the interrupted ip, exact, under the frame of the interrupt entry
    assert functions(blocked.stack)[:5] == ["__schedule", "preempt_schedule_irq", "common_interrupt",
                                            "klpemu_test_spin", "klpemu_test_thread"]
    assert spinner.nivcsw > 0 and patch_state(m, spinner.pid) == "0\n"
    release(m)
    wait_done(m)
    assert klp_lines(m) == PATCHING + PATCHED


@pytest.mark.parametrize("cpus", [1, 2])
def test_preempted_outside_the_patched_functions_a_task_switches(cpus: int) -> None:
    m = boot(cpus)
    start(m, "spinner=2 spin_cpu=0")                # spins in klpemu_test_busy, never leaves
    wait_done(m)
    spinner = task(m, "klpemu_spinner")
    assert spinner.nivcsw > 0 and spinner.nvcsw == 0   # only ever preempted: switched by its stack
    assert klp_lines(m) == PATCHING + PATCHED


# ---------------------------------------------------------------- running on another CPU
@pytest.mark.parametrize("spinner,where", [(1, "klpemu_test_spin+0x"), (2, "klpemu_test_busy")])
def test_a_task_running_on_another_cpu_cannot_be_switched(spinner: int, where: str) -> None:
    m = boot(2)
    start(m, f"spinner={spinner} spin_cpu=1")
    m.run(1.2)
    t = transition(m)
    pid = task(m, "klpemu_spinner").pid
    assert [str(b) for b in t.blocking] == [f"klpemu_spinner:{pid} is running on CPU 1"]
    assert t.blocking[0].reason is SwitchResult.RUNNING and t.blocking[0].stack[0].startswith(where)
    assert attr(m, "transition") == "1\n" and patch_state(m, pid) == "0\n"
    release(m)
    wait_done(m)
    assert klp_lines(m) == PATCHING + PATCHED


# ---------------------------------------------------------------- signals
def test_after_15_retries_kthreads_are_woken_and_user_tasks_fake_signalled(m: Machine) -> None:
    sh = m.spawn_shell()
    m.insmod(MODULES / f"{TARGET}.ko", "sleeper=2")
    sh.cat_background(PROC)
    m.run(0.2)
    m.insmod(MODULES / f"{LP}.ko")
    t = transition(m)
    sleeper = task(m, "klpemu_sleeper")
    m.run_until(lambda: t.signals_cnt == 15, 16)
    assert {b.pid for b in t.blocking} == {sh.pid, sleeper.pid}
    assert klp_lines(m) == PATCHING
    m.run_until(lambda: "livepatch: signaling remaining tasks" in klp_lines(m), 1.1, "the signals")
    signalled = m.clock_ns
    assert m.read_file(f"/sys/module/{TARGET}/parameters/wakeups") == "1\n"   # woken, it left
    assert sh.cat_result(PROC) == f"{TARGET}: interrupted\n"                 # the fake signal
    assert patch_state(m, sh.pid) == "1\n" and patch_state(m, sleeper.pid) == "1\n"
    wait_done(m)
    assert m.clock_ns - signalled <= SEC + TICK
    assert klp_lines(m) == PATCHING + ["livepatch: signaling remaining tasks"] + PATCHED
    notice = next(r for r in m.dmesg_log.records() if r.text == "livepatch: signaling remaining tasks")
    assert notice.level == 5


def test_an_uninterruptible_sleeper_sleeps_through_the_signals() -> None:
    m = boot(1)
    start(m, "sleeper=1")
    t = transition(m)
    m.run_until(lambda: t.signals_cnt == 31, 32)      # signals at tries 15 and 30
    assert klp_lines(m) == PATCHING + ["livepatch: signaling remaining tasks"]   # once only
    assert m.read_file(f"/sys/module/{TARGET}/parameters/wakeups") == "0\n"
    assert len(t.blocking) == 1 and t.blocking[0].detail == "klpemu_test_sleep"


# ---------------------------------------------------------------- force
def test_force_completes_a_patching_transition(m: Machine) -> None:
    start(m, "sleeper=1")
    sleeper = task(m, "klpemu_sleeper")
    m.write_file(f"{SYSFS}/{LP}/force", "1")
    assert patch_state(m, sleeper.pid) == "1\n"       # still inside the old function
    assert attr(m, "transition") == "1\n"             # until the next retry
    wait_done(m)
    warn = next(r for r in m.dmesg_log.records() if "forcing" in r.text)
    assert (warn.text, warn.level) == ("livepatch: forcing remaining tasks to the patched state", 4)
    assert klp_lines(m) == PATCHING + [warn.text] + PATCHED
    # Not a replace patch forced while patching: it may still go away.
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    m.run_until(lambda: not m.exists(f"{SYSFS}/{LP}"), 2.5, "the patch to be freed")
    assert m.read_file(f"/sys/module/{LP}/refcnt") == "0\n"
    m.rmmod(LP)


def test_a_patch_forced_while_unpatching_can_never_be_removed(m: Machine) -> None:
    m.insmod(MODULES / f"{TARGET}.ko")
    m.insmod(MODULES / f"{LP}.ko")
    wait_done(m)
    sh = reader(m)
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    m.run(1.0)
    assert attr(m, "transition") == "1\n"
    m.write_file(f"{SYSFS}/{LP}/force", "1")
    assert patch_state(m, sh.pid) == "0\n"
    m.run_until(lambda: not m.exists(f"{SYSFS}/{LP}"), 1.5, "the patch to be freed")
    assert klp_lines(m)[-4:] == UNPATCHING[-1:] + [
        "livepatch: forcing remaining tasks to the patched state"] + UNPATCHED
    for _ in range(2):
        with pytest.raises(ShellError) as err:
            m.rmmod(LP)
        assert err.value.errno == EAGAIN
        assert m.read_file(f"/sys/module/{LP}/refcnt") == "1\n"
        m.run(1.0)
    release(m)                                        # it was still running the livepatch's code
    assert sh.cat_result(PROC) == f"{TARGET}: released by the livepatch\n"


# ---------------------------------------------------------------- reversal
def test_reversing_a_patching_transition(m: Machine) -> None:
    start(m, "sleeper=1")
    sleeper = task(m, "klpemu_sleeper")
    assert patch_state(m, 1) == "1\n"
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    assert attr(m, "enabled") == "0\n"
    assert patch_state(m, 1) == "0\n" and patch_state(m, sleeper.pid) == "0\n"   # flipped back
    m.run_until(lambda: not m.exists(f"{SYSFS}/{LP}"), 1.75, "the patch to be freed")
    assert klp_lines(m) == PATCHING + [
        f"livepatch: '{LP}': reversing transition from patching to unpatching",
        f"livepatch: '{LP}': starting unpatching transition"] + UNPATCHED
    assert m.read_file(f"/sys/module/{LP}/refcnt") == "0\n"
    m.rmmod(LP)
    release(m)


def test_reversing_an_unpatching_transition(m: Machine) -> None:
    m.insmod(MODULES / f"{TARGET}.ko")
    m.insmod(MODULES / f"{LP}.ko")
    wait_done(m)
    sh = reader(m)
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    assert patch_state(m, 1) == "0\n" and patch_state(m, sh.pid) == "1\n"
    m.write_file(f"{SYSFS}/{LP}/enabled", "1")
    assert attr(m, "enabled") == "1\n"
    assert patch_state(m, 1) == "1\n" and patch_state(m, sh.pid) == "1\n"
    wait_done(m)
    assert klp_lines(m)[-6:] == UNPATCHING + [
        f"livepatch: '{LP}': reversing transition from unpatching to patching",
        f"livepatch: '{LP}': starting patching transition"] + PATCHED
    release(m)
    assert sh.cat_result(PROC) == f"{TARGET}: released by the livepatch\n"
    assert m.read_file(f"{SYSFS}/{LP}/{TARGET}/patched") == "1\n"


# ---------------------------------------------------------------- sysfs errors during a transition
@pytest.mark.parametrize("path,value,err", [
    ("enabled", "1", EINVAL),                 # patching: already "enabled"
    ("enabled", "", EINVAL),                  # kstrtobool("\n")
    ("force", "maybe", EINVAL),
    ("replace", "1", EACCES),
    ("stack_order", "1", EACCES),
    (f"{TARGET}/patched", "0", EACCES),
])
def test_bad_writes_during_a_transition(m: Machine, path: str, value: str, err: int) -> None:
    start(m, "sleeper=1")
    with pytest.raises(ShellError) as e:
        m.write_file(f"{SYSFS}/{LP}/{path}", value)
    assert e.value.errno == err
    assert attr(m, "transition") == "1\n" and attr(m, "enabled") == "1\n"


def test_writing_0_to_enabled_of_an_unpatching_patch_is_einval(m: Machine) -> None:
    m.insmod(MODULES / f"{TARGET}.ko")
    m.insmod(MODULES / f"{LP}.ko")
    wait_done(m)
    reader(m)
    m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    with pytest.raises(ShellError) as e:
        m.write_file(f"{SYSFS}/{LP}/enabled", "0")
    assert e.value.errno == EINVAL and attr(m, "transition") == "1\n"
    release(m)


def test_force_0_is_a_no_op(m: Machine) -> None:
    start(m, "sleeper=1")
    m.write_file(f"{SYSFS}/{LP}/force", "0")
    m.run(1.1)
    assert attr(m, "transition") == "1\n" and not any("forcing" in line for line in klp_lines(m))


def test_another_patch_cannot_be_disabled_or_enabled_during_a_transition(m: Machine) -> None:
    m.insmod(MODULES / "test_klp_livepatch.ko")
    m.run_until(lambda: m.read_file(f"{SYSFS}/test_klp_livepatch/transition") == "0\n", 3)
    start(m, "sleeper=1")
    with pytest.raises(ShellError) as e:
        m.write_file(f"{SYSFS}/test_klp_livepatch/enabled", "0")
    assert e.value.errno == EBUSY
    with pytest.raises(ShellError) as e:
        m.insmod(MODULES / "test_klp_atomic_replace.ko")
    assert e.value.errno == EBUSY
    assert not m.exists(f"{SYSFS}/test_klp_atomic_replace")
    assert m.read_file(f"{SYSFS}/test_klp_livepatch/enabled") == "1\n"


def test_patch_state_of_a_missing_pid_is_enoent(m: Machine) -> None:
    with pytest.raises(ShellError) as e:
        m.read_file("/proc/4242/patch_state")
    assert e.value.errno == ENOENT


# ---------------------------------------------------------------- diagnostics
def test_the_blocking_report() -> None:
    m = boot(2)
    sh = m.spawn_shell()
    m.insmod(MODULES / f"{TARGET}.ko", "sleeper=1 spinner=2 spin_cpu=1")
    sh.cat_background(PROC)
    m.run(0.2)
    m.insmod(MODULES / f"{LP}.ko")
    t = transition(m)
    m.run_until(lambda: t.signals_cnt == 2, 1.75, "the first retry")
    sleeper, spinner = task(m, "klpemu_sleeper").pid, task(m, "klpemu_spinner").pid
    lines = t.report().splitlines()
    assert lines[0] == (f"livepatch: '{LP}': patching transition incomplete after 2 tries "
                        f"(the last at {t.last_try_ns / 1e9:.6f} s); blocking tasks:")
    heads = [line for line in lines[1:] if not line.startswith("      ")]
    assert heads == [f"  sh:{sh.pid} is sleeping on function klpemu_test_wait",
                     f"  klpemu_sleeper:{sleeper} is sleeping on function klpemu_test_sleep",
                     f"  klpemu_spinner:{spinner} is running on CPU 1"]
    assert any(line.startswith("      entry_SYSCALL_64+0x") for line in lines)
    release(m)
    wait_done(m)
    assert t.report() == "livepatch: no transition in progress\n"


SCRIPT = """\
insmod klpemu_test_target.ko sleeper=1
insmod klpemu_test_patch.ko
sleep 2
cat /sys/kernel/livepatch/klpemu_test_patch/transition
"""


def test_klpemu_run_blocking_reports_who_blocks_at_the_end(tmp_path: Path, capsys) -> None:
    script = tmp_path / "blocked.sh"
    script.write_text(SCRIPT)
    assert main(["run", str(script), "--cpus", "1", "--blocking"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1\n")
    report = out.split("\n--- blocking tasks ---\n")[1].splitlines()
    assert report[:2] == [
        f"livepatch: '{LP}': patching transition incomplete after 3 tries (the last at 1.816000 s); "
        "blocking tasks:",
        "  klpemu_sleeper:3 is sleeping on function klpemu_test_sleep"]
    assert any(line.startswith("      klpemu_test_sleep+0x") and line.endswith(f" [{TARGET}]")
               for line in report)


def test_klpemu_run_blocking_json(tmp_path: Path, capsys) -> None:
    script = tmp_path / "blocked.sh"
    script.write_text(SCRIPT)
    assert main(["run", str(script), "--cpus", "1", "--blocking", "--json"]) == 0
    blocking = json.loads(capsys.readouterr().out)["blocking"]
    assert {k: blocking[k] for k in ("patch", "target", "tries", "last_try_ns")} == {
        "patch": LP, "target": "patched", "tries": 3, "last_try_ns": 1_816_000_000}
    [sleeper] = blocking["tasks"]
    assert (sleeper["comm"], sleeper["reason"], sleeper["detail"]) == (
        "klpemu_sleeper", "is sleeping on function", "klpemu_test_sleep")
    assert "klpemu_test_sleep" in functions(sleeper["stack"])


def test_klpemu_run_blocking_without_a_transition(tmp_path: Path, capsys) -> None:
    script = tmp_path / "quiet.sh"
    script.write_text("cat /proc/cmdline\n")
    assert main(["run", str(script), "--cpus", "1", "--blocking"]) == 0
    assert capsys.readouterr().out.endswith("\n--- blocking tasks ---\nlivepatch: no transition in progress\n")


def test_an_unreliable_stack_blocks_with_the_unwinders_reason() -> None:
    """The old frame-pointer rule refuses the interrupt frame the ORC rule walks through."""
    m = boot(1)
    m.walker.rule = "frame-pointer"
    start(m, "spinner=2")
    m.run(1.0)
    t = transition(m)
    pid = task(m, "klpemu_spinner").pid
    assert [str(b) for b in t.blocking] == [
        f"klpemu_spinner:{pid} has an unreliable stack: kernel-mode pt_regs on the stack (frame-pointer rule)"]
    assert t.blocking[0].reason is SwitchResult.UNRELIABLE
    m.walker.rule = "orc"
    wait_done(m)
    assert klp_lines(m) == PATCHING + PATCHED
