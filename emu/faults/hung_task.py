"""A shell command that never finishes (kernel/hung_task.c's job, done by the
host when it waits for the shell).

A task asleep in D state gets khungtaskd's report ("INFO: task sh:1 blocked
for more than 10 seconds." and sched_show_task's lines); like khungtaskd
(hung_task_panic=0) the machine only reports it: nothing can kill a D-state
task. A task that stays runnable is no hung task in the kernel's sense (and
under PREEMPT no soft lockup either), so it gets the host's own report,
"klpemu: guest hang", naming the task, its CPU, RIP and stack; then it is
killed as a fault kills it (make_task_dead), and init's shell respawns.
A task asleep in S state (an interruptible wait nothing ends) gets the same
report with its stack, then the SIGKILL a user at the terminal would send:
its wait returns, it exits, and init's shell respawns. A runaway is killed
only at a point where it is in no wait (emu.faults.kill_point).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

from emu.arch.cpu import Cpu
from emu.errors import EmuError, GuestHang, GuestIdle, GuestTimeout
from emu.faults.kill_point import KillPoints
from emu.faults.oops import KERNEL_RELEASE, SIGKILL, call_trace, kill_task, register_lines
from emu.kernel.printk import KernelLog
from emu.kernel.program import Program
from emu.kernel.tasks import TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, TaskView, running_on
from emu.unwind import FrameKind, StackTrace
from emu.unwind.stack_walker import StackWalker

KILL_WAIT_S = 1.0        # virtual time for a runaway to get back on a CPU, and to die


def check_hung_task_timeout(seconds: float) -> float:
    """hung_task_timeout_s: how long a shell command may run before it is a hang (> 0)."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise EmuError(f"hung_task_timeout_s must be a positive number of seconds, not {seconds!r}")
    return float(seconds)


def kernel_frames(walker: StackWalker, task: TaskView) -> list[str]:
    """The Call Trace lines of a task off its CPU (its saved context)."""
    trace = walker.trace(task, reliable=False)
    frames = walker.format(StackTrace(tuple(f for f in trace.frames if f.kind != FrameKind.USER),
                                      trace.reliable, trace.reason))
    return ["Call Trace:", " <TASK>", *(f" {f}" for f in frames), " </TASK>"]


def blocked_report(walker: StackWalker, task: TaskView, seconds: float) -> list[str]:
    """khungtaskd's report of a D-state task (check_hung_task + sched_show_task)."""
    return [f"INFO: task {task.comm}:{task.pid} blocked for more than {seconds:g} seconds.",
            f"      {task.prog.taint} {KERNEL_RELEASE} #1",
            '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
            f"task:{task.comm:<15.15} state:{task.state_letter} stack:0     pid:{task.pid:<5} "
            f"tgid:{task.pid:<5} ppid:0      flags:{task.flags:#010x}",
            *kernel_frames(walker, task)]


def asleep_report(walker: StackWalker, task: TaskView, seconds: float) -> list[str]:
    """The host's report of a task asleep interruptibly that nothing wakes."""
    return [f"klpemu: guest hang: task {task.comm}:{task.pid} asleep after {seconds:g} seconds "
            f"(state:{task.state_letter}, an interruptible wait nothing ends: sending SIGKILL)",
            *kernel_frames(walker, task)]


def runaway_report(prog: Program, walker: StackWalker, cpu: Cpu | None, task: TaskView, seconds: float,
                   killable: bool) -> list[str]:
    """The host's report of a runnable task that never returns to the shell."""
    where = f"on CPU#{cpu.index}" if cpu is not None else "on no CPU"
    why = "not blocked: no hung task, and a preemptible loop is no soft lockup" if killable else \
        "never where it may be killed (task context, preemption on, no wait on a stack that walks " \
        "reliably), so it is left running"
    head = (f"klpemu: guest hang: task {task.comm}:{task.pid} still running {where} "
            f"after {seconds:g} seconds (state:{task.state_letter}, {why})")
    if cpu is None:
        return [head, *kernel_frames(walker, task)]
    return [head, *register_lines(prog, cpu), *call_trace(walker, cpu, task)]


