"""A command whose guest task died of a signal (an oops killed it, as the
kernel kills the task that faulted): bash's notice of a job a signal ended,
and its status, 128 + the signal."""
from __future__ import annotations

import signal

from emu import ShellError

LONGEST_SIGNAL_DESC = 24          # bash 5.2 (jobs.h): the width of a job's status column


class CommandKilled(Exception):
    def __init__(self, signo: int, pid: int | None) -> None:
        super().__init__(f"killed by signal {signo}")
        self.signal = signo
        self.pid = pid

    @property
    def status(self) -> int:
        return 128 + self.signal

    def notice(self, argv: list[str]) -> str:
        """What follows bash's `SCRIPT: line N: ` (pretty_print_job, JLIST_NONINTERACTIVE):
        the pid, the signal's description padded to its column, the command.
        bash prints the command as written; this is its expanded words."""
        desc = signal.strsignal(self.signal) or f"Signal {self.signal}"
        return f"{self.pid or 0:5d} {desc:<{LONGEST_SIGNAL_DESC}}{' '.join(argv)}"


def check_killed(exc: ShellError) -> None:
    """CommandKilled for a ShellError of a shell task that a signal killed."""
    if exc.signal is not None:
        raise CommandKilled(exc.signal, exc.pid) from None
