"""Runs forked from a booted session: boot once, then every schedule in a
child process that starts from the booted machine (emu.snapshot: the
same Unicorn state, copy-on-write memory) and sends its Outcome back."""
from __future__ import annotations

import dataclasses
import gc
import io
import traceback
from dataclasses import dataclass

from emu import EmuError
from emu.errors import SnapshotError
from emu.schedule import ScheduleSpec
from klp.core import Livepatch
from klp.errors import LivepatchError
from klpemu.errors import KlpemuError
from klpemu.explore.outcome import ERROR, Outcome, classify
from klpemu.session import RunConfig, ScenarioSession
from klpemu.timeline import OopsMark, oops_marks


@dataclass(frozen=True)
class Script:
    """A scenario to explore: its text and, when it came from a file, the
    file's path (its $0, and the directory its `source` lines read from)."""
    text: str
    path: str | None = None


class Zygote:
    """A booted session of one configuration, kept unused, forked per run.

    The script runs once first, on a session of its own that is then
    dropped: what a run computes once per process (parse trees, compiled
    patterns, modules imported on first use) is then the zygote's, and no
    fork pays for it again."""

    def __init__(self, config: RunConfig, script: Script) -> None:
        self.config = config
        self.script = script
        warm_up(config, script)
        self.out = io.StringIO()
        self.session = ScenarioSession(config, self.out)
        self.snapshot = self.session.machine.snapshot()

    def run(self, schedule: ScheduleSpec) -> Outcome:
        """The outcome of the script under `schedule`, in a child process."""
        try:
            return self.snapshot.run(lambda _: run_session(self.session, self.out, self.script, schedule))
        except SnapshotError as exc:
            return Outcome(ERROR, "the run's process did not report", str(exc))
        except Exception:                             # a bug of the explorer's: its traceback, from the child
            return Outcome(ERROR, "the explorer failed", traceback.format_exc())


def warm_up(config: RunConfig, script: Script) -> None:
    """Run SCRIPT once in this process on a throwaway session (its outcome,
    whatever it is, does not matter)."""
    out = io.StringIO()
    session = ScenarioSession(config, out)
    run_session(session, out, script, ScheduleSpec("random", 0))
    del session
    gc.collect()                                      # its Unicorn and RAM, before the zygote forks


def run_session(session: ScenarioSession, out: io.StringIO, script: Script, schedule: ScheduleSpec) -> Outcome:
    """One run on a fresh (or freshly forked) session, classified."""
    stats = session.machine.runloop.stats
    start = stats.rounds
    try:
        result = session.run(script.text, schedule, script=script.path)
    except Exception as exc:                          # a hang, a crash, a bad script: all outcomes
        outcome = classify(session.machine, out.getvalue(), None, exc)
    else:
        outcome = classify(session.machine, out.getvalue(), result, None)
    return dataclasses.replace(outcome, rounds=stats.rounds - start)


def run_events(config: RunConfig, script: Script,
               schedule: ScheduleSpec) -> tuple[list[dict[str, object]], int, list[OopsMark]]:
    """One run, in this process, with the transition's event log on: its
    events (as `klpemu run --json` has them), the virtual time it ended and
    its oopses."""
    session = ScenarioSession(config, io.StringIO())
    events = Livepatch.attach(session.machine).transition.record_events()
    try:
        session.run(script.text, schedule, script=script.path)
    except (EmuError, LivepatchError, KlpemuError):  # a hang, a crash, a bad script: the events so far
        pass
    return events.to_json(), session.machine.clock_ns, oops_marks(session.machine.oopses)
