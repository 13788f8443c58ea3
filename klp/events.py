"""The transition's event log: what the consistency model did, and when.

Off by default. Transition.record_events() turns it on; the core then
appends one KlpEvent per decision of the transition (never per patched
call): the patch's phases, each task's patch_state changes, each failed
klp_try_switch_task with its reason, signals, force and reversal, stamped
with the machine's virtual clock. A task the guest switched itself (at the
exit to user mode, in cond_resched()) is seen at the next pass over the
tasks, so its "switch" event carries `seen: true` and the time it was seen.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# kinds
PATCH = "patch"          # state: enabling, disabling, initializing, start, complete, canceling
TASK_STATE = "task"      # a task's patch_state changed to `state` (unpatched, patched, idle)
TRY_FAILED = "try"       # klp_try_switch_task failed: reason, detail
SIGNAL = "signal"        # klp_send_signals faked a signal to the task
FORCE = "force"
REVERSE = "reverse"
KINDS = (PATCH, TASK_STATE, TRY_FAILED, SIGNAL, FORCE, REVERSE)


@dataclass(frozen=True)
class KlpEvent:
    t_ns: int
    kind: str
    patch: str
    state: str = ""          # PATCH: the phase; TASK_STATE: the new patch_state; PATCH start: the target
    pid: int | None = None
    comm: str = ""
    reason: str = ""         # TRY_FAILED: "is running", "has an unreliable stack", "is sleeping on function"
    detail: str = ""         # TRY_FAILED: the function, the CPU or the unwinder's reason
    seen: bool = False       # TASK_STATE: switched by the guest, noticed at a later pass

    def to_json(self) -> dict[str, object]:
        """Only the fields the event has (an empty text, no pid, not seen: left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != "" and v is not False}


@dataclass
class EventLog:
    events: list[KlpEvent] = field(default_factory=list)
    # the last patch_state recorded for each task, by its task_struct's address
    # (the idle tasks share pid 0), to see the guest's own switches
    known: dict[int, str] = field(default_factory=dict)

    def add(self, event: KlpEvent) -> None:
        self.events.append(event)

    def task_state(self, t_ns: int, patch: str, task: int, pid: int, comm: str, state: str,
                   seen: bool = False) -> None:
        """Record a patch_state change of the task at address `task`, once:
        the state already known for it is no event."""
        if self.known.get(task) == state:
            return
        self.known[task] = state
        self.add(KlpEvent(t_ns, TASK_STATE, patch, state=state, pid=pid, comm=comm, seen=seen))

    def to_json(self) -> list[dict[str, object]]:
        return [e.to_json() for e in self.events]
