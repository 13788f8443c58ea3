"""The consistency model (kernel/livepatch/transition.c).

Each task has a patch_state and TIF_PATCH_PENDING in guest memory. A task
switches to the target state at the exit to user mode, at the end of the
idle loop, in cond_resched(), or here when its stack is checked clean
(klp_try_switch_task). The retry runs from the guest's transition work,
about once a second of virtual time, with fake signals every 15th retry.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from emu.tasks import TIF_PATCH_PENDING, TaskView

from .objects import KlpFunc, KlpPatch, KlpState

if TYPE_CHECKING:
    from emu.guestcall import ServiceContext

    from .core import Livepatch

SIGNALS_EVERY = 15


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
    detail: str              # the function it sleeps on, or the unwinder's reason
    stack: tuple[str, ...]


class Transition:
    def __init__(self, core: "Livepatch") -> None:
        self.core = core
        self.machine = core.machine
        self.patch: KlpPatch | None = None
        self.target = KlpState.IDLE
        self.signals_cnt = 0
        self.blocking: list[BlockingTask] = []
        self._target_addr = self.machine.symbol_address("klp_target_state")
        self._sched_hook = self.machine.symbol_address("klp_sched_try_switch_enabled")

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
        m = task.machine
        addr = task.address + m.offsets["TASK_flags_ti"]
        flags = m.mem.read_u64(addr)
        bit = 1 << TIF_PATCH_PENDING
        m.mem.write_u64(addr, flags | bit if on else flags & ~bit)

    @staticmethod
    def _set_patch_state(task: TaskView, state: int) -> None:
        m = task.machine
        m.mem.write(task.address + m.offsets["TASK_patch_state"], state.to_bytes(4, "little", signed=True))

    def _log(self, text: str) -> None:
        self.core.log(text)

    # ------------------------------------------------------------ phases
    def init(self, patch: KlpPatch, state: KlpState) -> None:
        """klp_init_transition."""
        self.patch = patch
        self._set_target(state)
        self._log(f"'{patch.name}': initializing {self._word(state)} transition")
        initial = KlpState.UNPATCHED if state == KlpState.PATCHED else KlpState.PATCHED
        for task in self._tasks():
            self._set_patch_state(task, int(initial))
        for _, func in patch.funcs():
            func.transition = True
            self.core.mirror_func(func)
        self.core.dispatch.sync_all()

    def start(self) -> None:
        """klp_start_transition."""
        patch = self.patch
        assert patch is not None
        self._log(f"'{patch.name}': starting {self._word(self.target)} transition")
        for task in self._tasks():
            if task.patch_state != int(self.target):
                self._set_pending(task, True)
        self._set_sched_hook(True)
        self.signals_cnt = 0

    def try_complete(self, ctx: "ServiceContext") -> bool:
        """klp_try_complete_transition: True when the transition completed."""
        patch = self.patch
        assert patch is not None
        blocking = []
        for task in self._tasks():
            result = self.try_switch_task(ctx, task)
            if result is not None:
                blocking.append(result)
                if task.is_idle and self.machine.running_on(task) is not None:
                    ctx.call("wake_up_if_idle", task.cpu)
        self.blocking = blocking
        if blocking:
            if self.signals_cnt and not self.signals_cnt % SIGNALS_EVERY:
                self.send_signals(ctx)
            self.signals_cnt += 1
            ctx.call("klp_schedule_transition_work")
            return False
        self._set_sched_hook(False)
        self.complete(ctx)
        if not patch.enabled:
            self.core.free_patch(ctx, patch)
        elif patch.replace:
            self.core.free_replaced_patches(ctx, patch)
        return True

    def try_switch_task(self, ctx: "ServiceContext", task: TaskView) -> BlockingTask | None:
        """klp_try_switch_task: None if the task is (now) in the target state."""
        if task.patch_state == int(self.target):
            return None
        current = ctx.task
        running = self.machine.running_on(task)
        if running is not None and task.address != current:
            return self._blocked(task, SwitchResult.RUNNING, "")
        trace = self.machine.walker.trace(task)
        if not trace.reliable:
            return self._blocked(task, SwitchResult.UNRELIABLE, trace.reason or "")
        func = self.stack_hit(trace.ips)
        if func is not None:
            return self._blocked(task, SwitchResult.SLEEPING, func.old_name)
        self._set_pending(task, False)
        self._set_patch_state(task, int(self.target))
        return None

    def _blocked(self, task: TaskView, why: SwitchResult, detail: str) -> BlockingTask:
        stack = tuple(self.machine.walker.format(self.machine.walker.trace(task, reliable=False)))
        return BlockingTask(task.pid, task.comm, why, detail, stack)

    def stack_hit(self, ips: tuple[int, ...]) -> KlpFunc | None:
        """klp_check_stack: the first checked func that has an address on the stack."""
        for start, end, func in self.check_ranges():
            if any(start <= ip < end for ip in ips):
                return func
        return None

    def check_ranges(self) -> list[tuple[int, int, KlpFunc]]:
        patch = self.patch
        assert patch is not None
        ranges = []
        for obj, func in patch.funcs():
            if not obj.patched:
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
        for task in self._tasks():
            if task.ti_flags & (1 << TIF_PATCH_PENDING) and not task.is_idle:
                ctx.call("klp_send_signal", task.address)

    def complete(self, ctx: "ServiceContext") -> None:
        """klp_complete_transition."""
        patch, target = self.patch, self.target
        assert patch is not None
        self._log(f"'{patch.name}': completing {self._word(target)} transition")
        if patch.replace and target == KlpState.PATCHED:
            self.core.unpatch_replaced_patches(patch)
            self.core.discard_nops(patch)
        if target == KlpState.UNPATCHED:
            self.core.unpatch_objects(patch)
        for _, func in patch.funcs():
            func.transition = False
            self.core.mirror_func(func)
        self.core.dispatch.sync_all()
        for task in self._tasks():
            self._set_pending(task, False)
            self._set_patch_state(task, int(KlpState.IDLE))
        for obj in patch.objs:
            if not obj.loaded:
                continue
            if target == KlpState.PATCHED:
                self.core.post_patch(ctx, obj)
            else:
                self.core.post_unpatch(ctx, obj)
        self._log(f"'{patch.name}': {self._word(target)} complete")
        self._set_target(KlpState.IDLE)
        self.patch = None
        self.blocking = []

    def cancel(self, ctx: "ServiceContext") -> None:
        """klp_cancel_transition (enable failed before the transition started)."""
        assert self.patch is not None
        self._log(f"'{self.patch.name}': canceling patching transition, going to unpatch")
        self._set_target(KlpState.UNPATCHED)
        self.complete(ctx)

    def reverse(self) -> None:
        """klp_reverse_transition."""
        patch = self.patch
        assert patch is not None
        word = "patching to unpatching" if self.target == KlpState.PATCHED else "unpatching to patching"
        self._log(f"'{patch.name}': reversing transition from {word}")
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
        self._log("forcing remaining tasks to the patched state")
        for task in self._tasks():
            if task.ti_flags & (1 << TIF_PATCH_PENDING):
                self._set_pending(task, False)
                self._set_patch_state(task, int(self.target))
        if self.target == KlpState.UNPATCHED:
            patch.forced = True
        elif patch.replace:
            for other in self.core.patches:
                if other is not patch:
                    other.forced = True

    @staticmethod
    def _word(state: KlpState) -> str:
        return "patching" if state == KlpState.PATCHED else "unpatching"
