"""What exists under /proc and /sys, as `ls` and `stat` would see it: the
union of the Python-served files (Vfs) and the guest's own table of /proc
files and sysfs kobjects. A look at the trees, no syscall."""
from __future__ import annotations

from collections.abc import Mapping

from emu.errors import EmuError
from emu.fs.vfs import Vfs
from emu.kernel.program import Program

S_IFDIR = 0o040000


class FileTree:
    def __init__(self, prog: Program, vfs: Vfs) -> None:
        self.prog = prog
        self.vfs = vfs
        # the table as last read, and what was made of it: a scenario's
        # `[[ -d ]]` and globs look often, the guest changes the table seldom
        self._raw: bytes | None = None
        self._entries: dict[str, int] = {}
        self._dirs: frozenset[str] = frozenset()

    def guest_entries(self) -> Mapping[str, int]:
        """The guest's own VFS table (/proc files, sysfs kobjects and their
        attributes): path -> mode, S_IFDIR set for a directory."""
        self._refresh()
        return self._entries

    def _refresh(self) -> None:
        """Read the whole table in one piece; parse it again only when it changed."""
        prog = self.prog
        stride = prog.offsets["PDE_size"]
        count = max(0, prog.mem.read_s32(prog.symbol_address("nr_entries")))
        raw = prog.mem.read(prog.symbol_address("entries"), count * stride)
        if raw == self._raw:
            return
        path_off, mode_off = prog.offsets["PDE_path"], prog.offsets["PDE_mode"]
        path_len = prog.offsets["PDE_path_len"]
        entries = {}
        for entry in range(0, len(raw), stride):
            path = raw[entry + path_off:entry + path_off + path_len].split(b"\0", 1)[0].decode("utf-8", "replace")
            if path:                                  # an empty path is a free slot
                entries[path] = int.from_bytes(raw[entry + mode_off:entry + mode_off + 2], "little")
        self._raw, self._entries, self._dirs = raw, entries, _directories(entries)

    def exists(self, path: str) -> bool:
        # is_dir reads the guest's table (once) unless the Python tree answers
        return self.vfs.exists(path) or self.is_dir(path) or path in self._entries

    def is_dir(self, path: str) -> bool:
        """A directory of the Python trees, or of the guest's table (a kobject's
        directory, or one implied by the files below it)."""
        path = path.rstrip("/") or "/"
        if self.vfs.is_dir(path):
            return True
        self._refresh()
        return path in self._dirs

    def listdir(self, path: str) -> list[str]:
        below = path.rstrip("/") + "/"
        guest = {p[len(below):].split("/", 1)[0] for p in self.guest_entries() if p.startswith(below)}
        return sorted(guest.union(self.vfs.listdir(path)))

    def file_mode(self, path: str) -> int:
        """Permission bits (0o755 for a directory)."""
        mode = self.vfs.mode(path)
        if mode is None:
            mode = self.guest_entries().get(path)
            if mode is None and self.is_dir(path):
                mode = 0o755
        if mode is None:
            raise EmuError(f"{path} does not exist")
        return mode & 0o7777


def _directories(entries: Mapping[str, int]) -> frozenset[str]:
    """The directories of a table: its S_IFDIR entries, and every directory
    a path implies (each prefix of it that ends before a `/`)."""
    dirs = {p for p, mode in entries.items() if mode & S_IFDIR}
    for p in entries:
        dirs.update(p[:i] or "/" for i, ch in enumerate(p) if ch == "/")
    return frozenset(dirs)
