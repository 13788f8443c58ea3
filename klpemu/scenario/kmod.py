"""What kmod's tools tell of modules: the .modinfo tags of a .ko (modinfo), the
messages of a failed insmod, modprobe or rmmod, and `stat -c %A`'s rights
string for check_sysfs_rights.
"""
from __future__ import annotations

import errno as _errno
import os
import struct
from pathlib import Path

# kmod's insmod: its own text for a few errnos, strerror for the rest.
KMOD_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module",
    _errno.EINVAL: "Invalid parameters",
}
# kmod's modprobe (the selftests before 6.9 loaded with it): strerror but for these.
MODPROBE_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module, or unknown parameter (see dmesg)",
}


def modinfo(path: Path) -> dict[str, list[str]] | None:
    """The .modinfo tags of an ELF .ko, or None if it has none (or is no ELF64)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or len(data) < 64:
        return None
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

        def section(k: int) -> tuple[int, int, int]:
            name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + k * shentsize)
            return name, off, size
        _, stroff, _ = section(shstrndx)
        for k in range(shnum):
            name, off, size = section(k)
            end = data.index(b"\0", stroff + name)
            if data[stroff + name:end] == b".modinfo":
                tags: dict[str, list[str]] = {}
                for entry in data[off:off + size].split(b"\0"):
                    key, sep, value = entry.decode("utf-8", "replace").partition("=")
                    if sep:
                        tags.setdefault(key, []).append(value)
                return tags
    except (struct.error, ValueError):
        return None
    return None


def insmod_error(display: str, err: int) -> str:
    """kmod insmod's message for a failed init_module."""
    return f"insmod: ERROR: could not insert module {display}: {KMOD_ERRORS.get(err, os.strerror(err))}"


def modprobe_error(name: str, err: int) -> str:
    """kmod modprobe's message for a failed init_module."""
    return f"modprobe: ERROR: could not insert '{name}': {MODPROBE_ERRORS.get(err, os.strerror(err))}"


def rmmod_error(name: str, err: int) -> str:
    if err == _errno.ENOENT:
        return f"rmmod: ERROR: Module {name} is not currently loaded"
    return f"rmmod: ERROR: could not remove module {name}: {os.strerror(err)}"


def rights_string(mode: int, is_dir: bool) -> str:
    """`stat -c %A`: drwxr-xr-x, -rw-r--r-- …"""
    bits = "".join(ch if mode & (1 << (8 - k)) else "-" for k, ch in enumerate("rwxrwxrwx"))
    return ("d" if is_dir else "-") + bits
