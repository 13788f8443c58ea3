"""The shell's lists compiled once per process: a Sequence, its and-or
lists and their pipelines become closures `run(sh, fds) -> status` (kept
per node by memo.ByNode), so that a loop's or a function's body, run many
times, decides once what kind each of its parts is. Shell.run_sequence
runs a Sequence's closure; the commands themselves are Shell.run_simple's
and Shell.run_command's.

What a pipeline does around its command is bash's: its status is $?,
`!` inverts it, `set -e` stops the script on a failure not exempted (a
condition, all of an && || list but its last, a negated pipeline), and at
the script's top level a pipeline that starts with a simple command is a
Step of the result.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from klpemu.scenario.memo import ByNode
from klpemu.scenario.nodes import AndOr, Item, Pipeline, Sequence, Simple, Subshell
from klpemu.scenario.process import ExitSignal, Fds
from klpemu.scenario.result import Step

if TYPE_CHECKING:
    from klpemu.scenario.interp import Shell

Run = Callable[["Shell", Fds], int]


def _sequence(seq: Sequence) -> Run:
    runs = tuple(_item(item) for item in seq.items)
    if len(runs) == 1:
        return runs[0]

    def sequence(sh: "Shell", fds: Fds) -> int:
        status = 0
        for run in runs:
            status = run(sh, fds)
        return status
    return sequence


compiled_sequence: ByNode[Sequence, Run] = ByNode(_sequence)


def _item(item: Item) -> Run:
    node = item.command
    if item.background:
        return lambda sh, fds: sh.run_background(node, fds)
    return _and_or(node)


def _and_or(node: AndOr) -> Run:
    """first (&& or ||) next …: each pipeline but the last is exempt from set -e."""
    if not node.rest:
        return _pipeline(node.first, last=True)
    first = _pipeline(node.first, last=False)
    n = len(node.rest)
    rest = tuple((op == "&&", k == n - 1, _pipeline(pipe, last=k == n - 1)) for k, (op, pipe) in enumerate(node.rest))

    def and_or(sh: "Shell", fds: Fds) -> int:
        sh.ignore_errexit += 1
        try:
            status = first(sh, fds)
        finally:
            sh.ignore_errexit -= 1
        for on_success, is_last, run in rest:
            if on_success != (status == 0):
                continue
            if is_last:
                status = run(sh, fds)
            else:
                sh.ignore_errexit += 1
                try:
                    status = run(sh, fds)
                finally:
                    sh.ignore_errexit -= 1
        return status
    return and_or


def _pipeline(pipe: Pipeline, last: bool) -> Run:
    """A pipeline, its step (at the script's top level) and `set -e`."""
    commands = pipe.commands
    first = commands[0]
    simple = len(commands) == 1 and type(first) is Simple
    single = len(commands) == 1
    negate = pipe.negate
    steps = type(first) is Simple
    stops = len(commands) > 1 or isinstance(first, (Simple, Subshell))   # what set -e stops on
    line = pipe.line

    def pipeline(sh: "Shell", fds: Fds) -> int:
        exempt = not last or negate or sh.ignore_errexit > 0
        if negate:
            sh.ignore_errexit += 1
        step: Step | None = None
        mark = len(sh.result.streams)
        if steps and sh.depth == 0 and sh.subshells == 0:
            step = Step("", line)
            sh._step_verb = None
        try:
            if simple:
                status = sh.run_simple(first, fds)          # type: ignore[arg-type]
            elif single:
                status = sh.run_command(first, fds)
            else:
                status = sh._run_stages(pipe, fds)
        except ExitSignal as sig:
            if step is not None:
                sh._record(step, pipe, sig.status, exempt=False, mark=mark, exiting=True)
            raise
        finally:
            if negate:
                sh.ignore_errexit -= 1
        if negate:
            status = int(status == 0)
        sh.last_status = status
        if step is not None:
            sh._record(step, pipe, status, exempt, mark)
        if status and not exempt and stops and "e" in sh.options:
            raise ExitSignal(status)
        return status
    return pipeline
