"""The shell commands a scenario runs as verbs: cat, echo, grep, sleep, dmesg,
insmod, rmmod, true, false, kill and exit, registered in VERBS when this
module is imported.
"""
from __future__ import annotations

import os
from pathlib import Path

from emu import ShellError
from klpemu.scenario.coreutils import echo_text
from klpemu.scenario.grep import Grep
from klpemu.scenario.kmod import insmod_error, rmmod_error
from klpemu.scenario.registry import _need, verb
from klpemu.scenario.result import ScenarioError
from klpemu.scenario.runner import ScenarioRunner, _Stop

SYS_KILL = 62
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15}


@verb("cat")
def _cat(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    if not args:
        raise ScenarioError(lineno, "cat needs a path")
    for path in args:
        try:
            r.produce(r.machine.read_file(path))
        except ShellError as exc:
            r.fail(f"cat: {path}: {os.strerror(exc.errno)}")


@verb("echo")
def _echo(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    text = echo_text(args)
    if r.redirect is None or r.redirect == "/dev/null":
        r.produce(text)
    else:
        r.echo_to(r.redirect, text)


@verb("grep")
def _grep(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    g = Grep.parse(args, lineno)
    prefix = len(g.files) > 1
    for path in g.files:
        try:
            text = r.machine.read_file(path)
        except ShellError as exc:
            r.fail(f"grep: {path}: {os.strerror(exc.errno)}")
            continue
        lines = g.lines(text)
        if not g.quiet and lines:
            r.produce("".join(f"{path}:{ln}\n" if prefix else f"{ln}\n" for ln in lines), per_line=True)


@verb("sleep")
def _sleep(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    try:
        seconds = float(args[0])
    except (IndexError, ValueError):
        raise ScenarioError(lineno, "sleep needs a number of seconds") from None
    if seconds < 0:
        raise ScenarioError(lineno, "sleep needs a non-negative number of seconds")
    r.machine.run(seconds)


@verb("dmesg")
def _dmesg(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """`dmesg` prints the log; `dmesg -C` forgets it for check_result (as the
    5.x selftests did before start_test had a canary)."""
    if args == ["-C"] or args == ["-c"]:
        if args == ["-c"]:
            r.produce(r.machine.dmesg())
        r.mark = len(r.machine.dmesg_lines())
        r.canary = None
    elif not args:
        r.produce(r.machine.dmesg(), per_line=True)
    else:
        raise ScenarioError(lineno, "dmesg takes no option but -C or -c")


@verb("insmod")
def _insmod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "insmod MODULE.ko [PARAM=VALUE …]", 1)
    target = args[0]
    path = Path(target)
    if not path.is_file():
        path = r.find_module(Path(target).name)
    try:
        r.machine.insmod(str(path), " ".join(args[1:]))
    except ShellError as exc:
        r.fail(insmod_error(target, exc.errno))


@verb("rmmod")
def _rmmod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "rmmod MODULE", 1, 1)
    try:
        r.machine.rmmod(args[0])
    except ShellError as exc:
        r.fail(rmmod_error(args[0], exc.errno))


@verb("true")
def _true(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    pass


@verb("false")
def _false(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.fail("false", show=False)


def _signal(spec: str, lineno: int) -> int:
    name = spec.upper().removeprefix("SIG")
    if spec.isdigit() and 0 < int(spec) < 64:
        return int(spec)
    if name in SIGNALS:
        return SIGNALS[name]
    raise ScenarioError(lineno, f"kill: {spec}: invalid signal specification "
                                f"(use 1-63 or {', '.join(SIGNALS)})")


@verb("kill")
def _kill(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """kill [-s SIGNAL | -SIGNAL] PID…: kill(2) from the shell, SIGTERM by default."""
    usage = "kill [-s SIGNAL | -SIGNAL] PID…"
    sig = SIGNALS["TERM"]
    if args[:1] == ["-s"]:
        _need(args, lineno, usage, 3)
        sig, args = _signal(args[1], lineno), args[2:]
    elif args and args[0].startswith("-") and args[0] != "--" and not args[0][1:].startswith("-"):
        sig, args = _signal(args[0][1:], lineno), args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    _need(args, lineno, usage, 1)
    shells = {shell.pid for shell in r.machine.shells}
    for arg in args:
        if not arg.isdigit():
            r.fail(f"kill: {arg}: arguments must be process or job IDs")
        elif int(arg) in shells:
            r.fail(f"kill: ({arg}) - the scenario's own shell cannot be killed")
        else:
            err = r.machine.shell.syscall(SYS_KILL, int(arg), sig)
            if err < 0:
                r.fail(f"kill: ({arg}) - {os.strerror(-err)}")


@verb("exit")
def _exit(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "exit [N]", 0, 1)
    try:
        status = int(args[0]) if args else 0
    except ValueError:
        raise ScenarioError(lineno, f"exit needs a number, not {args[0]!r}") from None
    r.result.exit_status = status
    if status:
        r.fail(f"exit {status}", show=False)
    raise _Stop
