"""The file system a script sees: /sys, /proc and /dev are the guest's
(each read and write a genuine syscall of the guest shell task, through
Machine), everything else a small host-side namespace:

- the script's directory (read-only), where the script was started, so that
  `. $(dirname $0)/functions.sh` and `test_modules/NAME.ko` work; a NAME.ko
  that is not there is the module NAME built for the guest (the module
  directories: --module-dir, then fixtures/build/modules);
- /tmp, an empty tmpfs of this run (mktemp, `> /tmp/x`);
- /lib/modules/RELEASE/build, an empty directory (functions.sh's has_kdir);
- /bin, /usr/bin, /sbin, /usr/sbin: the commands the shell has;
- /dev/null, /dev/stdin|stdout|stderr and /dev/fd/N (process substitution).
Nothing else of the host is reachable, and nothing of the host is written.
"""
from __future__ import annotations

import errno as E
import os
import posixpath
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from emu import EmuError, ShellError
from emu.kernel.shell import REDIRECT, REDIRECT_APPEND
from klpemu.scenario.killed import check_killed
from klpemu.selftest import module_dirs_finder

if TYPE_CHECKING:
    from emu import Machine

GUEST_ROOTS = ("/sys", "/proc", "/dev")
_GUEST_PREFIXES = tuple(r + "/" for r in GUEST_ROOTS)
HOST_DEVICES = ("/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/zero")
BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin")


class FsError(Exception):
    """A failed file operation, with the errno a real one would give."""

    def __init__(self, errno: int, path: str) -> None:
        super().__init__(f"{path}: {os.strerror(errno)}")
        self.errno = errno
        self.path = path

    @property
    def reason(self) -> str:
        return os.strerror(self.errno)


