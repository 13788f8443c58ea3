"""Files the emulator serves to the guest: sysfs attributes, procfs files.

The guest's open() asks here (HC_VFS_OPEN) for any path its own tables do not
have. A read returns what `show()` produced at open, as seq_file does; a
write calls `store(ctx, text)`, which runs as a continuation so that it may
call back into the guest (a livepatch's callbacks, for instance).

`text` holds the written bytes one character each (latin-1), so that what a
store parses and the count it returns (`len(text)`) are the kernel's, byte
for byte. A sysfs attribute sees what kernfs gives it: at most PAGE_SIZE
bytes of the write, and no call at all for an empty one (sysfs_kf_write
returns 0); procfs and tracefs files see the whole write.

A file may have an open handler, given the open(2) flags (tracefs `trace`
and `set_ftrace_filter` clear on an O_TRUNC open for writing, as
tracing_open and ftrace_regex_open do: `>` clears, `>>` keeps), which may
give that open file handlers of its own (OpenFileOps: the kernel's
file->private_data, so that what one opener does is not every opener's),
and a write handler that never reads the buffer (`trace`'s
tracing_write_stub: the count comes back whatever the buffer holds, mapped
or not).

An open file has a position, which each write(2) is given (the guest's
&file->pos, as a handler is given *ppos) and moves: a second write(2) on the
same file, a retry of a short one say, goes on at the offset. kernfs moves
it by what the store took and never shows it to the store; a /proc/sys file
ignores a write past position 0.
"""
from __future__ import annotations

import errno
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from emu.abi import O_ACCMODE, O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY
from emu.arch.memory import AddressSpace
from emu.kernel.hypercalls import hypercall

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu
    from emu.kernel.guestcall import ServiceContext

PAGE_SIZE = 4096
# Under /sys but not kernfs: tracefs and debugfs have file_operations of their own.
_NOT_KERNFS = ("/sys/kernel/tracing/", "/sys/kernel/debug/")
SYSCTL_ROOT = "/proc/sys/"
Show = Callable[[], str]
Store = Callable[["ServiceContext", str], int]


class OpenFileOps(Protocol):
    """One open file's own write and release, in place of its node's store
    (and of nothing at release): state that belongs to the open file."""

    def store(self, ctx: "ServiceContext", text: str) -> int: ...

    def release(self) -> None: ...


Open = Callable[[int], "OpenFileOps | None"]          # given open(2)'s flags


def truncating_write(flags: int) -> bool:
    """An open for writing with O_TRUNC (what tracefs open handlers test:
    FMODE_WRITE and O_TRUNC)."""
    return flags & O_ACCMODE != O_RDONLY and bool(flags & O_TRUNC)


def write_stub(ctx: "ServiceContext", text: str) -> int:
    """A write handler that takes the count and never reads the buffer
    (tracing_write_stub): registered as a store, it is never called."""
    return len(text)


@dataclass(frozen=True)
class FileNode:
    show: Show | None = None
    store: Store | None = None
    mode: int = 0o444
    open: Open | None = None


@dataclass
class _OpenFile:
    node: FileNode | None # None: a directory (opened to be read: its reads fail)
    content: bytes
    kernfs: bool          # a sysfs attribute: kernfs_fop_write_iter's rules
    sysctl: bool          # a /proc/sys file: proc_sys_call_handler's
    private: OpenFileOps | None = None


def _parents(path: str) -> list[str]:
    """The directories above a file: /a/b/c -> /a/b, /a and the root ("")."""
    parts = path.rstrip("/").split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def is_sysfs(path: str) -> bool:
    """Whether PATH is a sysfs (kernfs) file, not a tracefs/debugfs one."""
    return path.startswith("/sys/") and not path.startswith(_NOT_KERNFS)


