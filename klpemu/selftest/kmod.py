"""What kmod's tools say of modules: the .modinfo tags of a .ko (modinfo and
its output), and the messages of insmod, modprobe and rmmod when the kernel
refuses, in kmod's words.
"""
from __future__ import annotations

import errno as _errno
import os
import struct

# kmod's insmod (mod_strerror): its own text for a few errnos, strerror for the rest.
INSMOD_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module",
    _errno.ESRCH: "Unknown symbol in module",
    _errno.EINVAL: "Invalid parameters",
}
# kmod's modprobe (the selftests before 6.9 loaded with it): strerror but for these.
MODPROBE_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module, or unknown parameter (see dmesg)",
}


def modinfo_tags(data: bytes) -> list[tuple[str, str]] | None:
    """The key=value tags of an ELF .ko's .modinfo, in section order; None
    when DATA is no ELF64 or has no .modinfo."""
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2:
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
                tags = []
                for entry in data[off:off + size].split(b"\0"):
                    key, sep, value = entry.decode("utf-8", "replace").partition("=")
                    if sep:
                        tags.append((key, value))
                return tags
    except (struct.error, ValueError):
        return None
    return None


def is_livepatch(tags: list[tuple[str, str]]) -> bool:
    """modinfo's `livepatch: Y` (the last such tag, as awk's /^livepatch:/ would keep)."""
    values = [v for k, v in tags if k == "livepatch"]
    return bool(values) and values[-1] == "Y"


def modinfo_text(filename: str, tags: list[tuple[str, str]]) -> str:
    """kmod modinfo's output: `filename:` then each tag, `%-16s%s`."""
    types = dict(v.split(":", 1) for k, v in tags if k == "parmtype" and ":" in v)
    lines = [f"{'filename:':<16}{filename}"]
    for key, value in tags:
        if key == "parm":
            name = value.split(":", 1)[0]
            lines.append(f"{'parm:':<16}{value}" + (f" ({types[name]})" if name in types else ""))
        elif key != "parmtype":
            lines.append(f"{key + ':':<16}{value}")
    return "".join(line + "\n" for line in lines)


def insmod_error(display: str, err: int) -> str:
    """kmod insmod's message for a failed init_module."""
    return f"insmod: ERROR: could not insert module {display}: {INSMOD_ERRORS.get(err, os.strerror(err))}"


def insmod_load_error(display: str, err: int) -> str:
    """kmod insmod's message for a module file it cannot read."""
    return f"insmod: ERROR: could not load module {display}: {os.strerror(err)}"


def modprobe_error(name: str, err: int) -> str:
    """kmod modprobe's message for a failed init_module."""
    return f"modprobe: ERROR: could not insert '{name}': {MODPROBE_ERRORS.get(err, os.strerror(err))}"


def modprobe_not_found(name: str, release: str) -> str:
    return f"modprobe: FATAL: Module {name} not found in directory /lib/modules/{release}"


def rmmod_error(name: str, err: int) -> str:
    """kmod rmmod's check before delete_module(2) (check_module_inuse):
    ENOENT is a module not loaded, EBUSY one whose refcnt is above 0."""
    if err == _errno.ENOENT:
        return f"rmmod: ERROR: Module {name} is not currently loaded"
    if err == _errno.EBUSY:
        return f"rmmod: ERROR: Module {name} is in use"
    return rmmod_remove_error(name, err)


def rmmod_remove_error(name: str, err: int) -> str:
    """kmod rmmod's message when delete_module(2) itself fails (a module
    without exit, a refcnt taken meanwhile): the errno's text, whatever it is."""
    return f"rmmod: ERROR: could not remove module {name}: {os.strerror(err)}"
