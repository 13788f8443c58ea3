"""Cache of computed unwind rows, in process (the MAX_IN_MEMORY most
recently used) and on disk (MAX_FILES).

Rows are a pure function of the code bytes and hints, so a key derived from the
content of the ELF file identifies them. Files live under
`$XDG_CACHE_HOME/klpemu` (default `~/.cache/klpemu`). Setting the environment
variable `KLPEMU_NO_UNWIND_CACHE=1` disables the cache; so does passing no key to
`build_tables`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

# Bump whenever the tracker's output or the pickled types change.
FORMAT_VERSION = 1
# Files kept on disk: every module loaded (a fuzz run's thousands of mutants
# too) has an entry, so the least recently used go beyond this many (a load
# from disk counts as a use: the kernel's rows, written once and read by
# every process, stay).
MAX_FILES = 1024
# Values kept in this process, least recently used first out. 256 holds what
# a process reuses: both kernels' rows and stack switches (4 entries, used
# again at every boot, so they stay at the recent end) and every fixture
# module (61) at a few load addresses each (the key has the address). A
# fuzz run's mutants are new keys each, used once: without a bound they
# grew the process by one entry each (a module's rows are ~0.5-1.3 KB
# pickled, ~10x that as objects; the kernel's 49 KB) for as long as it ran.
MAX_IN_MEMORY = 256

T = TypeVar("T")
_memory: OrderedDict[str, object] = OrderedDict()


def cache_enabled() -> bool:
    """False when the environment disables the unwind cache."""
    return os.environ.get("KLPEMU_NO_UNWIND_CACHE", "") in ("", "0")


def file_key(path: str | os.PathLike[str]) -> str:
    """A cache key for the contents of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """The directory holding the cache files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "klpemu"


def _path(key: str) -> Path:
    return cache_dir() / f"unwind-v{FORMAT_VERSION}-{key}.pickle"


def load(key: str) -> object | None:
    """The value stored under `key`, or None if absent or unreadable."""
    value = _memory.get(key)
    if value is not None:
        _memory.move_to_end(key)
        return value
    path = _path(key)
    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a corrupt or stale file is only a cache miss
        log.warning("ignoring unreadable unwind cache %s: %s", path, exc)
        return None
    try:
        os.utime(path)        # used: the last to be pruned
    except OSError:
        pass
    _remember(key, value)
    return value


def _remember(key: str, value: object) -> None:
    """Keep VALUE in memory as the most recently used, dropping the least
    recently used beyond MAX_IN_MEMORY (they stay on disk)."""
    _memory[key] = value
    _memory.move_to_end(key)
    while len(_memory) > MAX_IN_MEMORY:
        _memory.popitem(last=False)


def cached(key: str | None, compute: Callable[[], T]) -> T:
    """The value under KEY, computed (and stored) on a miss; with no KEY,
    or the cache disabled, just computed."""
    if key is None or not cache_enabled():
        return compute()
    value = load(key)
    if value is None:
        value = compute()
        store(key, value)
    return value  # type: ignore[return-value]


def store(key: str, value: object) -> None:
    """Keep `value` under `key` in memory and, if possible, on disk."""
    _remember(key, value)
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".unwind-")
    except OSError as exc:
        log.warning("cannot write unwind cache in %s: %s", path.parent, exc)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write unwind cache %s: %s", path, exc)
        Path(tmp).unlink(missing_ok=True)
        return
    _prune(path.parent)


def _prune(directory: Path) -> None:
    """Remove the least recently used cache files beyond MAX_FILES (racing
    writers may remove one twice: that is only a miss later)."""
    try:
        files = [(e.stat().st_mtime_ns, e.path) for e in os.scandir(directory)
                 if e.name.startswith(f"unwind-v{FORMAT_VERSION}-")]
    except OSError:
        return
    if len(files) <= MAX_FILES:
        return
    for _, name in sorted(files)[:len(files) - MAX_FILES]:
        Path(name).unlink(missing_ok=True)
