"""Driving a guest shell task: each operation is genuine syscalls in a user task.

The emulator writes a command into the shell's mailbox (user memory), rings
the doorbell interrupt, and runs the machine until the shell reports done.
The layout mirrors `struct mailbox` in fixtures/user/user.c.
"""
from __future__ import annotations

import os
import struct
from typing import Callable

from emu.errors import ShellError
from emu.kernel.program import Program
from emu.kernel.tasks import TaskView, find_task

RunUntil = Callable[..., None]      # RunLoop.run_until(predicate, timeout_s=, what=)

OP_CAT, OP_WRITE, OP_SYSCALL, OP_SPAWN = 1, 2, 3, 4
# What a user task runs (user.c's enum user_mode): getpid forever, or nanosleep forever.
MODE_GETPID_LOOP, MODE_SLEEPER = 1, 2
SEQ, DONE_SEQ, OP, STATUS, ARGS, DATA_LEN, OUT_LEN = 0, 8, 16, 24, 32, 80, 88
PATH, DATA, OUT = 96, 96 + 256, 96 + 256 + 4096
PATH_MAX, DATA_MAX, OUT_MAX = 256, 4096, 16384
CAT_MAX = 16 << 20                 # the most cat() reads of one file
TASK_INTERRUPTIBLE = 1


class Shell:
    def __init__(self, prog: Program, mailbox: int, *, run_until: RunUntil, ring_doorbell: Callable[[], None],
                 dead_tasks: set[int], pid: int = 1) -> None:
        self.prog = prog
        self.mem = prog.mem
        self.mailbox = mailbox
        self.pid = pid
        self._run_until = run_until
        self._ring_doorbell = ring_doorbell
        self._dead_tasks = dead_tasks

    def _u64(self, off: int) -> int:
        return self.mem.read_u64(self.mailbox + off)

    def _s64(self, off: int) -> int:
        v = self._u64(off)
        return v - (1 << 64) if v >> 63 else v

    def task(self) -> TaskView | None:
        return find_task(self.prog, self.pid)

    def is_idle(self) -> bool:
        """The shell waits for a command: its last one is done and it sleeps."""
        task = self.task()
        return (task is not None and self._u64(SEQ) == self._u64(DONE_SEQ)
                and task.state == TASK_INTERRUPTIBLE and not task.on_cpu)

    def _command(self, op: int, *, path: str = "", data: bytes = b"", args: tuple[int, ...] = (),
                 timeout_s: float = 60.0) -> int:
        return self._wait(self._post(op, path=path, data=data, args=args), timeout_s)

    def _post(self, op: int, *, path: str = "", data: bytes = b"", args: tuple[int, ...] = ()) -> int:
        """Hand the shell a command and ring; its sequence number."""
        mem = self.mem
        raw_path = path.encode()
        if len(raw_path) >= PATH_MAX:
            raise ShellError(f"path too long: {path}", errno=36)
        if len(data) > DATA_MAX:
            raise ShellError(f"at most {DATA_MAX} bytes per write", errno=27)
        task = self.task()
        if task is None:
            raise ShellError(f"shell pid {self.pid} is gone", errno=3)
        seq = self._u64(SEQ) + 1
        words = [a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (6 - len(args))
        mem.write(self.mailbox + OP, struct.pack("<QQ6Q", op, 0, *words))
        mem.write_u64(self.mailbox + DATA_LEN, len(data))
        mem.write(self.mailbox + PATH, raw_path + b"\0")
        mem.write(self.mailbox + DATA, data)
        mem.write_u64(self.mailbox + SEQ, seq)
        self._ring_doorbell()
        return seq

    def _wait(self, seq: int, timeout_s: float) -> int:
        task = self.task()
        if task is None:
            raise ShellError(f"shell pid {self.pid} is gone", errno=3)
        address, dead = task.address, self._dead_tasks
        self._run_until(lambda: self._u64(DONE_SEQ) == seq or address in dead,
                        timeout_s=timeout_s, what=f"the shell (pid {self.pid}) to finish")
        if address in dead:
            raise ShellError(f"shell pid {self.pid} died during the command (see dmesg)", errno=4)
        return self._s64(STATUS)

    def put_string(self, text: str) -> int:
        """Place a string in the mailbox's data buffer; its user address."""
        raw = text.encode() + b"\0"
        if len(raw) > DATA_MAX:
            raise ShellError(f"string too long for the shell ({len(raw)} bytes)", errno=7)
        self.mem.write(self.mailbox + DATA, raw)
        return self.mailbox + DATA

    def check(self, status: int, what: str) -> int:
        """A syscall's status, or ShellError for -errno."""
        if status < 0:
            raise self._fail(what, status)
        return status

    @staticmethod
    def _fail(what: str, status: int) -> ShellError:
        return ShellError(f"{what}: {os.strerror(-status)}", errno=-status)

    def cat(self, path: str) -> str:
        """The whole file: a file larger than the mailbox comes in pieces."""
        data = b""
        while True:
            status = self._command(OP_CAT, path=path, args=(len(data),))
            if status < 0:
                raise self._fail(f"cat: {path}", status)
            n = self._u64(OUT_LEN)
            data += self.mem.read(self.mailbox + OUT, n)
            if n < OUT_MAX:
                return data.decode("utf-8", "replace")
            if len(data) >= CAT_MAX:
                raise ShellError(f"cat: {path}: larger than {CAT_MAX >> 20} MiB", errno=27)

    def cat_background(self, path: str) -> None:
        """`cat PATH &`: the shell starts reading while the caller goes on
        running the machine; cat_result() waits for it."""
        self._post(OP_CAT, path=path)

    def cat_result(self, path: str, timeout_s: float = 60.0) -> str:
        status = self._wait(self._u64(SEQ), timeout_s)
        if status < 0:
            raise self._fail(f"cat: {path}", status)
        return self.mem.read(self.mailbox + OUT, self._u64(OUT_LEN)).decode("utf-8", "replace")

    def write(self, path: str, data: str) -> int:
        status = self._command(OP_WRITE, path=path, data=data.encode())
        if status < 0:
            raise self._fail(f"write error: {path}", status)
        return status

    def syscall(self, nr: int, *args: int) -> int:
        """A raw syscall from this shell; the kernel's return value (maybe -errno)."""
        return self._command(OP_SYSCALL, args=(nr, *args))

    def spawn(self, mode: int, name: str, arg: int = 0) -> int:
        status = self._command(OP_SPAWN, path=name, args=(mode, arg))
        if status < 0:
            raise self._fail(f"spawn {name}", status)
        return status