class Vfs:
    def __init__(self, mem: AddressSpace) -> None:
        self.mem = mem
        self._files: dict[str, FileNode] = {}
        self._dirs: set[str] = set()
        self._implied: Counter[str] = Counter()     # directory -> the files below it
        self._dynamic: list[tuple[re.Pattern[str], Callable[[re.Match[str]], FileNode | None]]] = []
        self._open: dict[int, _OpenFile] = {}
        self._next_id = 1
        # whether a path is a directory of any tree, the guest's table's too
        # (the machine hands over its FileTree's test): what an open of a
        # name the Python tree has not says
        self.directory: Callable[[str], bool] = self.is_dir

    def register(self, path: str, show: Show | None = None, store: Store | None = None,
                 mode: int | None = None, *, on_open: Open | None = None) -> None:
        """STORE may be write_stub (a handler that never reads the buffer);
        ON_OPEN is called with the flags of each open that succeeds, and
        what it returns, if anything, serves that open file's writes and
        its release."""
        if mode is None:
            mode = (0o444 if show else 0) | (0o200 if store else 0)
        if path not in self._files:
            self._implied.update(_parents(path))
        self._files[path] = FileNode(show, store, mode, on_open)

    def register_dir(self, path: str) -> None:
        """A directory (parents are implied)."""
        path = path.rstrip("/")
        while path:
            self._dirs.add(path)
            path = path.rsplit("/", 1)[0]

    def unregister(self, path: str) -> None:
        if self._files.pop(path, None) is not None:
            self._implied.subtract(_parents(path))

    def unregister_tree(self, prefix: str) -> None:
        """Remove a directory and everything below it."""
        prefix = prefix.rstrip("/")
        inside = lambda p: p == prefix or p.startswith(prefix + "/")  # noqa: E731
        for path in [p for p in self._files if inside(p)]:
            self.unregister(path)
        self._dirs = {d for d in self._dirs if not inside(d)}

    def is_dir(self, path: str) -> bool:
        path = path.rstrip("/")
        return path in self._dirs or self._implied[path] > 0

    def register_dynamic(self, pattern: str, factory: Callable[[re.Match[str]], FileNode | None]) -> None:
        self._dynamic.append((re.compile(pattern + r"\Z"), factory))

    def lookup(self, path: str) -> FileNode | None:
        node = self._files.get(path)
        if node is not None:
            return node
        for pattern, factory in self._dynamic:
            match = pattern.match(path)
            if match:
                return factory(match)
        return None

    def exists(self, path: str) -> bool:
        return self.is_dir(path) or self.lookup(path) is not None

    def listdir(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        names = {p[len(prefix):].split("/", 1)[0] for p in (*self._files, *self._dirs) if p.startswith(prefix)}
        return sorted(names)

    def mode(self, path: str) -> int | None:
        """Permission bits (0o755 for directories), None if absent."""
        if self.is_dir(path):
            return 0o755
        node = self.lookup(path)
        return None if node is None else node.mode

    def open(self, path: str, flags: int) -> int:
        node = self.lookup(path)
        acc = flags & O_ACCMODE
        if node is None:
            return self._open_other(path, flags)
        if acc != O_RDONLY and node.store is None:
            return -errno.EACCES
        if acc != O_WRONLY and node.show is None:
            return -errno.EACCES
        private = node.open(flags) if node.open is not None else None
        content = node.show().encode() if acc != O_WRONLY and node.show else b""
        return self._new_fid(_OpenFile(node, content, is_sysfs(path), path.startswith(SYSCTL_ROOT), private))

    def _open_other(self, path: str, flags: int) -> int:
        """The open of a name with no file: a directory opens for reading
        only; a missing name is -ENOENT, or -EACCES with O_CREAT in a
        directory, since no directory of sysfs, procfs, tracefs or debugfs
        can create files (lookup_open: no i_op->create). An empty or relative
        name is -ENOENT (the guest has no working directory to start from)."""
        if not path.startswith("/"):
            return -errno.ENOENT
        if self.directory(path):
            return -errno.EISDIR if flags & O_ACCMODE != O_RDONLY else self._new_fid(_OpenFile(None, b"", False, False))
        if flags & O_CREAT and self.directory(path.rstrip("/").rsplit("/", 1)[0] or "/"):
            return -errno.EACCES
        return -errno.ENOENT

    def _new_fid(self, f: _OpenFile) -> int:
        fid = self._next_id
        self._next_id += 1
        self._open[fid] = f
        return fid

    def read(self, fid: int, pos: int, size: int) -> bytes | int:
        f = self._open.get(fid)
        if f is None:
            return -errno.EBADF
        if f.node is None:
            return -errno.EISDIR
        return f.content[pos:pos + size]

    def write_len(self, fid: int, count: int) -> int:
        """How much of a write of COUNT bytes the file's code is given:
        kernfs_fop_write_iter copies at most PAGE_SIZE of it."""
        f = self._open.get(fid)
        return min(count, PAGE_SIZE) if f is not None and f.kernfs else count

    def store(self, ctx: "ServiceContext", fid: int, data: bytes, pos: int = 0) -> int:
        """The write(2) return at file position POS: bytes consumed, or -errno.

        A /proc/sys file past position 0 stores nothing and returns the whole
        count: every sysctl served from Python is numeric (kernel.ftrace_enabled),
        and __do_proc_dointvec leaves such a write unparsed when
        proc_first_pos_non_zero_ignore says so, as it does under the default
        sysctl_writes_strict = SYSCTL_WRITES_STRICT."""
        f = self._open.get(fid)
        if f is None or f.node is None or f.node.store is None:
            return -errno.EBADF
        if f.kernfs and not data:
            return 0                      # sysfs_kf_write: nothing to store
        if f.sysctl and pos > 0:
            return len(data)
        store = f.private.store if f.private is not None else f.node.store
        return store(ctx, data.decode("latin-1"))

    def release(self, fid: int) -> None:
        f = self._open.pop(fid, None)
        if f is not None and f.private is not None:
            f.private.release()

    # ------------------------------------------------------------ hypercalls
    @hypercall("HC_VFS_OPEN")
    def hc_vfs_open(self, cpu: "Cpu", path: int, length: int, flags: int, _: int) -> int:
        """long vfs_open(const char *path, int len, int flags): a file id or -errno."""
        if not self.mem.is_user(path, length):
            return -errno.EFAULT
        return self.open(self.mem.read(path, length).decode("utf-8", "replace"), flags)

    @hypercall("HC_VFS_READ")
    def hc_vfs_read(self, cpu: "Cpu", fid: int, buf: int, size: int, pos: int) -> int:
        """long vfs_read(long id, char *buf, size_t len, loff_t pos): bytes read or -errno."""
        data = self.read(fid, pos, size)
        if isinstance(data, int):
            return data
        if not self.mem.is_user(buf, len(data)):
            return -errno.EFAULT                   # copy_to_user
        self.mem.write(buf, data)
        return len(data)

    @hypercall("HC_VFS_WRITE", blocking=True)
    def hc_vfs_write(self, ctx: "ServiceContext", fid: int, buf: int, size: int, ppos: int) -> int:
        """long vfs_write(long id, const char *buf, size_t len, loff_t *ppos):
        bytes written or -errno; *ppos moves by the bytes written, as kernfs
        (`iocb->ki_pos += len`) and __do_proc_dointvec (`*ppos += *lenp`)
        move it. (tracing_write_stub leaves it and rb_simple_write adds 1;
        no handler served here looks at it but a sysctl's.)"""
        f = self._open.get(fid)
        if f is not None and f.node is not None and f.node.store is write_stub:
            return size                            # nothing copied: nothing to fault on
        length = self.write_len(fid, size)
        if not self.mem.is_user(buf, length):
            return -errno.EFAULT                   # copy_from_user of what the handler reads
        pos = self.mem.read_u64(ppos)
        ret = self.store(ctx, fid, self.mem.read(buf, length), pos)
        if ret > 0:
            self.mem.write_u64(ppos, pos + ret)
        return ret

    @hypercall("HC_VFS_RELEASE")
    def hc_vfs_release(self, cpu: "Cpu", fid: int, *_: int) -> int:
        """void vfs_release(long id)"""
        self.release(fid)
        return 0
