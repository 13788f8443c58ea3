"""The consistency model (kernel/livepatch/transition.c).

Each task has a patch_state and TIF_PATCH_PENDING in guest memory. A task
switches to the target state at the exit to user mode, at the end of the
idle loop, in cond_resched(), or here when its stack is checked clean
(klp_try_switch_task). The retry runs from the guest's transition work,
about once a second of virtual time, with fake signals every 15th retry.
"""
from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from emu.kernel.tasks import TaskView
from emu.unwind import StackTrace
from klp import events as ev
from klp.events import EventLog, KlpEvent
from klp.objects import KlpFunc, KlpObject, KlpPatch, KlpState
from klp.ops import Dispatch
from klp.profiles import Profile

if TYPE_CHECKING:
    from emu import Machine
    from emu.kernel.guestcall import ServiceContext
    from emu.unwind.stack_walker import StackWalker

SIGNALS_EVERY = 15
PR_WARN = 4                 # KERN_WARNING

# The pr_debug() sites of kernel/livepatch/transition.c (function, line of
# v6.6, format): they print only when dynamic debug enables them, as
# functions.sh's set_dynamic_debug does ("file kernel/livepatch/* +p").
TRANSITION_C = "kernel/livepatch/transition.c"
PREEMPT_FUNCS = "livepatch: the transition's functions"     # emu.preempt points
DEBUG_SITES = {
    "completing": ("klp_complete_transition", 97, "'%s': completing %s transition\n"),
    "canceling": ("klp_cancel_transition", 170, "'%s': canceling patching transition, going to unpatch\n"),
    "running": ("klp_try_switch_task", 345, "%s: %s:%d is running\n"),
    "unreliable": ("klp_try_switch_task", 349, "%s: %s:%d has an unreliable stack\n"),
    "sleeping": ("klp_try_switch_task", 353, "%s: %s:%d is sleeping on function %s\n"),
    "unknown": ("klp_try_switch_task", 358, "%s: Unknown error code (%d) when trying to switch %s:%d\n"),
    "initializing": ("klp_init_transition", 591, "'%s': initializing %s transition\n"),
    "reversing": ("klp_reverse_transition", 653, "'%s': reversing transition from %s\n"),
}


class SwitchResult(Enum):
    SWITCHED = "switched"
    RUNNING = "is running"
    UNRELIABLE = "has an unreliable stack"
    SLEEPING = "is sleeping on function"


@dataclass(frozen=True)
class BlockingTask:
    """Why a task has not switched yet (the diagnostics the kernel lacks)."""
    pid: int
    comm: str
    reason: SwitchResult
    detail: str              # the function it sleeps on, its CPU, or the unwinder's reason
    trace: StackTrace = field(repr=False)       # as walked at the try
    walker: "StackWalker" = field(repr=False, compare=False)

    @cached_property
    def stack(self) -> tuple[str, ...]:
        """Symbolised, innermost first (best effort when unreliable). Formatted
        on first use: a pass over thousands of blocked tasks need not pay it."""
        return tuple(self.walker.format(self.trace))

    @property
    def blocker(self) -> str:
        """What held the task back, without the task: the function it sleeps
        on, `running`, or `unreliable stack: <reason>`."""
        if self.reason == SwitchResult.SLEEPING:
            return self.detail
        if self.reason == SwitchResult.RUNNING:
            return "running"
        return f"unreliable stack: {self.detail}"

    def __str__(self) -> str:
        """klp_try_switch_task's debug line (without __func__), completed by the detail."""
        if self.reason == SwitchResult.RUNNING:
            return f"{self.comm}:{self.pid} is running on CPU {self.detail}"
        if self.reason == SwitchResult.UNRELIABLE:
            return f"{self.comm}:{self.pid} has an unreliable stack: {self.detail}"
        return f"{self.comm}:{self.pid} is sleeping on function {self.detail}"


