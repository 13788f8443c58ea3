"""The kernel log as dmesg(1) shows it, and sysctl's keys and messages
(procps-ng): what the selftests' helpers read and what the shell's dmesg
and sysctl commands print.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu import Machine

SYSCTL_ROOT = "/proc/sys/"


class Syslog:
    """The kernel log since the last `dmesg -C`, one formatted line per
    record (`[    1.234567] text`, or the text alone)."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.cleared = 0                    # records before this one were cleared

    def records(self):
        return self.machine.dmesg_log.records()[self.cleared:]

    def lines(self, *, timestamps: bool = True) -> list[str]:
        if timestamps:
            return self.machine.dmesg_log.formatted(self.cleared)
        return [r.text for r in self.records()]

    def clear(self) -> None:
        self.cleared = len(self.machine.dmesg_log.records())


def sysctl_path(key: str) -> str:
    """kernel.ftrace_enabled -> /proc/sys/kernel/ftrace_enabled (`/` works as `.`)."""
    return SYSCTL_ROOT + key.replace(".", "/")


def sysctl_key(path: str) -> str:
    return path.removeprefix(SYSCTL_ROOT).replace("/", ".")


def sysctl_read_error(key: str, err: int) -> str:
    return f"sysctl: cannot stat {sysctl_path(key)}: {os.strerror(err)}"


def sysctl_write_error(key: str, err: int) -> str:
    """procps-ng's message for a refused write (the key in dotted form)."""
    if err == 2:
        return f"sysctl: cannot stat {sysctl_path(key)}: {os.strerror(err)}"
    if err in (1, 13, 30):
        return f'sysctl: permission denied on key "{key}"'
    return f'sysctl: setting key "{key}": {os.strerror(err)}'
