"""Driving a guest shell task: each operation is genuine syscalls in a user task.

The emulator writes a command into the shell's mailbox (user memory), rings
the doorbell interrupt, and runs the machine until the shell reports done.
`struct mailbox` and the commands are fixtures/user/user.c's, read from the
user image's offsets table (Mailbox).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable

from emu.abi import NR, O_APPEND, O_CREAT, O_TRUNC, O_WRONLY
from emu.errors import GuestHang, GuestIdle, GuestTimeout, ImageError, ShellError
from emu.kernel.program import Program
from emu.kernel.tasks import TASK_INTERRUPTIBLE, TaskView, find_task
from emu.kernel.wait_status import wexitstatus, wtermsig

RunUntil = Callable[..., None]      # RunLoop.run_until(predicate, timeout_s=, what=)
OnHang = Callable[[TaskView, float, float], GuestHang]  # HungTaskDetector.shell_hung(task, seconds, idle_left_s)

# What a user task runs (user.c's enum user_mode): getpid forever, or
# nanosleep forever; Mailbox checks them against the image.
MODE_GETPID_LOOP, MODE_SLEEPER = 1, 2
CAT_MAX = 16 << 20                 # the most cat() reads of one file
# what a shell's `>` and `>>` open a file with; a file's open handler sees
# them (tracefs `trace` is cleared by an O_TRUNC open)
REDIRECT = O_WRONLY | O_CREAT | O_TRUNC           # `>`
REDIRECT_APPEND = O_WRONLY | O_CREAT | O_APPEND   # `>>`
_U64 = struct.Struct("<Q").unpack_from
_Q = struct.Struct("<Q")
_COMMAND = struct.Struct("<QQ6Q")                 # op, status, args[6]


def _raw(data: str | bytes) -> bytes:
    """What a write carries: a str's UTF-8 (undecodable bytes kept as they came)."""
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data


@dataclass(frozen=True)
class Mailbox:
    """The layout of struct mailbox and the shell's commands (user.c)."""
    seq: int
    done_seq: int
    op: int
    data_len: int
    out_len: int
    path: int
    path_max: int
    data: int
    data_max: int
    out: int
    out_max: int
    op_cat: int
    op_write: int
    op_syscall: int
    op_spawn: int

    @property
    def size(self) -> int:
        """Bytes from the start of struct mailbox to the end of its last buffer."""
        return max(self.path + self.path_max, self.data + self.data_max, self.out + self.out_max)

    @classmethod
    def from_offsets(cls, o: dict[str, int], room: int) -> "Mailbox":
        """From the user image's table; ImageError if it lacks an entry,
        disagrees with the modes this module names, or is larger than the
        ROOM bytes each shell's mailbox has."""
        try:
            box = cls(o["MB_seq"], o["MB_done_seq"], o["MB_op"], o["MB_data_len"], o["MB_out_len"],
                      o["MB_path"], o["MB_path_len"], o["MB_data"], o["MB_data_len_max"], o["MB_out"],
                      o["MB_out_len_max"], o["OP_CAT_"], o["OP_WRITE_"], o["OP_SYSCALL_"], o["OP_SPAWN_"])
            modes = (o["MODE_GETPID_LOOP_"], o["MODE_SLEEPER_"])
        except KeyError as err:
            raise ImageError(f"the user image's offsets table has no {err.args[0]}") from None
        if modes != (MODE_GETPID_LOOP, MODE_SLEEPER):
            raise ImageError(f"the user image's modes {modes} are not emu.kernel.shell's")
        if o["MB_status"] != box.op + 8 or o["MB_args"] != box.op + 16:
            raise ImageError("struct mailbox: op, status and args[6] must follow each other")
        if box.size > room:
            raise ImageError(f"struct mailbox is {box.size} bytes, more than the {room} each shell has")
        return box


