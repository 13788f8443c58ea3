"""Snapshots of a machine: boot (and load modules) once, then start each
test, seed or schedule from that state in a child process of its own.

    snap = machine.snapshot()              # after boot() and the insmods
    dmesg = snap.run(lambda m: (m.insmod(path), m.dmesg())[1])

The snapshot is os.fork(). The child gets the machine as it is: RAM
copy-on-write (Ram is a private anonymous mapping, so a child touches
only the pages it writes), every CPU's Unicorn instance with its
registers and translation cache, and every Python part (modules, ftrace,
the livepatch core a layer above attached, a scenario runner) with the
state it has. Nothing is serialised or restored, and the parent never
changes: it is not where the run happens. An in-process restore (Unicorn
contexts and a copy of RAM) would also have to copy the state of every
Python part, which no part offers; a fork copies them all, for about the
cost of copying the page tables of the process (benchmarks/bench_startup.py
measures a run from a snapshot beside the same run after a fresh boot).
Only the calling thread is in the child: fn cannot use the parent's other
threads.

Snapshot.run(fn) calls fn(machine) in the child and returns what fn
returned, pickled back through a pipe. What fn raises is raised in the
caller, the same exception (its args and attributes), with the child's
traceback as its cause (ChildTraceback, as concurrent.futures does with a
worker's). A guest crash, hang or oops is what it is in-process: an
EmuError from the call that met it, or an oops in `m.oopses` and the
kernel log when the machine goes on. What cannot come back raises
SnapshotError naming why: a result that does not pickle, an exception
that does not, a child that died without reporting (a signal, os._exit).
The report is read to its length, so a process fn left running does not
hold the caller up, and a child that reported is reaped later, not waited
for: its exit (freeing its copy-on-write pages) overlaps the caller's work.

The machine must not run between snapshot() and run(): a fork takes the
machine as it is then, so a parent that ran on would hand its children a
different machine than the snapshot. run() checks this (virtual time,
rounds run, the kernel log's length) and refuses a stale snapshot.
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import struct
import sys
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Callable, Generic, NoReturn, TypeVar

from emu.errors import SnapshotError

M = TypeVar("M")
T = TypeVar("T")
_LEN = struct.Struct("<Q")
_CHILD_BROKE = 70                     # EX_SOFTWARE: the child could not even report


class ChildTraceback(Exception):
    """The traceback, as text, of an exception raised in a snapshot's child:
    the __cause__ of that exception when it is raised again in the parent."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"in the child process of the snapshot:\n{self.text}"


@dataclass(frozen=True)
class _Report:
    """What a child sends back: a pickled result, or a failure's pickled
    exception (None when it does not pickle) with its text and traceback."""
    ok: bool
    payload: bytes | None
    what: str = ""
    traceback: str = ""


def _rebuild(module: str, qualname: str, args: tuple[object, ...], state: dict[str, object]) -> BaseException:
    """An exception from its class's place, args and attributes, without
    calling its __init__ (whose signature need not match its args)."""
    cls = sys.modules[module]
    for name in qualname.split("."):
        cls = getattr(cls, name)
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _class_module(cls: type) -> str:
    """The module that holds `cls` (pytest's outcome exceptions claim to be builtins')."""
    module = sys.modules.get(cls.__module__)
    if module is not None and getattr(module, cls.__qualname__, None) is cls:
        return cls.__module__
    return next((name for name, module in list(sys.modules.items())
                 if getattr(module, cls.__qualname__, None) is cls), cls.__module__)


def _pickled_exception(exc: BaseException) -> bytes | None:
    """`exc` pickled so that it unpickles, or None: pickle's own way first,
    then by class, args and attributes."""
    for form in (exc, _Rebuilt(exc)):
        try:
            data = pickle.dumps(form, pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)
            return data
        except Exception:                       # noqa: BLE001 - any failure: try the next way
            continue
    return None


