"""The function tracer and its tracefs files (kernel/trace/trace_functions.c).

`/sys/kernel/debug/tracing` (also `/sys/kernel/tracing`) has what the
livepatch selftests use: `current_tracer` (`nop` or `function`),
`set_ftrace_filter` (function names or globs, one per write; empty clears),
`tracing_on` and `trace`. The function tracer is an ordinary, non-IPMODIFY
ftrace ops whose callback is a Python hook, so it composes with livepatch
trampolines and kprobes on the same site as in the kernel. It is slow (a
Python call per traced call), as tracing may be.
"""
from __future__ import annotations

import errno
import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.arch.cpu import Cpu
from emu.fs.vfs import Vfs, truncating_write, write_stub
from emu.kernel.ctype import split_words, strim
from emu.kernel.kstrtox import ParseError, kstrtoul_from_user
from emu.kernel.program import Program
from emu.kernel.tasks import cpu_curr
from emu.time import VirtualClock
from emu.trace.ftrace import Ftrace, FtraceOps

if TYPE_CHECKING:
    from emu.kernel.guestcall import ServiceContext

TRACEFS = ("/sys/kernel/debug/tracing", "/sys/kernel/tracing")
TRACERS = ("function", "nop")
ALL_FUNCTIONS = "#### all functions enabled ####\n"
BUFFER_ENTRIES = 65536
MAX_TRACER_SIZE = 100                 # kernel/trace/trace.c: what current_tracer reads of a write


@dataclass(frozen=True)
class TraceEntry:
    ns: int
    cpu: int
    comm: str
    pid: int
    function: str
    parent: str


