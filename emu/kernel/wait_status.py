"""A dead task's exit code, as the kernel keeps it in task_struct.exit_code
and wait(2) returns it (include/uapi/linux/wait.h's encoding): exit(n) is
(n & 0xff) << 8, a death by a signal is the signal number in bits 0-6 (0x80:
a core was dumped). The HC_TASK_EXIT hypercall hands the host this word."""
from __future__ import annotations


def wifsignaled(status: int) -> bool:
    """WIFSIGNALED for a dead task (the guest stops no task, so 0x7f, a stop, never comes)."""
    return status & 0x7F != 0


def wtermsig(status: int) -> int | None:
    """WTERMSIG for a death by a signal: the signal number; None for an exit."""
    return status & 0x7F if wifsignaled(status) else None


def wexitstatus(status: int) -> int | None:
    """WEXITSTATUS for a task that called exit(): its status 0-255; None for a signal."""
    return None if wifsignaled(status) else (status >> 8) & 0xFF
