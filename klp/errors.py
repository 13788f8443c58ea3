"""One error hierarchy for the livepatch core: every failure it raises is a
LivepatchError."""
from __future__ import annotations

import errno as _errno


class LivepatchError(Exception):
    """Root of every error raised by klp/ (a bad choice of backend or
    profile, a core attached twice with other settings, …)."""


class KlpError(LivepatchError):
    """A failure inside the core with the kernel's errno (positive), as the
    kernel's functions return it; the caller turns it into -errno."""

    def __init__(self, err: int) -> None:
        super().__init__(_errno.errorcode.get(err, str(err)))
        self.errno = err