class FunctionTracer:
    def __init__(self, prog: Program, ftrace: Ftrace, vfs: Vfs, nr_cpus: int, clock: VirtualClock) -> None:
        self.prog = prog
        self.ftrace = ftrace
        self.nr_cpus = nr_cpus
        self.clock = clock
        self.tracer = "nop"
        self.tracing_on = 1
        self.filter: list[int] = []           # sites; empty: every function
        self.entries: list[TraceEntry] = []
        self.written = 0
        self._ops: FtraceOps | None = None
        self._registered: list[int] = []
        for root in TRACEFS:
            vfs.register(f"{root}/current_tracer", self._show_tracer, self._store_tracer, mode=0o644)
            vfs.register(f"{root}/available_tracers", lambda: " ".join(TRACERS) + "\n", mode=0o444)
            vfs.register(f"{root}/set_ftrace_filter", self._show_filter, self._store_filter, mode=0o644,
                         on_open=self._open_filter)
            vfs.register(f"{root}/tracing_on", lambda: f"{self.tracing_on}\n", self._store_on, mode=0o644)
            vfs.register(f"{root}/trace", self.show_trace, write_stub, mode=0o644, on_open=self._open_trace)

    # ------------------------------------------------------------ the ops
    def _callback(self, cpu: Cpu) -> None:
        if not self.tracing_on:
            return
        prog, e = self.prog, cpu.engine
        site = e.reg("r11")
        parent = prog.mem.read_u64(e.reg("rsp") + 8)
        task = cpu_curr(prog, cpu.index)
        loc = prog.kallsyms.lookup(parent)
        self.written += 1
        if len(self.entries) >= BUFFER_ENTRIES:
            del self.entries[0]
        self.entries.append(TraceEntry(self.clock.ns, cpu.index, task.comm, task.pid,
                                       self.ftrace.sites.get(site, f"{site:#x}"),
                                       loc.symbol.name if loc else f"{parent:#x}"))

    def _sites(self) -> list[int]:
        return list(self.filter) if self.filter else list(self.ftrace.sites)

    def _attach(self) -> None:
        """(Re)register the ops on the filtered sites, if the function tracer is current."""
        ftrace = self.ftrace
        if self._ops is not None:
            ftrace.unregister_many(self._ops, self._registered)
            self._registered = []
        if self.tracer != "function":
            return
        if self._ops is None:
            self._ops = FtraceOps("function", 0, callback=ftrace.python_callback(self._callback))
        sites = [s for s in self._sites() if s in ftrace.sites]
        ftrace.register_many(self._ops, sites)
        self._registered = sites

    # ------------------------------------------------------------ files
    def _show_tracer(self) -> str:
        return f"{self.tracer}\n"

    def _store_tracer(self, ctx: "ServiceContext", text: str) -> int:
        """tracing_set_trace_write: the tracer named by the first
        MAX_TRACER_SIZE bytes, strim()med; the whole count is taken."""
        name = strim(text[:MAX_TRACER_SIZE])
        if name not in TRACERS:
            return -errno.EINVAL
        if name != self.tracer:
            self.tracer = name
            self._attach()
        return len(text)

    def _show_filter(self) -> str:
        if not self.filter:
            return ALL_FUNCTIONS
        return "".join(f"{self.ftrace.sites[s]}\n" for s in self.filter if s in self.ftrace.sites)

    def _open_filter(self, flags: int) -> "_FilterReplace | None":
        """ftrace_regex_open: an O_TRUNC open for writing starts from an
        empty filter (`>`: that open file's own _FilterReplace), any other
        from the current one (`>>` adds to it: _store_filter)."""
        return _FilterReplace(self) if truncating_write(flags) else None

    def _store_filter(self, ctx: "ServiceContext", text: str) -> int:
        """ftrace_regex_write on an open without O_TRUNC."""
        return self.add_to_filter(text, replace=False)[0]

    def add_to_filter(self, text: str, *, replace: bool) -> tuple[int, bool]:
        """ftrace_regex_write: the functions the words match are added to
        the filter (to an empty one if REPLACE); a word that matches none is
        -EINVAL. The count or -errno, and whether any function was added."""
        patterns = split_words(text)
        sites = self.ftrace.sites
        chosen = [s for s, name in sites.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        if patterns and not chosen:
            return -errno.EINVAL, False
        if chosen:
            kept = set() if replace else set(self.filter)
            self.filter = sorted(kept.union(chosen))
            self._attach()
        return len(text), bool(chosen)

    def clear_filter(self) -> None:
        if self.filter:
            self.filter = []
            self._attach()

    def _store_on(self, ctx: "ServiceContext", text: str) -> int:
        """rb_simple_write: kstrtoul_from_user(…, 10); the whole count is consumed."""
        try:
            self.tracing_on = int(kstrtoul_from_user(text.encode("latin-1"), 10) != 0)
        except ParseError as exc:
            return -exc.errno
        return len(text)

    def _open_trace(self, flags: int) -> None:
        """tracing_open: an O_TRUNC open for writing clears the buffer
        (`> trace`, `echo -n > trace`); writes are tracing_write_stub's."""
        if truncating_write(flags):
            self.entries.clear()
            self.written = 0

    def show_trace(self) -> str:
        n = len(self.entries)
        lines = [f"# tracer: {self.tracer}", "#",
                 f"# entries-in-buffer/entries-written: {n}/{self.written}   #P:{self.nr_cpus}",
                 "#",
                 "#           TASK-PID     CPU#  TIMESTAMP  FUNCTION",
                 "#              | |         |       |         |"]
        for e in self.entries:
            task = f"{e.comm}-{e.pid}"
            lines.append(f"{task:>22} [{e.cpu:03d}] {e.ns // 1000_000_000:5d}.{e.ns // 1000 % 1000_000:06d}: "
                         f"{e.function} <-{e.parent}")
        return "\n".join(lines) + "\n"


class _FilterReplace:
    """One `> set_ftrace_filter` open (ftrace_regex_open with O_TRUNC: its
    iterator's hash starts empty), kept with that open file as the kernel
    keeps it in file->private_data: another opener's writes and release
    neither see nor end it. The kernel edits the copy and installs it at
    release; here the filter in force is replaced at this file's first write
    that adds to it, or emptied at its release if none did, so that no
    function the open and write paths run is traced under an empty filter
    (every function) meanwhile."""

    def __init__(self, tracer: FunctionTracer) -> None:
        self.tracer = tracer
        self.pending = True               # nothing added yet: the filter is still to be replaced

    def store(self, ctx: "ServiceContext", text: str) -> int:
        ret, added = self.tracer.add_to_filter(text, replace=self.pending)
        if added:
            self.pending = False
        return ret

    def release(self) -> None:
        """ftrace_regex_release: a `>` that added nothing installs the empty filter."""
        if self.pending:
            self.tracer.clear_filter()
