"""The progress line of a long `klpemu run` on a terminal's stderr.

After PROGRESS_AFTER_S of wall time, and every PROGRESS_EVERY_S after, a
SIGALRM handler rewrites one stderr line: virtual time, wall time and the
script line being run. The handler runs in the main thread between Python
bytecodes (machine hooks included), so it reads the machine and the shell
as they are; it never writes to stdout. Only when stderr is a TTY: a
redirected stderr gets nothing.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

PROGRESS_AFTER_S = 2.0
PROGRESS_EVERY_S = 0.5


class Progress:
    """Context manager: the progress line while the block runs."""

    def __init__(self, virtual_ns: Callable[[], int], where: Callable[[], str],
                 stream: TextIO | None = None) -> None:
        self.virtual_ns, self.where = virtual_ns, where
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = 0.0
        self.shown = False
        self._saved: object = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            self.started = time.monotonic()
            self._saved = signal.signal(signal.SIGALRM, self._tick)
            signal.setitimer(signal.ITIMER_REAL, PROGRESS_AFTER_S, PROGRESS_EVERY_S)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._saved)  # type: ignore[arg-type]
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def line(self) -> str:
        wall = time.monotonic() - self.started
        return f"klpemu: virtual {self.virtual_ns() / 1e9:.3f}s  wall {wall:.1f}s  {self.where()}"

    def _tick(self, signum: int, frame: object) -> None:
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
        except OSError:
            width = 79
        self.stream.write("\r\x1b[K" + self.line()[:width])
        self.stream.flush()
        self.shown = True
