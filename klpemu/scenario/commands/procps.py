"""dmesg (util-linux) and sysctl (procps-ng), and pkill: the kernel log
since the last `dmesg -C`, and the /proc/sys keys, in the tools' words.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from klpemu.scenario.fs import FsError
from klpemu.scenario.programs import pkill_command
from klpemu.selftest.procps import sysctl_path, sysctl_read_error, sysctl_write_error

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc


def dmesg(proc: "Proc") -> int:
    """dmesg [-c | -C] [--notime | -t]: the log, printed, cleared or both."""
    clear = show = False
    timestamps = True
    for a in proc.args:
        if a in ("-C", "--clear"):
            clear = True
        elif a in ("-c", "--read-clear"):
            clear = show = True
        elif a in ("-t", "--notime"):
            timestamps = False
        elif a in ("-k", "--kernel", "-r", "--raw"):
            pass
        else:
            raise proc.sh.unsupported(f"dmesg {a} is not supported (only -c, -C, --notime/-t, -k)")
    syslog = proc.sh.syslog
    if show or not clear:
        lines = syslog.lines(timestamps=timestamps)
        if lines:
            proc.out("".join(line + "\n" for line in lines))
    if clear:
        syslog.clear()
    return 0


def sysctl(proc: "Proc") -> int:
    """sysctl [-n | --values] [-q] [-w] NAME[=VALUE]…"""
    values_only = quiet = False
    settings: list[str] = []
    for a in proc.args:
        if a in ("-n", "--values"):
            values_only = True
        elif a in ("-q", "--quiet"):
            quiet = True
        elif a in ("-w", "--write"):
            pass
        elif a.startswith("-"):
            raise proc.sh.unsupported(f"sysctl {a} is not supported (only -n/--values, -q, -w)")
        else:
            settings.append(a)
    if not settings:
        raise proc.sh.unsupported("sysctl without a key (listing all) is not supported")
    ns = proc.sh.ns
    status = 0
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.replace("/", ".")
        path = sysctl_path(key)
        if sep:
            if not ns.exists(path):
                proc.err(sysctl_write_error(key, 2) + "\n")
                status = 1
                continue
            try:
                ns.write(path, value + "\n", append=False)
            except FsError as exc:
                proc.err(sysctl_write_error(key, exc.errno) + "\n")
                continue
            if not quiet:
                proc.out(f"{value}\n" if values_only else f"{key} = {value}\n")
            continue
        try:
            current = ns.read(path).rstrip("\n")
        except FsError as exc:
            proc.err(sysctl_read_error(key, exc.errno) + "\n")
            status = 1
            continue
        proc.out(f"{current}\n" if values_only else f"{key} = {current}\n")
    return status


COMMANDS: dict[str, Callable[["Proc"], int]] = {"dmesg": dmesg, "sysctl": sysctl, "pkill": pkill_command}