class CheckRanges:
    """check_ranges() indexed by address: the first func (in patch order)
    whose range holds one of a stack's addresses, in O(frames log funcs)
    rather than O(frames * funcs): a pass over 10,000 tasks against 100
    funcs took seconds."""

    def __init__(self, ranges: list[tuple[int, int, KlpFunc]]) -> None:
        # the ranges cut into disjoint segments [points[k], points[k+1]), each
        # with the first func (in patch order) whose range covers it
        self._points = sorted({p for start, end, _ in ranges for p in (start, end)})
        self._first: list[tuple[int, KlpFunc] | None] = [None] * len(self._points)
        for order, (start, end, func) in enumerate(ranges):
            for k in range(bisect_left(self._points, start), bisect_left(self._points, end)):
                if self._first[k] is None:
                    self._first[k] = (order, func)

    def first_hit(self, ips: tuple[int, ...]) -> KlpFunc | None:
        best: tuple[int, KlpFunc] | None = None
        points, first = self._points, self._first
        if not points:
            return None
        for ip in ips:
            hit = first[bisect_right(points, ip) - 1] if ip >= points[0] else None
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return best[1] if best else None


class KlpCore(Protocol):
    """What the transition calls in the core (core.c and patch.c in the
    kernel; klp.core.Livepatch here)."""
    machine: "Machine"
    profile: Profile
    dispatch: Dispatch
    patches: list[KlpPatch]

    def log(self, text: str, level: int = ...) -> None: ...
    def pr_debug(self, site: str, text: str) -> None: ...
    def mirror_func(self, func: KlpFunc) -> None: ...
    def mirror_patch(self, patch: KlpPatch) -> None: ...
    def post_patch(self, ctx: "ServiceContext", obj: KlpObject) -> None: ...
    def post_unpatch(self, ctx: "ServiceContext", obj: KlpObject) -> None: ...
    def unpatch_objects(self, patch: KlpPatch) -> None: ...
    def unpatch_replaced_patches(self, new: KlpPatch) -> None: ...
    def discard_nops(self, patch: KlpPatch) -> None: ...
    def free_patch(self, patch: KlpPatch) -> None: ...
    def free_replaced_patches(self, new: KlpPatch) -> None: ...


