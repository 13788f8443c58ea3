"""The guest's user programs a script starts in the background
(`./test_klp-call_getpid &`, a user task the guest shell spawns; `$!` is its
pid), and what a shell does with processes: kill(1) and the kill and wait
builtins (kill(2) from the guest shell), pkill (by the tasks' comm).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu import ShellError
from emu.kernel.shell import MODE_GETPID_LOOP
from klpemu.scenario.killed import check_killed
from klpemu.scenario.patterns import PatternError, compile_regex

if TYPE_CHECKING:
    from klpemu.scenario.process import Fds, Proc, ShellView


@dataclass
class Job:
    """A program started with `&`."""
    pid: int
    command: str
    signal: int = 0              # the last signal the shell sent it

# The programs, and the mode of the guest's user program (fixtures/user/user.c) each one runs.
PROGRAMS = {
    "test_klp-call_getpid": MODE_GETPID_LOOP,   # getpid in a loop, until a signal ends it
}
SYS_KILL = 62
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
           "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
           "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
           "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31}
WAIT_LIMIT_S = 5.0                  # virtual seconds a signalled job has to end before `wait` gives up
TICK_S = 0.004                      # how often wait looks (a jiffy at HZ=250)


def program_name(path: str) -> str | None:
    """The guest program PATH names (`./test_klp-call_getpid`), if any."""
    name = path.rsplit("/", 1)[-1]
    return name if name in PROGRAMS else None


def is_program(path: str) -> bool:
    return program_name(path) is not None


def start_program(sh: "ShellView", argv: list[str], fds: "Fds", line: int) -> int:
    """`PROGRAM &`: a user task of the guest's user program, named PROGRAM
    (the comm the guest keeps is its first 15 characters, as on Linux)."""
    name = program_name(argv[0])
    if name is None:
        raise sh.unsupported(f"only the guest's programs ({', '.join(PROGRAMS)}) can run in the background "
                             f"with '&', not {argv[0]!r}")
    if len(argv) > 1:
        raise sh.unsupported(f"{argv[0]} takes no arguments")
    try:
        pid = sh.machine.shell.spawn(PROGRAMS[name], name)
    except ShellError as exc:
        check_killed(exc)
        sh.shell_error(f"{argv[0]}: {os.strerror(exc.errno)}", fds)
        return 126
    sh.last_bg = str(pid)
    sh.jobs[pid] = Job(pid, name)
    return 0


def signal_number(spec: str) -> int | None:
    if spec.isdigit():
        return int(spec) if 0 <= int(spec) < 65 else None
    return SIGNALS.get(spec.upper().removeprefix("SIG"))


def _alive(sh: "ShellView", pid: int) -> bool:
    return any(t.pid == pid for t in sh.machine.tasks())


def send_signal(sh: "ShellView", pid: int, sig: int) -> int:
    """kill(2) from the guest shell: 0 or -errno."""
    if pid in {s.pid for s in sh.machine.shells}:
        return -1               # EPERM: the script's own shell is what runs the script
    err = sh.machine.shell.syscall(SYS_KILL, pid, sig)
    if err == 0 and pid in sh.jobs:
        sh.jobs[pid].signal = sig
    return err


def kill_builtin(proc: "Proc") -> int:
    """kill [-s SIGNAL | -n NUM | -SIGNAL] PID… ; kill -l [SIGNAL]."""
    sh = proc.sh
    args = list(proc.args)
    usage = "usage: kill [-s sigspec | -n signum | -sigspec] pid | jobspec ... or kill -l [sigspec]"
    if not args:
        proc.err(f"kill: {usage}\n")
        return 2
    if args[0] == "-l":
        if len(args) == 1:
            proc.out(" ".join(f"{n}) SIG{name}" for name, n in SIGNALS.items()) + "\n")
            return 0
        for a in args[1:]:
            if a.isdigit():
                name = next((k for k, v in SIGNALS.items() if v == int(a) % 128), None)
                if name is None:
                    return proc.builtin_error(f"{a}: invalid signal specification")
                proc.out(name + "\n")
            elif signal_number(a) is not None:
                proc.out(f"{signal_number(a)}\n")
            else:
                return proc.builtin_error(f"{a}: invalid signal specification")
        return 0
    sig = SIGNALS["TERM"]
    if args[0] in ("-s", "-n"):
        if len(args) < 2:
            return proc.builtin_error(f"{args[0]}: option requires an argument", 2)
        number = signal_number(args[1])
        if number is None:
            return proc.builtin_error(f"{args[1]}: invalid signal specification")
        sig, args = number, args[2:]
    elif args[0].startswith("-") and args[0] != "--" and len(args[0]) > 1:
        number = signal_number(args[0][1:])
        if number is None:
            return proc.builtin_error(f"{args[0][1:]}: invalid signal specification")
        sig, args = number, args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        proc.err(f"kill: {usage}\n")
        return 2
    status = 0
    for arg in args:
        target = arg
        if arg.startswith("%"):
            job = _job(sh, arg)
            if job is None:
                status = proc.builtin_error(f"{arg}: no such job")
                continue
            target = str(job)
        if not re.fullmatch(r"-?\d+", target):
            status = proc.builtin_error(f"{arg}: arguments must be process or job IDs")
            continue
        err = send_signal(sh, int(target), sig)
        if err == -1:
            status = proc.builtin_error(f"({target}) - Operation not permitted (the script's own shell)")
        elif err < 0:
            status = proc.builtin_error(f"({target}) - {os.strerror(-err)}")
    return status


def _job(sh: "ShellView", spec: str) -> int | None:
    """%N, %%, %+ : a job's pid (jobs numbered in the order they started)."""
    pids = list(sh.jobs)
    if spec in ("%%", "%+", "%"):
        return pids[-1] if pids else None
    if spec == "%-":
        return pids[-2] if len(pids) > 1 else None
    if spec[1:].isdigit() and 0 < int(spec[1:]) <= len(pids):
        return pids[int(spec[1:]) - 1]
    return None


