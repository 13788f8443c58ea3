"""One error hierarchy for the machine: every failure the host sees is an EmuError."""
from __future__ import annotations


class EmuError(Exception):
    """Root of every error raised by emu/."""


class ImageError(EmuError):
    """A kernel, user or module image is malformed or unusable."""


class GuestFault(EmuError):
    """The guest faulted where no recovery exists (the oops text is in .report)."""

    def __init__(self, message: str, *, pc: int, address: int | None = None,
                 report: str = "") -> None:
        super().__init__(message)
        self.pc = pc
        self.address = address
        self.report = report


class BadGuestAddress(EmuError):
    """The host touched guest memory at an address the guest has not mapped.

    Raised by the guarded accessors (emu.arch.memory.AddressSpace) when the
    host reads or writes on the guest's behalf; the hypercall layer turns it
    into an oops of the calling task, as the kernel faults on a bad pointer.
    """

    def __init__(self, address: int, size: int, access: str) -> None:
        super().__init__(f"virtual address {address:#x} (+{size:#x}) is not mapped")
        self.address = address
        self.size = size
        self.access = access       # "read" or "write"


class GuestHang(EmuError):
    """The watchdog stopped a guest that no longer makes progress."""

    def __init__(self, message: str, *, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class GuestTimeout(EmuError):
    """run_until's virtual time ran out before its condition held."""


class GuestIdle(GuestTimeout):
    """run_until found every CPU idle with nothing pending: waiting longer
    cannot help. `left_s`: the virtual time that was still left to wait."""

    def __init__(self, message: str, left_s: float) -> None:
        super().__init__(message)
        self.left_s = left_s


class SnapshotError(EmuError):
    """A run from a snapshot did not report: the child process died, its
    result could not be pickled, or the snapshot is stale."""


class MachineCrashed(EmuError):
    """The machine panicked or hung earlier and cannot run any more."""


class GuestCallError(EmuError):
    """A Python->guest call could not be made."""


class ShellError(EmuError):
    """A file operation through the guest shell failed; .errno has the kernel's
    errno; if the shell's task died of a signal (an oops kills with SIGKILL
    or SIGSEGV, as the kernel's page_fault_oops and die do), .signal is that
    signal and .pid the task's pid; if it called exit(), .exit_status is its
    status (WEXITSTATUS) and .signal None."""

    def __init__(self, message: str, *, errno: int, signal: int | None = None, exit_status: int | None = None,
                 pid: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.signal = signal
        self.exit_status = exit_status
        self.pid = pid
