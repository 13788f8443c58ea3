"""Scheduling: timer preemption, stack switches, determinism from the seed."""
import os
import subprocess
import sys
from pathlib import Path

from emu import Machine
from emu.unwind import FrameKind

DEMO = "console=ttyS0 klpemu.demo=1"
ROOT = Path(__file__).resolve().parent.parent


def test_ticks_preempt_busy_tasks(demo_machine: Machine) -> None:
    demo_machine.run(0.5)
    by_name = {t.comm: t for t in demo_machine.tasks()}
    assert by_name["kdemo/0"].nivcsw > 0 and by_name["kdemo/1"].nivcsw > 0
    assert by_name["spin"].nivcsw > 0                 # preempted in user mode
    assert by_name["sleeper"].nvcsw > 0               # blocked in nanosleep


def test_preempted_tasks_are_caught_at_interrupt_frames(demo_machine: Machine) -> None:
    """A task preempted in the kernel sleeps with an interrupt frame on its
    stack; the reliable walk passes through it (ORC rule)."""
    seen: set[str] = set()
    for _ in range(200):
        demo_machine.run(0.002)
        for task in demo_machine.tasks():
            if demo_machine.running_on(task):
                continue
            trace = demo_machine.walker.trace(task)
            if any(f.kind == FrameKind.INTERRUPT for f in trace.frames):
                assert trace.reliable, trace.reason
                seen.add(task.comm.split("/")[0])
    assert {"kdemo", "getpid_loop"} <= seen


def test_every_sleeping_task_walks_reliably_at_many_stop_points(demo_machine: Machine) -> None:
    walks = 0
    for _ in range(300):
        demo_machine.run(0.001)
        for task in demo_machine.tasks():
            if demo_machine.running_on(task):
                continue
            trace = demo_machine.walker.trace(task)
            assert trace.reliable, f"{task}: {trace.reason}"
            last = trace.frames[-1]
            stack_end = demo_machine.symbolize(last.ip).startswith(
                ("ret_from_fork_asm", "startup_64", "secondary_startup_64"))
            if task.is_kthread:
                assert stack_end
            else:       # user-mode pt_regs end it, or it has not run yet
                assert last.kind == FrameKind.USER or stack_end
            walks += 1
    assert walks > 2000


def test_running_tasks_walk_from_live_registers(demo_machine: Machine) -> None:
    """Unreliable walks of running tasks always say why."""
    for _ in range(100):
        demo_machine.run(0.001)
        for cpu in demo_machine.cpus:
            task = next(t for t in demo_machine.tasks() if t.address == demo_machine.current_task(cpu))
            trace = demo_machine.walker.trace(task)
            assert trace.reliable or trace.reason


def _fingerprint(m: Machine) -> list[tuple[object, ...]]:
    return [(t.pid, t.comm, t.state, t.cpu, t.nvcsw, t.nivcsw) for t in m.tasks()] + \
           [(c.index, c.engine.reg("rip"), c.engine.reg("rsp")) for c in m.cpus]


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        m = Machine(cpus=2, seed=11, cmdline=DEMO).boot()
        m.run(0.3)
        m.write_file("/dev/kmsg", "mark")
        runs.append((m.dmesg(), _fingerprint(m), m.clock_ns))
    assert runs[0] == runs[1]


def test_different_seeds_interleave_differently() -> None:
    prints = set()
    for seed in (1, 2, 3):
        m = Machine(cpus=2, seed=seed, cmdline=DEMO).boot()
        m.run(0.3)
        prints.add(tuple(_fingerprint(m)))
    assert len(prints) == 3


def test_runs_are_identical_across_processes() -> None:
    """Set and dict order of strings differs between processes (hash seed)."""
    script = ("from emu import Machine\n"
              "m = Machine(cpus=2, seed=5, cmdline='console=ttyS0 klpemu.demo=1').boot()\n"
              "m.run(0.2); m.write_file('/dev/kmsg', 'x')\n"
              "print(m.dmesg()); print([(t.pid, t.nvcsw, t.nivcsw) for t in m.tasks()])\n")
    outs = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        outs.append(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                                   capture_output=True, text=True, check=True).stdout)
    assert outs[0] == outs[1] and "x" in outs[0]


def test_idle_cpus_skip_ahead_and_busy_ones_do_not(demo_machine: Machine) -> None:
    """run() lands on its target either way; what differs is how: a busy
    machine runs quantum after quantum, an idle one jumps to the next event."""
    busy, rounds = demo_machine.clock_ns, demo_machine.stats.rounds
    demo_machine.run(0.1)
    assert demo_machine.clock_ns - busy == 100_000_000
    assert demo_machine.stats.rounds - rounds > 100                 # quanta, not a jump
    idle = Machine(cpus=2, seed=0).boot()
    start, rounds = idle.clock_ns, idle.stats.rounds
    idle.run(100)
    assert idle.clock_ns - start == 100_000_000_000
    assert idle.stats.rounds - rounds < 10                          # 100 s skipped in a few rounds


def test_no_interrupt_between_the_idle_sti_and_hlt() -> None:
    """A quantum that ends between native_safe_halt's sti and hlt: the next
    one runs the hlt before taking the pending interrupt (the sti shadow);
    taken first, its wake-up would be slept through by the hlt (a shell
    left runnable on a halted CPU, seen once in test-callbacks.sh)."""
    from emu.abi import RESCHEDULE_VECTOR
    m = Machine(cpus=2, seed=0).boot()
    m.run(0.01)
    cpu, rl = m.cpus[1], m.runloop
    assert cpu.halted
    hlt = m.prog.symbol_address("native_safe_halt_resume") - 1
    cpu.halted, cpu.entering_idle = False, True
    cpu.engine.set_reg("rip", hlt)
    cpu.engine.set_reg("rflags", cpu.engine.reg("rflags") | 0x200)
    rl.raise_interrupt(1, RESCHEDULE_VECTOR)
    rl._run_quantum(cpu, 1000)
    assert cpu.halted and cpu.pending == {RESCHEDULE_VECTOR}         # halted, the interrupt still to take
    m.run(0.01)                                                    # taken from the halt: the machine goes on
    assert not cpu.pending and m.shell.syscall(39) > 0