class _Rebuilt:
    """Pickles as a call of _rebuild (for exceptions whose __init__ does not take their args)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> tuple[object, ...]:
        cls = type(self.exc)
        return _rebuild, (_class_module(cls), cls.__qualname__, self.exc.args, dict(self.exc.__dict__))


class Snapshot(Generic[M]):
    """A machine kept as it is, to start runs from (each in a forked child).
    `mark()` says what the machine's state is (Machine: virtual time, rounds,
    the log's length): run() refuses a snapshot whose machine ran since."""

    def __init__(self, machine: M, mark: Callable[[], object]) -> None:
        self.machine = machine
        self._mark = mark
        self._taken = mark()

    @property
    def stale(self) -> bool:
        """True when the machine ran (or logged) since the snapshot was taken."""
        return self._mark() != self._taken

    def check(self) -> None:
        """SnapshotError if the snapshot is stale."""
        if self.stale:
            raise SnapshotError("the machine ran since this snapshot was taken: take a new snapshot, "
                                "and leave the machine alone while runs start from it")

    def run(self, fn: Callable[[M], T]) -> T:
        """fn(machine) on a copy of the snapshot, in a child process: its
        result (pickled), or its exception raised here with the child's
        traceback as the cause; SnapshotError when neither comes back."""
        __tracebackhide__ = True                  # pytest: the failure is fn's, not this frame's
        self.check()
        _reap_exited()
        for stream in (sys.stdout, sys.stderr):     # else the child's copy of the buffer prints twice
            stream.flush()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(self.machine, fn, write_fd)
        os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                raw = _read_report(pipe)
        except BaseException:                     # interrupted (^C): no orphan left running
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        report = _decode(raw, pid)
        if report.ok:
            assert report.payload is not None
            return pickle.loads(report.payload)
        if report.payload is None:
            raise SnapshotError(f"{report.what}\n{report.traceback}".rstrip())
        exc = pickle.loads(report.payload)
        raise exc from ChildTraceback(report.traceback)


_EXITING: list[int] = []          # children that reported and were still exiting (their mm torn down)
os.register_at_fork(after_in_child=_EXITING.clear)        # a forked process has no children yet


def _reap_exited() -> None:
    for pid in list(_EXITING):
        if os.waitpid(pid, os.WNOHANG)[0]:
            _EXITING.remove(pid)


def _read_report(pipe: BinaryIO) -> bytes:
    """The length-prefixed report, read to its length (not to EOF: a process
    fn started may hold the pipe open), or what came before EOF."""
    head = pipe.read(_LEN.size)
    if len(head) < _LEN.size:
        return head
    return head + pipe.read(_LEN.unpack(head)[0])


def _decode(raw: bytes, pid: int) -> _Report:
    """The child's report; a child that has reported is not waited for (its
    exit, which frees its copy-on-write pages, overlaps the caller's work)."""
    if len(raw) >= _LEN.size and len(raw) == _LEN.size + _LEN.unpack_from(raw)[0]:
        if not os.waitpid(pid, os.WNOHANG)[0]:
            _EXITING.append(pid)
        return pickle.loads(raw[_LEN.size:])
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        how = f"exit status {os.waitstatus_to_exitcode(status)}"
    raise SnapshotError(f"the child process of the snapshot died before it reported ({how})")


def _shown(tb: TracebackType | None) -> TracebackType | None:
    """The traceback without the frames that hide themselves (pytest's
    `__tracebackhide__`), as pytest would show it in-process."""
    kept = []
    while tb is not None:
        frame = tb.tb_frame
        if not (frame.f_locals.get("__tracebackhide__") or frame.f_globals.get("__tracebackhide__")):
            kept.append(tb)
        tb = tb.tb_next
    shown = None
    for entry in reversed(kept):
        shown = TracebackType(shown, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return shown


def _child(machine: M, fn: Callable[[M], object], write_fd: int) -> NoReturn:
    """Run fn, send the report, and leave without running the parent's
    exit handlers (pytest's, atexit's) or flushing its buffers again."""
    code = 0
    # what the child inherited is never garbage of its own: a collection
    # that walked it would write to (copy) every page of the parent's heap
    gc.freeze()
    try:
        report = _run_fn(machine, fn)
        data = pickle.dumps(report, pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(_LEN.pack(len(data)) + data)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:                         # noqa: BLE001 - nothing may unwind into the parent's code
        code = _CHILD_BROKE
    finally:
        os._exit(code)


def _run_fn(machine: M, fn: Callable[[M], object]) -> _Report:
    try:
        value = fn(machine)
    except BaseException as exc:                  # noqa: BLE001 - every failure goes to the parent
        text = "".join(traceback.format_exception(type(exc), exc, _shown(exc.__traceback__.tb_next)))   # from fn
        payload = _pickled_exception(exc)
        what = f"the run raised {type(exc).__qualname__}: {exc} (which cannot be pickled to reach the parent)"
        return _Report(False, payload, what, text)
    try:
        return _Report(True, pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception as exc:                      # noqa: BLE001 - pickle raises several types
        return _Report(False, None, f"the run's result ({type(value).__qualname__}) cannot be pickled to "
                                    f"reach the parent: {exc}")