class HungTaskDetector:
    """What the machine does when a shell command outlives hung_task_timeout_s."""

    def __init__(self, prog: Program, walker: StackWalker, cpus: list[Cpu], log: KernelLog,
                 run: Callable[[float], None], run_until: Callable[..., None], dead_tasks: dict[int, int],
                 timeout_s: float, lockup_s: float, send_signal: Callable[[int, int], None]) -> None:
        """lockup_s: how long the watchdog may take to call a CPU stuck with
        preemption or interrupts off a soft lockup (2 * watchdog_thresh); it
        has that long to report such a task before this detector does.
        send_signal(pid, signo): kill(2) from outside the guest."""
        self.prog = prog
        self.walker = walker
        self.cpus = cpus
        self.log = log
        self._run = run
        self._run_until = run_until
        self._dead_tasks = dead_tasks
        self.timeout_s = check_hung_task_timeout(timeout_s)
        self.hangs: list[GuestHang] = []      # every hang reported, oldest first
        self._lockup_s = lockup_s
        self._send_signal = send_signal
        self._kill_points = KillPoints(prog, walker)

    def shell_hung(self, task: TaskView, seconds: float, idle_left_s: float) -> GuestHang:
        """Report the task a shell command is stuck in (killing it unless it
        is in D state); the GuestHang to raise. `idle_left_s`: every CPU went
        idle with nothing pending this long before the wait's end; the clock
        runs on (at no cost) to that end."""
        if idle_left_s > 0:
            self._run(idle_left_s)
        kill: Callable[[], None] | None = None
        if task.state & TASK_UNINTERRUPTIBLE:
            report = blocked_report(self.walker, task, seconds)
        elif task.state & TASK_INTERRUPTIBLE:
            report = asleep_report(self.walker, task, seconds)
            kill = partial(self._send_signal, task.pid, SIGKILL)
        else:
            cpu = self._at_kill_point(task)
            if cpu is not None:
                kill = partial(kill_task, self.prog, cpu, SIGKILL)
            report = runaway_report(self.prog, self.walker, cpu or running_on(self.prog, self.cpus, task), task,
                                    seconds, killable=cpu is not None)
        for line in report:
            self.log.log(line, level=3)
        if kill is not None:
            kill()
            try:
                self._run_until(lambda: task.address in self._dead_tasks, timeout_s=KILL_WAIT_S,
                                what=f"task {task.pid} to die")
            except (GuestTimeout, GuestIdle):     # a loop that ignores its signal: left as it is
                line = f"klpemu: task {task.comm}:{task.pid} is still there {KILL_WAIT_S:g} s after SIGKILL"
                self.log.log(line, level=3)
                report.append(line)
        return self._hang(report)

    def _hang(self, report: list[str]) -> GuestHang:
        hang = GuestHang(report[0], report="\n".join(report))
        self.hangs.append(hang)
        return hang

    def _at_kill_point(self, task: TaskView) -> Cpu | None:
        """Run on until the runaway is on a CPU in task context (interrupts on,
        preemption on) and in no wait, where make_task_dead may take it; None
        if it is not within lockup_s (the watchdog, if on, raises its own
        GuestHang meanwhile)."""
        def on_cpu() -> bool:
            cpu = running_on(self.prog, self.cpus, task)
            return cpu is not None and cpu.interrupts_enabled() and not cpu.in_user_mode() \
                and self.prog.mem.read_s32(self.prog.per_cpu(cpu.index, "PCPU_preempt_count")) == 0 \
                and self._kill_points.safe(cpu, task)
        try:
            self._run_until(on_cpu, timeout_s=self._lockup_s + KILL_WAIT_S, what=f"task {task.pid} to run again")
        except GuestTimeout:
            return None
        return running_on(self.prog, self.cpus, task)
