"""The commands a scenario can name: the verb registry VERBS (filled by the
`verb` decorator in shell_verbs.py and functions_sh.py, looked up by the
parser and, when a command runs, by the runner), the guest's user programs
that start with `PROGRAM &`, and the checks the verbs share (how a command
may run, how many arguments it takes).
"""
from __future__ import annotations

from typing import Any, Callable

from emu.kernel.shell import MODE_GETPID_LOOP
from klpemu.scenario.result import ScenarioError

# The guest's user programs a scenario can start with `PROGRAM &`: the
# mode of the user program (fixtures/user/user.c) each one runs.
PROGRAMS = {
    "test_klp-call_getpid": MODE_GETPID_LOOP,   # getpid in a loop, until a signal ends it
}

Verb = Callable[[Any, list[str], int], None]        # (the ScenarioRunner, argv, line number)
VERBS: dict[str, Verb] = {}
REDIRECTABLE = {"echo", "cat", "grep", "dmesg"}


def verb(name: str) -> Callable[[Verb], Verb]:
    def register(fn: Verb) -> Verb:
        VERBS[name] = fn
        return fn
    return register


def program_name(path: str) -> str | None:
    """The guest program PATH names (`./test_klp-call_getpid`), if any."""
    name = path.rsplit("/", 1)[-1]
    return name if name in PROGRAMS else None


def check_background(head: str | None, background: bool, lineno: int) -> None:
    """Programs run with `&`, and only programs do."""
    if background and (head is None or program_name(head) is None):
        raise ScenarioError(lineno, f"only the guest's programs ({', '.join(PROGRAMS)}) can run "
                                    f"in the background with '&'{f', not {head!r}' if head else ''}")
    if not background and head is not None and program_name(head) is not None:
        raise ScenarioError(lineno, f"{head} runs until a signal ends it: start it in the background "
                                    f"({head} &) and end it with kill")


def _need(args: list[str], lineno: int, usage: str, at_least: int, at_most: int | None = None) -> None:
    if len(args) < at_least or (at_most is not None and len(args) > at_most):
        raise ScenarioError(lineno, f"usage: {usage}")