class Shell:
    def __init__(self, prog: Program, layout: Mailbox, mailbox: int, *, run_until: RunUntil,
                 ring_doorbell: Callable[[], None], dead_tasks: dict[int, int], pid: int = 1,
                 hang_timeout_s: float, on_hang: OnHang,
                 respawned: Callable[[], TaskView | None] | None = None) -> None:
        """hang_timeout_s: how long a command may take before on_hang reports
        the task it is stuck in (emu.faults.hung_task).
        respawned: for init's shell, the task now serving the mailbox (the
        kernel respawns it when it dies); a background shell has none and
        stays gone."""
        self.prog = prog
        self.layout = layout
        self.mailbox = mailbox
        # the mailbox's bytes in RAM (user memory is mapped linearly): its
        # fields are read and written there, with no translation per access
        self._box = prog.mem.window(mailbox, layout.size)
        self.pid = pid
        self._run_until = run_until
        self._ring_doorbell = ring_doorbell
        self._dead_tasks = dead_tasks
        self._respawned = respawned
        self._served_pid = pid
        self.hang_timeout_s = hang_timeout_s
        self._on_hang = on_hang

    def _u64(self, off: int) -> int:
        return _U64(self._box, off)[0]

    def _put(self, off: int, data: bytes) -> None:
        self._box[off:off + len(data)] = data

    def _read(self, off: int, size: int) -> bytes:
        return bytes(self._box[off:off + size])

    def _s64(self, off: int) -> int:
        v = self._u64(off)
        return v - (1 << 64) if v >> 63 else v

    def task(self) -> TaskView | None:
        return self._serving()[0]

    def _respawning(self) -> bool:
        """init's shell died and the kernel has not named the next one yet."""
        return self._serving()[1]

    def _serving(self) -> tuple[TaskView | None, bool]:
        """The task serving the mailbox, and whether it is init's dead shell
        whose successor the kernel has not named yet (one look at both)."""
        if self._respawned is not None:
            task = self._respawned()
            if task is not None:
                if task.address not in self._dead_tasks:
                    self.pid = task.pid
                    return task, False
                return find_task(self.prog, self.pid), True
        return find_task(self.prog, self.pid), False

    def is_idle(self) -> bool:
        """The shell waits for a command: its last one is done and it sleeps."""
        task = self.task()
        return (task is not None and self._u64(self.layout.seq) == self._u64(self.layout.done_seq)
                and task.state == TASK_INTERRUPTIBLE and not task.on_cpu)

    def _command(self, op: int, *, path: str = "", data: bytes = b"", args: tuple[int, ...] = ()) -> int:
        return self._wait(*self._post(op, path=path, data=data, args=args))

    def _post(self, op: int, *, path: str = "", data: bytes = b"",
              args: tuple[int, ...] = ()) -> tuple[int, TaskView]:
        """Hand the shell a command and ring: its sequence number, and the
        task that got it."""
        raw_path = path.encode()
        if len(raw_path) >= self.layout.path_max:
            raise ShellError(f"path too long: {path}", errno=36)
        if len(data) > self.layout.data_max:
            raise ShellError(f"at most {self.layout.data_max} bytes in one write(2) from the shell", errno=27)
        task, respawning = self._serving()
        if respawning:
            # the dead shell is still in do_exit, making its successor
            self._run_until(lambda: not self._respawning(), timeout_s=5, what="init's shell to respawn")
            task = self.task()
        if task is None:
            raise ShellError(f"shell pid {self.pid} is gone", errno=3)
        if task.pid != self._served_pid:
            # a respawned shell: let it start (and drop its predecessor's
            # command) before it sees this one
            self._served_pid = task.pid
            self._run_until(self.is_idle, timeout_s=5, what=f"the shell (pid {self.pid}) to start")
            task = self.task()
            if task is None:
                raise ShellError(f"shell pid {self.pid} is gone", errno=3)
        seq = self._u64(self.layout.seq) + 1
        words = [a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (6 - len(args))
        layout = self.layout
        self._put(layout.op, _COMMAND.pack(op, 0, *words))
        self._put(layout.data_len, _Q.pack(len(data)))
        self._put(layout.path, raw_path + b"\0")
        self._put(layout.data, data)
        self._put(layout.seq, _Q.pack(seq))
        self._ring_doorbell()
        return seq, task

    def _wait(self, seq: int, task: TaskView | None = None) -> int:
        """The status of command `seq` (handed to TASK, when the caller knows
        it); GuestHang when it does not finish in time."""
        if task is None:
            task = self.task()
        if task is None:
            raise ShellError(f"shell pid {self.pid} is gone", errno=3)
        address, dead = task.address, self._dead_tasks
        seconds = self.hang_timeout_s
        try:
            self._run_until(lambda: self._u64(self.layout.done_seq) == seq or address in dead,
                            timeout_s=seconds, what=f"the shell (pid {self.pid}) to finish")
        except GuestTimeout as exc:
            raise self._on_hang(task, seconds, exc.left_s if isinstance(exc, GuestIdle) else 0.0) from None
        if address in dead:
            signal = wtermsig(dead[address])
            if signal is None:
                status = wexitstatus(dead[address])
                raise ShellError(f"shell pid {self.pid} exited with status {status} during the command", errno=4,
                                 exit_status=status, pid=self.pid)
            raise ShellError(f"shell pid {self.pid} died during the command (see dmesg)", errno=4, signal=signal,
                             pid=self.pid)
        return self._s64(self.layout.op + 8)

    def put_string(self, text: str) -> int:
        """Place a string in the mailbox's data buffer; its user address."""
        raw = text.encode() + b"\0"
        if len(raw) > self.layout.data_max:
            raise ShellError(f"string too long for the shell ({len(raw)} bytes)", errno=7)
        self._put(self.layout.data, raw)
        return self.mailbox + self.layout.data

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
            status = self._command(self.layout.op_cat, path=path, args=(len(data),))
            if status < 0:
                raise self._fail(f"cat: {path}", status)
            n = self._u64(self.layout.out_len)
            data += self._read(self.layout.out, n)
            if n < self.layout.out_max:
                return data.decode("utf-8", "replace")
            if len(data) >= CAT_MAX:
                raise ShellError(f"cat: {path}: larger than {CAT_MAX >> 20} MiB", errno=27)

    def cat_background(self, path: str) -> None:
        """`cat PATH &`: the shell starts reading while the caller goes on
        running the machine; cat_result() waits for it."""
        self._post(self.layout.op_cat, path=path)

    def cat_result(self, path: str) -> str:
        status = self._wait(self._u64(self.layout.seq))
        if status < 0:
            raise self._fail(f"cat: {path}", status)
        return self._read(self.layout.out, self._u64(self.layout.out_len)).decode("utf-8", "replace")

    def open(self, path: str, flags: int = O_WRONLY) -> int:
        """open(2) from this shell: a file descriptor or -errno."""
        return self._command(self.layout.op_syscall, path=path,
                             args=(NR["__NR_open"], self.mailbox + self.layout.path, flags))

    def write_fd(self, fd: int, data: str | bytes) -> int:
        """One write(2) of DATA (at most data_max bytes) on FD, at its file
        position: a count or -errno."""
        raw = _raw(data)
        return self._command(self.layout.op_syscall, data=raw,
                             args=(NR["__NR_write"], fd, self.mailbox + self.layout.data, len(raw)))

    def close(self, fd: int) -> int:
        """close(2): 0 or -errno."""
        return self.syscall(NR["__NR_close"], fd)

    def _write_piece(self, path: str, fd: int, piece: bytes, last: bool, flags: int,
                     open_only: bool = False) -> tuple[int, int]:
        """One write(2) of PIECE (at most data_max bytes) to FD, or to PATH
        opened with FLAGS when FD is -1 (user.c do_write): (the count or -errno,
        the descriptor the shell keeps open for the next piece, or -1 when
        it closed the file: after a failure, a call that wrote nothing, or
        the whole of the LAST piece). OPEN_ONLY: the open and the close of
        PATH, no write(2) (a `>` that writes nothing)."""
        status = self._command(self.layout.op_write, path=path, data=piece,
                               args=(fd, int(last), flags, int(open_only)))
        return status, self._s64(self.layout.op + 16)

    def write_once(self, path: str, data: str | bytes, flags: int = REDIRECT) -> int:
        """One write(2) of DATA (a str as UTF-8) on a fresh open of PATH
        with FLAGS: the count the kernel returned (a short one too), or
        ShellError. DATA is at most data_max bytes, the buffer one call
        carries."""
        status, fd = self._write_piece(path, -1, _raw(data), True, flags)
        if fd >= 0:
            self.close(fd)
        return self.check(status, f"write error: {path}")

    def write(self, path: str, data: str | bytes, flags: int = REDIRECT) -> int:
        """DATA (a str as UTF-8) written as a program's write loop writes it
        (glibc's _IO_new_file_write under echo): one open with FLAGS (`>`'s
        by default), then write(2)
        calls at the advancing file position, each given what is left (at
        most data_max bytes), a short count taken and the rest written by the
        next call, until all is written (returns the length) or a call fails
        (ShellError with its errno). A call that writes 0 ends it (stdio
        would spin for ever): the count so far. Empty DATA is an open and a
        close, no write(2)."""
        raw = _raw(data)
        what = f"write error: {path}"
        if not raw:
            return self.check(self._write_piece(path, -1, raw, True, flags, open_only=True)[0], what)
        fd, written = -1, 0
        while True:
            piece = raw[written:written + self.layout.data_max]
            n, fd = self._write_piece(path, fd, piece, written + len(piece) == len(raw), flags)
            if n < 0:
                raise self._fail(what, n)
            written += n
            if fd < 0:
                return written

    def syscall(self, nr: int, *args: int) -> int:
        """A raw syscall from this shell; the kernel's return value (maybe -errno)."""
        return self._command(self.layout.op_syscall, args=(nr, *args))

    def syscall_background(self, nr: int, *args: int) -> None:
        """A raw syscall the shell starts while the caller goes on running
        the machine (one that sleeps, say); syscall_result() waits for it."""
        self._post(self.layout.op_syscall, args=(nr, *args))

    def syscall_result(self) -> int:
        """What the syscall_background() call returned."""
        return self._wait(self._u64(self.layout.seq))

    def spawn(self, mode: int, name: str, arg: int = 0) -> int:
        status = self._command(self.layout.op_spawn, path=name, args=(mode, arg))
        if status < 0:
            raise self._fail(f"spawn {name}", status)
        return status
