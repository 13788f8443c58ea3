"""Unwind tables of loaded images: rows per function, looked up by address."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from emu.unwind import cache
from emu.unwind.cfa import Row, track_function
from emu.unwind.entry import Entry
from emu.unwind.hints import Hint

log = logging.getLogger(__name__)

ReadCode = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class FunctionSym:
    """A function symbol (STT_FUNC with a size) at its load address."""

    name: str
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


class UnwindTables:
    """Unwind entries of every known function, looked up by instruction address.

    Like the kernel's ORC table, an entry covers an address range: from an
    instruction start up to the next change of state, so `lookup(ret - 1)` finds
    the state of the call instruction before a return address.
    """

    def __init__(self) -> None:
        # start -> the function and its rows' addresses and entries (split
        # once, so that a rebuild extends lists instead of walking rows)
        self._funcs: dict[int, tuple[FunctionSym, list[int], list[Entry | None]]] = {}
        self._addrs: list[int] = []
        self._entries: list[Entry | None] = []
        self._fstarts: list[int] = []
        self._fsyms: list[FunctionSym] = []
        self._memo: dict[int, Entry | None] = {}
        self._stale = False          # _funcs changed since the arrays were made (and not spliced)

    def __len__(self) -> int:
        """Number of functions in the tables."""
        return len(self._funcs)

    def add_functions(self, functions: Iterable[tuple[str, int, int]], read_code: ReadCode,
                      hints: Iterable[Hint] = (), *, cache_key: str | None = None) -> None:
        """Track and add the functions (name, start, size); replaces same-start ones.

        `read_code(addr, size)` returns the code bytes as linked, before any live
        patching (a `jmp trampoline` at a patched fentry site would end every
        path at the first instruction); `hints` may include hints
        outside these functions (ignored with a warning). With `cache_key`, rows
        are loaded from / stored to the cache under that key, which must identify
        the code bytes, addresses and hints (e.g. a hash of a linked image).
        """
        funcs = _unique_functions(functions)
        tracked = cache.cached(cache_key, lambda: _track_all(funcs, read_code, list(hints)))
        new = [(sym, [addr for addr, _ in rows], [entry for _, entry in rows]) for sym, rows in tracked]
        spliced = not self._stale and self._splice_in(new)
        for row in new:
            self._funcs[row[0].start] = row
        self._memo = {}
        if not spliced:
            self._stale = True

    def remove_functions(self, low: int, high: int) -> int:
        """Forget the functions starting in [low, high) (module unload); returns how many."""
        gone = [start for start in self._funcs if low <= start < high]
        for start in gone:
            del self._funcs[start]
        self._memo = {}
        if gone and not (not self._stale and self._splice_out(low, high)):
            self._stale = True
        return len(gone)

    # A module's functions come and go as one block of addresses apart from
    # every other image's: its rows are spliced into the arrays, or cut out
    # of them, without flattening every function again. Anything else (a
    # block that touches or overlaps another function) makes the arrays
    # stale, to be made again in full when next used.
    def _splice_in(self, new: list[tuple[FunctionSym, list[int], list[Entry | None]]]) -> bool:
        if not new:
            return True
        low, high = new[0][0].start, max(sym.end for sym, _, _ in new)
        i = bisect_left(self._fstarts, low)
        if (i > 0 and self._fsyms[i - 1].end >= low) or (i < len(self._fstarts) and self._fstarts[i] <= high):
            return False
        addrs: list[int] = []
        entries: list[Entry | None] = []
        syms: list[FunctionSym] = []
        _flatten(new, addrs, entries, syms)
        k = bisect_left(self._addrs, low)
        self._addrs[k:k] = addrs
        self._entries[k:k] = entries
        self._fsyms[i:i] = syms
        self._fstarts[i:i] = [sym.start for sym in syms]
        return True

    def _splice_out(self, low: int, high: int) -> bool:
        i, j = bisect_left(self._fstarts, low), bisect_left(self._fstarts, high)
        if i == j:
            return True
        first, last = self._fsyms[i], self._fsyms[j - 1]
        if (i > 0 and self._fsyms[i - 1].end >= first.start) or (j < len(self._fsyms) and self._fstarts[j] <= last.end):
            return False
        k, m = bisect_left(self._addrs, first.start), bisect_right(self._addrs, last.end)
        del self._addrs[k:m], self._entries[k:m], self._fsyms[i:j], self._fstarts[i:j]
        return True

    @property
    def memo(self) -> dict[int, Entry | None]:
        """The addresses lookup() has answered, and its answers."""
        if self._stale:
            self._rebuild()
        return self._memo

    def lookup(self, ip: int) -> Entry | None:
        """The entry covering `ip`, or None if no tracked instruction covers it."""
        try:
            return self._memo[ip]
        except KeyError:
            pass
        if self._stale:
            self._rebuild()
        i = bisect_right(self._addrs, ip) - 1
        entry = self._entries[i] if i >= 0 else None
        self._memo[ip] = entry
        return entry

    def find_function(self, ip: int) -> FunctionSym | None:
        """The function containing `ip`, or None."""
        if self._stale:
            self._rebuild()
        i = bisect_right(self._fstarts, ip) - 1
        if i >= 0 and ip < self._fsyms[i].end:
            return self._fsyms[i]
        return None

    def describe(self, ip: int) -> str:
        """`name+0xoff` for an address inside a function, else `0x…`."""
        sym = self.find_function(ip)
        return f"{sym.name}+0x{ip - sym.start:x}" if sym else f"0x{ip:x}"

    def iter_functions(self) -> Iterator[FunctionSym]:
        """Yield the functions in address order."""
        if self._stale:
            self._rebuild()
        return iter(self._fsyms)

    def _rebuild(self) -> None:
        """Flatten the per-function rows into the sorted lookup arrays."""
        addrs: list[int] = []
        entries: list[Entry | None] = []
        syms: list[FunctionSym] = []
        _flatten([self._funcs[start] for start in sorted(self._funcs)], addrs, entries, syms)
        self._addrs, self._entries, self._fsyms = addrs, entries, syms
        self._fstarts = [s.start for s in syms]
        self._memo = {}
        self._stale = False


def _flatten(funcs: list[tuple[FunctionSym, list[int], list[Entry | None]]], addrs: list[int],
             entries: list[Entry | None], syms: list[FunctionSym]) -> None:
    """Append the rows of FUNCS (sorted by start) to the arrays: each
    function's rows, then an end marker (None) where it ends, unless the
    next function starts there (or before: an overlap, warned about)."""
    for sym, row_addrs, row_entries in funcs:
        start = sym.start
        while addrs and addrs[-1] >= start:  # previous end marker, or an overlap
            addrs.pop()
            entries.pop()
        if syms and syms[-1].end > start:
            log.warning("functions %s and %s overlap", syms[-1].name, sym.name)
        addrs += row_addrs
        entries += row_entries
        addrs.append(sym.end)
        entries.append(None)
        syms.append(sym)


def build_tables(functions: Iterable[tuple[str, int, int]], read_code: ReadCode,
                 hints: Iterable[Hint] = (), *, cache_key: str | None = None) -> UnwindTables:
    """Build the tables of an image; arguments as for `UnwindTables.add_functions`."""
    tables = UnwindTables()
    tables.add_functions(functions, read_code, hints, cache_key=cache_key)
    return tables


def _unique_functions(functions: Iterable[tuple[str, int, int]]) -> list[FunctionSym]:
    """Sized functions sorted by start; of aliases at one start, keep the longest."""
    best: dict[int, FunctionSym] = {}
    for name, start, size in functions:
        if size > 0 and (start not in best or size > best[start].size):
            best[start] = FunctionSym(name, start, size)
    return [best[s] for s in sorted(best)]


def _track_all(funcs: list[FunctionSym], read_code: ReadCode,
               hints: list[Hint]) -> list[tuple[FunctionSym, list[Row]]]:
    """Track every function, giving each the hints inside it."""
    starts = [f.start for f in funcs]
    per_func: dict[int, list[Hint]] = {}
    for h in hints:
        i = bisect_right(starts, h.ip) - 1
        if i >= 0 and h.ip < funcs[i].end:
            per_func.setdefault(funcs[i].start, []).append(h)
        else:
            log.warning("unwind hint at 0x%x is outside every function", h.ip)
    t0 = time.perf_counter()
    tracked = [(f, track_function(read_code(f.start, f.size), f.start, per_func.get(f.start, ())))
               for f in funcs]
    log.debug("tracked %d functions in %.3f s", len(funcs), time.perf_counter() - t0)
    return tracked