@lru_cache(maxsize=4096)
def _resolved(cwd: str, path: str) -> str:
    if not path.startswith("/"):
        path = posixpath.join(cwd, path)
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Namespace:
    def __init__(self, machine: "Machine", *, script_dir: Path | None, module_dirs: list[Path],
                 release: str, commands: frozenset[str]) -> None:
        self.machine = machine
        self.script_dir = str(script_dir.resolve()) if script_dir is not None else None
        self.module_dirs = [d.resolve() for d in module_dirs]
        self._find_module = module_dirs_finder(self.module_dirs)
        self._modules: dict[str, Path | None] = {}       # find_module's, this run
        self._host_files: dict[str, Path | None] = {}    # host_file's, this run
        self._host_data: dict[Path, bytes] = {}           # the host files read, this run
        self.release = release
        self.commands = commands
        self.cwd = self.script_dir or "/root"
        self.tmp: dict[str, str] = {}            # /tmp files
        self.tmp_dirs: set[str] = {"/tmp"}
        self.fds: dict[int, str] = {}            # /dev/fd/N of process substitutions
        self._virtual_dirs = {"/", "/lib", "/lib/modules", f"/lib/modules/{release}",
                              f"/lib/modules/{release}/build", "/usr", "/root", *BIN_DIRS}
        if self.script_dir:
            parts = self.script_dir.strip("/").split("/")
            self._virtual_dirs.update("/" + "/".join(parts[:k]) for k in range(1, len(parts)))

    # ------------------------------------------------------------ paths
    def resolve(self, path: str) -> str:
        """PATH absolute and normalised (relative to the working directory)."""
        return _resolved(self.cwd, path)

    def is_guest(self, path: str) -> bool:
        return (path in GUEST_ROOTS or path.startswith(_GUEST_PREFIXES)) and path not in HOST_DEVICES \
            and not path.startswith("/dev/fd/")

    def host_file(self, path: str) -> Path | None:
        """The host file behind an absolute PATH of the script's directory (or
        the built module a missing NAME.ko stands for), if any. Looked up
        once per run: the host side is read-only, and a run does not see it
        change (a script's test_modules/NAME.ko is stat'ed once, not at each
        of load_lp's modinfo, insmod and checks)."""
        if path in self._host_files:
            return self._host_files[path]
        found = self._host_files[path] = self._find_host_file(path)
        return found

    def _find_host_file(self, path: str) -> Path | None:
        if self.script_dir and _under(path, self.script_dir):
            real = Path(path)
            if real.is_file():
                return real
        if path.endswith(".ko") and (self.script_dir is None or _under(path, self.script_dir)
                                     or _under(path, "/lib/modules")):
            return self.find_module(posixpath.basename(path)[:-3])
        return None

    def find_module(self, name: str) -> Path | None:
        """NAME.ko in the module directories (`-` and `_` alike, as kmod has them)."""
        if name not in self._modules:
            self._modules[name] = self._find_module(name)
        return self._modules[name]

    # ------------------------------------------------------------ queries
    def exists(self, path: str) -> bool:
        path = self.resolve(path)
        return self.is_dir(path) or self.is_file(path)

    def is_dir(self, path: str) -> bool:
        path = self.resolve(path)
        if self.is_guest(path):
            return self.machine.is_dir(path)
        if path in self._virtual_dirs or path in self.tmp_dirs or path == "/dev/fd":
            return True
        if self.script_dir and _under(path, self.script_dir):
            return Path(path).is_dir()
        return False

    def is_file(self, path: str) -> bool:
        path = self.resolve(path)
        if self.is_guest(path):
            return self.machine.exists(path) and not self.machine.is_dir(path)
        if path in HOST_DEVICES:
            return False
        if path.startswith("/dev/fd/"):
            return int(path[8:]) in self.fds if path[8:].isdigit() else False
        if path in self.tmp:
            return True
        if any(_under(path, d) for d in BIN_DIRS):
            return posixpath.basename(path) in self.commands and posixpath.dirname(path) in BIN_DIRS
        return self.host_file(path) is not None

    def is_device(self, path: str) -> bool:
        return self.resolve(path) in HOST_DEVICES

    def listdir(self, path: str) -> list[str]:
        path = self.resolve(path)
        if self.is_guest(path):
            return self.machine.listdir(path)
        if path == "/":
            names = {"dev", "lib", "proc", "sys", "tmp", "usr", "bin", "sbin", "root"}
            if self.script_dir:
                names.add(self.script_dir.strip("/").split("/")[0])
            return sorted(names)
        if path in BIN_DIRS:
            return sorted(self.commands)
        if path in self.tmp_dirs:
            prefix = path.rstrip("/") + "/"
            return sorted({p[len(prefix):].split("/")[0] for p in (*self.tmp, *self.tmp_dirs)
                           if p.startswith(prefix)})
        if self.script_dir and _under(path, self.script_dir) and Path(path).is_dir():
            return sorted(os.listdir(path))
        if path in self._virtual_dirs:
            prefix = path.rstrip("/") + "/"
            extra = {self.script_dir[len(prefix):].split("/")[0]} if self.script_dir and \
                self.script_dir.startswith(prefix) else set()
            return sorted({d[len(prefix):].split("/")[0] for d in self._virtual_dirs if d.startswith(prefix)}
                          | extra)
        raise FsError(E.ENOENT if not self.exists(path) else E.ENOTDIR, path)

    def mode(self, path: str) -> tuple[int, bool]:
        """(permission bits, is a directory)."""
        path = self.resolve(path)
        if self.is_guest(path):
            try:
                return self.machine.file_mode(path), self.machine.is_dir(path)
            except EmuError:
                raise FsError(E.ENOENT, path) from None
        if self.is_dir(path):
            return (0o1777 if path == "/tmp" else 0o755), True
        if path in HOST_DEVICES:
            return 0o666, False
        if not self.is_file(path):
            raise FsError(E.ENOENT, path)
        if any(_under(path, d) for d in BIN_DIRS):
            return 0o755, False
        if path in self.tmp:
            return 0o600, False
        return os.stat(self.host_file(path) or path).st_mode & 0o7777, False

    def size(self, path: str) -> int:
        """st_size: sysfs attributes say 4096, /proc files 0, as the kernel does."""
        path = self.resolve(path)
        if self.is_guest(path):
            if not self.exists(path):
                raise FsError(E.ENOENT, path)
            return 4096 if _under(path, "/sys") or self.is_dir(path) else 0
        if path in self.tmp:
            return len(self.tmp[path].encode("utf-8", "surrogateescape"))
        host = self.host_file(path)
        if host is not None:
            return host.stat().st_size
        if self.exists(path):
            return 4096 if self.is_dir(path) else 0
        raise FsError(E.ENOENT, path)

    # ------------------------------------------------------------ contents
    def read(self, path: str) -> str:
        path = self.resolve(path)
        if self.is_guest(path):
            try:
                return self.machine.read_file(path)
            except ShellError as exc:
                check_killed(exc)
                raise FsError(exc.errno, path) from None
        if path in ("/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr"):
            return ""
        if path.startswith("/dev/fd/") and path[8:].isdigit() and int(path[8:]) in self.fds:
            return self.fds[int(path[8:])]
        if path in self.tmp:
            return self.tmp[path]
        if self.is_dir(path):
            raise FsError(E.EISDIR, path)
        host = self.host_file(path)
        if host is None:
            raise FsError(E.ENOENT, path)
        return self._host_bytes(host).decode("utf-8", "replace")

    def read_bytes(self, path: str) -> bytes:
        """A host file's bytes (a module to load), or FsError."""
        path = self.resolve(path)
        host = self.host_file(path) if not self.is_guest(path) else None
        if host is None:
            if path in self.tmp:
                return self.tmp[path].encode("utf-8", "surrogateescape")
            raise FsError(E.EISDIR if self.is_dir(path) else E.ENOENT, path)
        return self._host_bytes(host)

    def _host_bytes(self, host: Path) -> bytes:
        """HOST's contents, read once per run (as host_file, the host does not change under a run)."""
        data = self._host_data.get(host)
        if data is None:
            data = self._host_data[host] = host.read_bytes()
        return data

    def check_writable(self, path: str) -> None:
        """What open(O_WRONLY|O_CREAT) would say of PATH, before anything is written."""
        path = self.resolve(path)
        if self.is_guest(path):
            if self.machine.is_dir(path):
                raise FsError(E.EISDIR, path)
            if not self.machine.exists(path):      # no directory there can create (lookup_open)
                raise FsError(E.EACCES if self.machine.is_dir(posixpath.dirname(path)) else E.ENOENT, path)
            return
        if path in HOST_DEVICES or path.startswith("/dev/fd/"):
            return
        if self.is_dir(path):
            raise FsError(E.EISDIR, path)
        if self.script_dir and _under(path, self.script_dir):
            raise FsError(E.EROFS, path)             # the script's directory is read-only
        if _under(path, "/tmp"):
            if posixpath.dirname(path) not in self.tmp_dirs:
                raise FsError(E.ENOENT, path)
            return
        raise FsError(E.EROFS if self.exists(posixpath.dirname(path)) else E.ENOENT, path)

    def write(self, path: str, data: str, *, append: bool) -> None:
        """DATA written as bash's stdio writes it (check_writable said the
        open would succeed): without APPEND, as `>`'s first write, which
        makes its open (a guest file is opened for each write, with `>`'s
        flags for the first, O_APPEND after)."""
        path = self.resolve(path)
        if self.is_guest(path):
            self._write_guest(path, data.encode("utf-8", "surrogateescape"), REDIRECT_APPEND if append else REDIRECT)
            return
        if path in HOST_DEVICES:
            return
        if _under(path, "/tmp"):
            self.tmp[path] = (self.tmp.get(path, "") if append else "") + data
            return
        raise FsError(E.EROFS, path)

    def _write_guest(self, path: str, raw: bytes, flags: int) -> None:
        """bash's echo writes through stdio, whose write loop writes again
        what a short write(2) left, at the advanced file position, until all
        is written or a call fails (Shell.write): a sysfs store is given at
        most PAGE_SIZE a call, and a /proc/sys file ignores the calls past
        position 0."""
        try:
            self.machine.shell.write(path, raw, flags)
        except ShellError as exc:
            check_killed(exc)
            raise FsError(exc.errno, path) from None

    def truncate(self, path: str) -> None:
        """`>`'s open(O_WRONLY|O_CREAT|O_TRUNC) with nothing written:
        empties a /tmp file; a guest file is opened and closed with these
        flags, so that its open handler sees them as the kernel's does
        (tracefs `trace` clears, sysfs ignores them); FsError if the guest
        refuses the open."""
        path = self.resolve(path)
        if self.is_guest(path):
            self._write_guest(path, b"", REDIRECT)
        elif _under(path, "/tmp") and not self.is_dir(path):
            self.tmp[path] = ""

    def remove(self, path: str) -> None:
        path = self.resolve(path)
        if path in self.tmp:
            del self.tmp[path]
            return
        if path in self.tmp_dirs and path != "/tmp":
            if any(p.startswith(path + "/") for p in (*self.tmp, *self.tmp_dirs)):
                raise FsError(E.ENOTEMPTY, path)
            self.tmp_dirs.discard(path)
            return
        if not self.exists(path):
            raise FsError(E.ENOENT, path)
        raise FsError(E.EPERM if self.is_guest(path) else E.EROFS, path)

    def make_dir(self, path: str) -> None:
        path = self.resolve(path)
        if self.exists(path):
            raise FsError(E.EEXIST, path)
        if not _under(path, "/tmp") or posixpath.dirname(path) not in self.tmp_dirs:
            raise FsError(E.EROFS if not _under(path, "/tmp") else E.ENOENT, path)
        self.tmp_dirs.add(path)

    def create(self, path: str) -> None:
        """A new, empty /tmp file (mktemp)."""
        path = self.resolve(path)
        self.check_writable(path)
        self.tmp[path] = ""
