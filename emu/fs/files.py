"""What exists under /proc and /sys, as `ls` and `stat` would see it: the
union of the Python-served files (Vfs) and the guest's own table of /proc
files and sysfs kobjects. A look at the trees, no syscall."""
from __future__ import annotations

from emu.errors import EmuError
from emu.fs.vfs import Vfs
from emu.kernel.program import Program

S_IFDIR = 0o040000


class FileTree:
    def __init__(self, prog: Program, vfs: Vfs) -> None:
        self.prog = prog
        self.vfs = vfs

    def guest_entries(self) -> dict[str, int]:
        """The guest's own VFS table (/proc files, sysfs kobjects and their
        attributes): path -> mode, S_IFDIR set for a directory."""
        prog = self.prog
        base, stride = prog.symbol_address("entries"), prog.offsets["PDE_size"]
        path_off, mode_off = prog.offsets["PDE_path"], prog.offsets["PDE_mode"]
        path_len = prog.offsets["PDE_path_len"]
        count = prog.mem.read_s32(prog.symbol_address("nr_entries"))
        entries = {}
        for i in range(count):
            entry = base + i * stride
            path = prog.mem.read_cstr(entry + path_off, path_len)
            if path:                                  # an empty path is a free slot
                entries[path] = int.from_bytes(prog.mem.read(entry + mode_off, 2), "little")
        return entries

    def exists(self, path: str) -> bool:
        return self.vfs.exists(path) or path in self.guest_entries() or self.is_dir(path)

    def is_dir(self, path: str) -> bool:
        """A directory of the Python trees, or of the guest's table (a kobject's
        directory, or one implied by the files below it)."""
        path = path.rstrip("/") or "/"
        if self.vfs.is_dir(path):
            return True
        below = path.rstrip("/") + "/"
        return any((p == path and mode & S_IFDIR) or p.startswith(below)
                   for p, mode in self.guest_entries().items())

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