def wait_builtin(proc: "Proc") -> int:
    """wait [PID…]: until the jobs end (in virtual time); 128+signal if a
    signal ended them."""
    sh = proc.sh
    args = [a for a in proc.args if a != "--"]
    if any(a.startswith("-") for a in args):
        raise sh.unsupported(f"wait {' '.join(args)}: options are not supported")
    targets: list[int] = []
    status = 0
    for a in args:
        pid = _job(sh, a) if a.startswith("%") else int(a) if a.isdigit() else None
        if pid is None or pid not in sh.jobs:
            proc.builtin_error(f"pid {a} is not a child of this shell" if a.isdigit()
                               else f"{a}: no such job" if a.startswith("%")
                               else f"`{a}': not a pid or valid job spec")
            status = 127
            continue
        targets.append(pid)
    if not args:
        targets = list(sh.jobs)
    for pid in targets:
        job = sh.jobs[pid]
        if _alive(sh, pid) and not job.signal:
            # the programs end only on a signal: bash would wait for ever
            raise sh.unsupported(f"wait: job {pid} ({job.command}) runs until a signal ends it, and none was sent")
        deadline = sh.machine.clock_ns + int(WAIT_LIMIT_S * 1e9)
        while _alive(sh, pid):
            if sh.machine.clock_ns >= deadline:
                raise sh.unsupported(f"wait: job {pid} ({job.command}) did not end in {WAIT_LIMIT_S:g} s "
                                     f"after signal {job.signal}")
            sh.machine.run(TICK_S)
        job = sh.jobs.pop(pid)
        status = 128 + job.signal if job.signal else 0
    return status if args else 0


def pkill_command(proc: "Proc") -> int:
    """pkill [-SIGNAL | --signal SIGNAL] [-x] [-f] PATTERN: signal the guest's
    tasks whose name matches (an extended regex); 1 when none does."""
    sh = proc.sh
    args = list(proc.args)
    sig, exact = SIGNALS["TERM"], False
    pattern: str | None = None
    while args:
        a = args.pop(0)
        if a in ("--signal", "-s") and args:
            number = signal_number(args.pop(0))
            if number is None:
                return proc.error("invalid signal", 2)
            sig = number
        elif a == "-x" or a == "--exact":
            exact = True
        elif a in ("-f", "--full"):
            pass                                  # a task's command line is its name here
        elif a.startswith("-") and len(a) > 1 and signal_number(a[1:]) is not None:
            sig = signal_number(a[1:]) or sig
        elif a.startswith("-") and len(a) > 1:
            return proc.error(f"invalid option -- '{a[1:]}'", 2)
        elif pattern is None:
            pattern = a
        else:
            return proc.error("only one pattern can be provided", 2)
    if pattern is None:
        return proc.error("no matching criteria specified", 2)
    try:
        rx = compile_regex(pattern, True)
    except PatternError as exc:
        return proc.error(f"cannot compile regular expression '{pattern}': {exc}", 2)
    shells = {s.pid for s in sh.machine.shells}
    hit = False
    for task in sh.machine.tasks():
        if task.pid in shells or task.pid == 0:
            continue
        if (rx.fullmatch(task.comm) if exact else rx.search(task.comm)) and send_signal(sh, task.pid, sig) == 0:
            hit = True
    return 0 if hit else 1