class Transition:
    def __init__(self, core: KlpCore) -> None:
        self.core = core
        self.machine = core.machine
        self.patch: KlpPatch | None = None
        self.target = KlpState.IDLE
        self.signals_cnt = 0                       # klp_signals_cnt: failed tries since the start
        self.blocking: list[BlockingTask] = []     # who failed the last try
        self.blocked_on: Counter[str] = Counter()  # every failed try's blockers (BlockingTask.blocker)
        self.last_try_ns = 0
        self._target_addr = self.machine.symbol_address("klp_target_state")
        self._sched_hook = self.machine.symbol_address("klp_sched_try_switch_enabled")
        self.events: EventLog | None = None        # off unless record_events() asked for it

    def record_events(self) -> EventLog:
        """Turn on the event log (klp/events.py) and return it."""
        if self.events is None:
            self.events = EventLog()
        return self.events

    def note(self, kind: str, patch: KlpPatch, **what: object) -> None:
        """Append an event, if anybody asked for them."""
        if self.events is not None:
            self.events.add(KlpEvent(self.machine.clock_ns, kind, patch.name, **what))  # type: ignore[arg-type]

    def _note_task(self, task: TaskView, state: int, seen: bool = False) -> None:
        if self.events is not None and self.patch is not None:
            self.events.task_state(self.machine.clock_ns, self.patch.name, task.address, task.pid, task.comm,
                                   KlpState(state).name.lower(), seen)

    @property
    def immediate(self) -> bool:
        """4.12-4.15: the transition patch skips per-task switching."""
        return self.patch is not None and self.patch.immediate

    # ------------------------------------------------------------ guest state
    def _set_target(self, state: KlpState) -> None:
        self.target = state
        self.machine.mem.write(self._target_addr, int(state).to_bytes(4, "little", signed=True))

    def _set_sched_hook(self, on: bool) -> None:
        self.machine.mem.write(self._sched_hook, int(on).to_bytes(4, "little"))

    def _tasks(self) -> list[TaskView]:
        return self.machine.tasks()

    @staticmethod
    def _set_pending(task: TaskView, on: bool) -> None:
        task.patch_pending = on

    @staticmethod
    def _set_patch_state(task: TaskView, state: int) -> None:
        task.patch_state = state

    def _log(self, text: str) -> None:
        self.core.log(text)

    # ------------------------------------------------------------ phases
    def init(self, patch: KlpPatch, state: KlpState) -> None:
        """klp_init_transition."""
        self.patch = patch
        # the target is set even for an immediate patch (the fix of 4.12's review)
        self._set_target(state)
        self.core.pr_debug("initializing", f"'{patch.name}': initializing {self._word(state)} transition")
        self.note(ev.PATCH, patch, state="initializing")
        # a targeted schedule may preempt a task entering a function of the transition
        self.machine.preempt.set(PREEMPT_FUNCS, {a for _, f in patch.funcs() for a in (f.old_func, f.new_func) if a})
        if self.immediate:
            return
        initial = KlpState.UNPATCHED if state == KlpState.PATCHED else KlpState.PATCHED
        for task in self._tasks():
            self._set_patch_state(task, int(initial))
            self._note_task(task, int(initial))
        for _, func in patch.funcs():
            func.transition = True
            self.core.mirror_func(func)
        self.core.dispatch.sync_all()

    def start(self) -> None:
        """klp_start_transition."""
        patch = self.patch
        assert patch is not None
        self._log(f"'{patch.name}': starting {self._word(self.target)} transition")
        self.note(ev.PATCH, patch, state="start", detail=self.target.name.lower())
        if self.immediate:
            return
        for task in self._tasks():
            if task.patch_state != int(self.target):
                self._set_pending(task, True)
        self._set_sched_hook(self.core.profile.sched_try_switch)
        self.signals_cnt = 0
        self.blocking = []

    def try_complete(self, ctx: "ServiceContext") -> bool:
        """klp_try_complete_transition: True when the transition completed."""
        patch = self.patch
        assert patch is not None
        blocking = [] if self.immediate else self.check_tasks(ctx)
        self.blocking = blocking
        self.blocked_on.update(b.blocker for b in blocking)
        self.last_try_ns = self.machine.clock_ns
        if blocking:
            if self.core.profile.auto_signals and self.signals_cnt and not self.signals_cnt % SIGNALS_EVERY:
                self.send_signals(ctx)
            self.signals_cnt += 1
            ctx.call("klp_schedule_transition_work")
            return False
        self._set_sched_hook(False)
        self.complete(ctx)
        if self.core.profile.register_api:
            return True               # a disabled patch stays registered until unregistered
        if not patch.enabled:
            self.core.free_patch(patch)
        elif patch.replace:
            self.core.free_replaced_patches(patch)
        return True

    def check_tasks(self, ctx: "ServiceContext") -> list[BlockingTask]:
        """The pass of klp_try_complete_transition over every task: try to
        switch each, and return those that could not switch."""
        blocking = []
        ranges = CheckRanges(self.check_ranges())
        # the pass makes many short-lived objects (frames) and no cycles: the
        # cyclic collector would rescan the whole heap several times over
        collecting = gc.isenabled()
        gc.disable()
        try:
            for task in self._tasks():
                result = self.try_switch_task(ctx, task, ranges)
                if result is not None:
                    blocking.append(result)
                    if task.is_idle and self.machine.running_on(task) is not None:
                        ctx.call("wake_up_if_idle", task.cpu)
        finally:
            if collecting:
                gc.enable()
        return blocking

    def try_switch_task(self, ctx: "ServiceContext", task: TaskView,
                        ranges: CheckRanges | None = None) -> BlockingTask | None:
        """klp_try_switch_task: None if the task is (now) in the target state.
        `ranges`: check_ranges(), when the caller checks many tasks."""
        if task.patch_state == int(self.target):
            self._note_task(task, int(self.target), seen=True)
            return None
        current = ctx.task
        running = self.machine.running_on(task)
        if running is not None and task.address != current:
            return self._blocked(task, SwitchResult.RUNNING, str(running.index))
        trace = self.machine.walker.trace(task)
        if not trace.reliable:
            return self._blocked(task, SwitchResult.UNRELIABLE, trace.reason or "")
        func = self.stack_hit(trace.ips, ranges)
        if func is not None:
            return self._blocked(task, SwitchResult.SLEEPING, func.old_name, trace)
        self._set_pending(task, False)
        self._set_patch_state(task, int(self.target))
        self._note_task(task, int(self.target))
        return None

    def _blocked(self, task: TaskView, why: SwitchResult, detail: str,
                 trace: StackTrace | None = None) -> BlockingTask:
        """`trace`: the task's reliable trace, if it has one (what a best-effort walk would find)."""
        what = {SwitchResult.RUNNING: ("running", "is running"),
                SwitchResult.UNRELIABLE: ("unreliable", "has an unreliable stack"),
                SwitchResult.SLEEPING: ("sleeping", f"is sleeping on function {detail}")}[why]
        self.core.pr_debug(what[0], f"klp_try_switch_task: {task.comm}:{task.pid} {what[1]}")
        if self.patch is not None:
            self.note(ev.TRY_FAILED, self.patch, pid=task.pid, comm=task.comm, reason=why.value, detail=detail)
        walker = self.machine.walker
        return BlockingTask(task.pid, task.comm, why, detail, trace or walker.trace(task, reliable=False), walker)

    def report(self) -> str:
        """Who blocked the last try of the running transition, and why, with stacks."""
        patch = self.patch
        if patch is None:
            return "livepatch: no transition in progress\n"
        out = [f"livepatch: '{patch.name}': {self._word(self.target)} transition incomplete after "
               f"{self.signals_cnt} tries (the last at {self.last_try_ns / 1e9:.6f} s); blocking tasks:"]
        for b in self.blocking:
            out.append(f"  {b}")
            out.extend(f"      {frame}" for frame in b.stack)
        return "\n".join(out) + "\n"

    def stack_hit(self, ips: tuple[int, ...], ranges: CheckRanges | None = None) -> KlpFunc | None:
        """klp_check_stack: the first checked func that has an address on the stack."""
        if ranges is None:
            ranges = CheckRanges(self.check_ranges())
        return ranges.first_hit(ips)

    def check_ranges(self) -> list[tuple[int, int, KlpFunc]]:
        patch = self.patch
        assert patch is not None
        ranges = []
        for obj, func in patch.funcs():
            if not obj.patched or func.immediate:
                continue
            if self.target == KlpState.UNPATCHED:
                start, size = func.new_func, func.new_size
            else:
                ops = self.core.dispatch.find_ops(func.old_func)
                stack = ops.func_stack if ops else [func]
                i = stack.index(func) if func in stack else 0
                if i + 1 < len(stack):
                    prev = stack[i + 1]
                    start, size = prev.new_func, prev.new_size
                else:
                    start, size = func.old_func, func.old_size
            ranges.append((start, start + size, func))
        return ranges

    def send_signals(self, ctx: "ServiceContext") -> None:
        """klp_send_signals: wake kthreads, fake-signal everybody else."""
        if self.signals_cnt == SIGNALS_EVERY:
            self._log("signaling remaining tasks")
        self._signal_tasks(ctx)

    def signal(self, ctx: "ServiceContext") -> None:
        """klp_send_signals of 4.15-5.0, on a write to `signal`: a notice every time."""
        self._log("signaling remaining tasks")
        self._signal_tasks(ctx)

    def _signal_tasks(self, ctx: "ServiceContext") -> None:
        for task in self._tasks():
            if task.patch_pending and not task.is_idle:
                if self.patch is not None:
                    self.note(ev.SIGNAL, self.patch, pid=task.pid, comm=task.comm)
                ctx.call("klp_send_signal", task.address)

    def complete(self, ctx: "ServiceContext") -> None:
        """klp_complete_transition."""
        patch, target = self.patch, self.target
        assert patch is not None
        self.core.pr_debug("completing", f"'{patch.name}': completing {self._word(target)} transition")
        if patch.replace and target == KlpState.PATCHED:
            self.core.unpatch_replaced_patches(patch)
            self.core.discard_nops(patch)
        if target == KlpState.UNPATCHED:
            self.core.unpatch_objects(patch)
        if not self.immediate:
            for _, func in patch.funcs():
                func.transition = False
                self.core.mirror_func(func)
            self.core.dispatch.sync_all()
            for task in self._tasks():
                self._set_pending(task, False)
                self._set_patch_state(task, int(KlpState.IDLE))
                self._note_task(task, int(KlpState.IDLE))
        for obj in patch.objs:
            if not obj.loaded:
                continue
            if target == KlpState.PATCHED:
                self.core.post_patch(ctx, obj)
            else:
                self.core.post_unpatch(ctx, obj)
        self._log(f"'{patch.name}': {self._word(target)} complete")
        self.note(ev.PATCH, patch, state="complete", detail=target.name.lower())
        # 4.12-5.0: the reference of __klp_enable_patch, kept for good by an
        # immediate (or forced) patch, or one with an immediate func
        if (self.core.profile.register_api and target == KlpState.UNPATCHED and not patch.forced
                and not self.immediate and not any(f.immediate for _, f in patch.funcs())):
            self.machine.modules.put(patch.module)
        self._set_target(KlpState.IDLE)
        self.machine.preempt.set(PREEMPT_FUNCS, set())
        self.patch = None
        self.blocking = []

    def cancel(self, ctx: "ServiceContext") -> None:
        """klp_cancel_transition (enable failed before the transition started)."""
        assert self.patch is not None
        self.core.pr_debug("canceling", f"'{self.patch.name}': canceling patching transition, going to unpatch")
        self.note(ev.PATCH, self.patch, state="canceling")
        self._set_target(KlpState.UNPATCHED)
        self.complete(ctx)

    def reverse(self) -> None:
        """klp_reverse_transition."""
        patch = self.patch
        assert patch is not None
        word = "patching to unpatching" if self.target == KlpState.PATCHED else "unpatching to patching"
        self.core.pr_debug("reversing", f"'{patch.name}': reversing transition from {word}")
        self.note(ev.REVERSE, patch, detail=word)
        for task in self._tasks():
            self._set_pending(task, False)
        patch.enabled = not patch.enabled
        self.core.mirror_patch(patch)
        self._set_target(KlpState.UNPATCHED if self.target == KlpState.PATCHED else KlpState.PATCHED)
        self.start()

    def force(self) -> None:
        """klp_force_transition."""
        patch = self.patch
        assert patch is not None
        self.core.log("forcing remaining tasks to the patched state", PR_WARN)
        self.note(ev.FORCE, patch, detail=self.target.name.lower())
        for task in self._tasks():
            if task.patch_pending:
                self._set_pending(task, False)
                self._set_patch_state(task, int(self.target))
                self._note_task(task, int(self.target))
        if self.target == KlpState.UNPATCHED:
            forced = [patch]
        elif patch.replace:
            forced = [other for other in self.core.patches if other is not patch]
        else:
            forced = []
        for other in forced:
            other.forced = True
            self.core.mirror_patch(other)

    @staticmethod
    def _word(state: KlpState) -> str:
        return "patching" if state == KlpState.PATCHED else "unpatching"
