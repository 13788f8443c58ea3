"""What one schedule of a scenario did, reduced to what an exploration
counts: its class, the key it is grouped by within the class, the virtual
time each patching transition took, and what blocked the transitions'
tries."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from emu import GuestHang, Machine
from emu.faults.oops import Oops
from klp.core import core_of
from klpemu.scenario import ScenarioResult

PASS, CHECK_RESULT, FAILED, OOPS, HANG, STALLED, ERROR = (
    "pass", "check_result", "failed", "oops", "hang", "stalled", "error")
CLASSES = (PASS, CHECK_RESULT, FAILED, OOPS, HANG, STALLED, ERROR)
_NUMBER = re.compile(r"\b0x[0-9a-f]+\b|\b\d+(\.\d+)?\b")
_ENABLING = re.compile(r"livepatch: '(.+)': starting patching transition$")
_COMPLETE = re.compile(r"livepatch: '(.+)': patching complete$")
_RIP = re.compile(r"^RIP: [0-9a-f]{4}:([^+\s]+)")


@dataclass(frozen=True)
class Outcome:
    kind: str                                   # one of CLASSES
    key: str                                    # what runs of this kind are grouped by
    detail: str = ""                            # the first run's words for it (a diff, an oops)
    transitions_ns: tuple[int, ...] = ()        # start -> "patching complete" of each patching transition
    blocked_on: tuple[tuple[str, int], ...] = field(default=())   # blocker -> failed tries, sorted
    virtual_ns: int = 0
    dmesg_sha256: str = ""                      # of the kernel log with timestamps: the run's bytes
    rounds: int = 0                             # run-loop rounds under the schedule (PCT's steps)


def normalise(text: str) -> str:
    """A key that ignores the numbers a schedule changes (pids, addresses, times)."""
    return _NUMBER.sub("#", text)


def check_result_diff(output: str) -> str | None:
    """The diff a failed check_result printed (its -/+ lines), if any."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("--- expected"):
            diff = []
            for body in lines[i + 1:]:
                if not body.strip():
                    break
                if body[:1] in "-+" and not body.startswith(("+++", "---")):
                    diff.append(body)
            return "\n".join(diff)
    return None


def faulting_function(machine: Machine, oops: Oops) -> str:
    """The function the oops's RIP was in, as the report named it when it was
    written (the module may be gone by the end of the run)."""
    for line in oops.lines:
        m = _RIP.match(line)
        if m:
            return m[1]
    return machine.symbolize(oops.pc).split("+")[0]


def transition_times(machine: Machine) -> tuple[int, ...]:
    """Virtual ns from each "starting patching transition" to its "patching complete"."""
    started: dict[str, int] = {}
    times = []
    for record in machine.dmesg_log.records():
        m = _ENABLING.search(record.text)
        if m:
            started[m[1]] = record.timestamp_ns
            continue
        m = _COMPLETE.search(record.text)
        if m and m[1] in started:
            times.append(record.timestamp_ns - started.pop(m[1]))
    return tuple(times)


def classify(machine: Machine, output: str, result: ScenarioResult | None,
             error: BaseException | None) -> Outcome:
    """The outcome of a run that gave `result` (None if it ended by `error`)."""
    core = core_of(machine)
    blocked = tuple(sorted(core.transition.blocked_on.items())) if core else ()
    common = {"transitions_ns": transition_times(machine), "blocked_on": blocked, "virtual_ns": machine.clock_ns,
              "dmesg_sha256": hashlib.sha256(machine.dmesg().encode()).hexdigest()}
    kernel_oopses = [o for o in machine.oopses if not o.user_fault]
    if kernel_oopses:
        oops = kernel_oopses[0]
        where = faulting_function(machine, oops)
        reason = normalise(oops.fatal or oops.lines[0])
        resumes = core.resume_watch.mismatches if core and core.resume_watch else []
        if resumes:             # the oops follows a resume in the other copy of a stack switcher
            return Outcome(OOPS, f"switch_to/RIP resume path: {normalise(resumes[0])}; then {where}: {reason}",
                           "\n".join([*resumes, *oops.lines]), **common)
        return Outcome(OOPS, f"{where}: {reason}", "\n".join(oops.lines), **common)
    hang = error if isinstance(error, GuestHang) else next(iter(machine.hung_task.hangs), None)
    if hang is not None:        # a shell command hung, whether or not the script went on
        return Outcome(HANG, normalise(str(hang)), hang.report, **common)
    if error is not None:
        return Outcome(ERROR, normalise(f"{type(error).__name__}: {error}"), str(error), **common)
    assert result is not None
    if not result.ok:
        diff = check_result_diff(output)
        if diff is not None:
            return Outcome(CHECK_RESULT, normalise(diff), diff, **common)
        message = result.failures[-1] if result.failures else f"exit {result.exit_status}"
        return Outcome(FAILED, normalise(message), message, **common)
    if core is not None and core.transition.patch is not None:
        blockers = sorted({b.blocker for b in core.transition.blocking})
        key = f"'{core.transition.patch.name}' blocked by " + (", ".join(blockers) or "nothing yet")
        return Outcome(STALLED, key, core.transition.report(), **common)
    return Outcome(PASS, "", **common)


def count_blockers(outcomes: list[Outcome]) -> Counter[str]:
    """For each blocker, in how many runs it blocked a try."""
    return Counter(name for o in outcomes for name, _ in o.blocked_on)
