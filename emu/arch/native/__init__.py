"""Native Unicorn hooks (native.c, built by the install as `_native`, loaded
with ctypes), or their Python fallbacks with the same effect.

- BlockBudget: a budget of N bytes lets blocks start while it is positive,
  each taking its size; the first block that starts with it spent stops the
  CPU. The fallback does the same arithmetic in a Python UC_HOOK_BLOCK
  callback, so both stop at the same block.
- hook_syscall_entry: `syscall` entered in C (the engine's Python entry is
  the fallback).
- hook_hypercall: the hypercall site's registers read and written in C
  around a Python service (the engine's code hook with batched register
  calls is the fallback).

KLPEMU_NATIVE=0 in the environment selects the fallbacks even when the
library is present.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from functools import cache
from typing import Callable, Sequence

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INSN, Uc, UcError
from unicorn.x86_const import UC_X86_INS_SYSCALL
from unicorn.unicorn_py3.unicorn import uclib

log = logging.getLogger(__name__)


class _Budget(ctypes.Structure):
    _fields_ = [("remaining", ctypes.c_int64), ("blocks", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64), ("emu_stop", ctypes.c_void_p)]


HOOKS = ("klpemu_budget_block", "klpemu_syscall_entry", "klpemu_hypercall")   # what native.c exports


@cache
def library() -> ctypes.CDLL | None:
    """The native library, or None when it was not built, was built from an
    older native.c (it lacks a hook: a warning says to rebuild), or
    KLPEMU_NATIVE=0."""
    if os.environ.get("KLPEMU_NATIVE", "1") == "0":
        return None
    spec = importlib.util.find_spec("emu.arch.native._native")
    if spec is None or not spec.origin:
        return None
    lib = ctypes.CDLL(spec.origin)
    missing = [name for name in HOOKS if not hasattr(lib, name)]
    if missing:
        log.warning("%s lacks %s (built from an older native.c): the Python fallbacks run instead; "
                    "rebuild it with `pip install -e .`", spec.origin, ", ".join(missing))
        return None
    return lib


class BlockBudget:
    """A budget hook on one Unicorn instance (native when available)."""

    def __init__(self, uc: Uc) -> None:
        self._state = _Budget()
        self._state.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        self.native = library() is not None
        if self.native:
            lib = library()
            handle = ctypes.c_size_t()
            err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK,
                                    ctypes.cast(lib.klpemu_budget_block, ctypes.c_void_p),
                                    ctypes.cast(ctypes.byref(self._state), ctypes.c_void_p), 1, 0)
            if err:
                raise UcError(err)
            # the C hook holds a pointer to the state: it lives as long as the
            # Unicorn instance does, not as long as this object
            uc.__dict__.setdefault("_klpemu_native_state", []).append(self._state)
        else:
            uc.hook_add(UC_HOOK_BLOCK, self._on_block)

    def _on_block(self, uc: Uc, address: int, size: int, data: object) -> None:
        state = self._state
        if state.remaining <= 0:
            uc.emu_stop()
            return
        state.remaining -= size
        state.blocks += 1
        state.bytes += size

    def arm(self, nbytes: int) -> None:
        """Let blocks of `nbytes` bytes in all start before the CPU stops."""
        self._state.remaining = nbytes

    @property
    def remaining(self) -> int:
        return self._state.remaining

    @property
    def blocks(self) -> int:
        """Blocks started since the hook was added."""
        return self._state.blocks

    @property
    def started_bytes(self) -> int:
        """Bytes of the blocks started since the hook was added."""
        return self._state.bytes


class _Syscall(ctypes.Structure):
    _fields_ = [("kernel_context", ctypes.c_void_p), ("entry", ctypes.c_uint64),
                ("rflags", ctypes.c_uint64), ("entries", ctypes.c_uint64),
                ("reg_read_batch", ctypes.c_void_p), ("reg_write_batch", ctypes.c_void_p),
                ("context_restore", ctypes.c_void_p),
                ("ids", ctypes.c_int * 18), ("vals", ctypes.c_uint64 * 18), ("ptrs", ctypes.c_void_p * 18)]


def hook_syscall_entry(uc: Uc, kernel_context: object, entry: int, rflags: int, reg_ids: list[int]) -> bool:
    """Enter `syscall` natively on `uc`: restore `kernel_context` (a
    UcContext at CPL 0), rcx/r11 as the instruction sets them, rflags =
    `rflags`, rip = `entry`. `reg_ids`: the 16 GPRs in the engine's
    order (rax rbx rcx rdx rsi rdi rbp rsp r8-r15), rip, rflags. False when
    there is no native library (the caller keeps its Python entry)."""
    lib = library()
    if lib is None:
        return False
    state = _Syscall()
    state.kernel_context = ctypes.cast(kernel_context.context, ctypes.c_void_p).value
    state.entry, state.rflags = entry, rflags
    for field, fn in (("reg_read_batch", uclib.uc_reg_read_batch), ("reg_write_batch", uclib.uc_reg_write_batch),
                      ("context_restore", uclib.uc_context_restore)):
        setattr(state, field, ctypes.cast(fn, ctypes.c_void_p).value)
    state.ids[:] = reg_ids
    handle = ctypes.c_size_t()
    err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INSN,
                            ctypes.cast(lib.klpemu_syscall_entry, ctypes.c_void_p),
                            ctypes.cast(ctypes.byref(state), ctypes.c_void_p), ctypes.c_uint64(1),
                            ctypes.c_uint64(0), ctypes.c_int(UC_X86_INS_SYSCALL))
    if err:
        raise UcError(err)
    # the hook holds pointers to the state and the context: keep both with the instance
    uc.__dict__.setdefault("_klpemu_native_state", []).extend((state, kernel_context))
    return True


class HypercallState(ctypes.Structure):
    """struct klpemu_hypercall: `regs` as the site had them; a service that
    returns sets ret_rax, ret_rsp (the C side's ret[2]), ret_rip and `returning`."""
    _fields_ = [("regs", ctypes.c_uint64 * 6), ("ret_rax", ctypes.c_uint64), ("ret_rsp", ctypes.c_uint64),
                ("ret_rip", ctypes.c_uint64),
                ("returning", ctypes.c_int64), ("service", ctypes.c_void_p),
                ("reg_read_batch", ctypes.c_void_p), ("reg_write_batch", ctypes.c_void_p),
                ("reg_write", ctypes.c_void_p),
                ("read_ids", ctypes.c_int * 6), ("ret_ids", ctypes.c_int * 2), ("rip_id", ctypes.c_int)]


_SERVICE = ctypes.CFUNCTYPE(None)


def hook_hypercall(uc: Uc, address: int, state: HypercallState, service: Callable[[], None],
                   read_ids: Sequence[int], ret_ids: Sequence[int], rip_id: int) -> bool:
    """Serve the hypercall site `address` on `uc` natively: the registers
    `read_ids` (6: the number, 4 arguments, rsp) are read into `state`,
    service() runs, and when it sets `returning` the registers `ret_ids`
    (2: rax, rsp) and then `rip_id` get its values. False when there is no
    native library (the caller hooks the site in Python)."""
    lib = library()
    if lib is None:
        return False
    callback = _SERVICE(service)
    state.service = ctypes.cast(callback, ctypes.c_void_p).value
    for field, fn in (("reg_read_batch", uclib.uc_reg_read_batch), ("reg_write_batch", uclib.uc_reg_write_batch),
                      ("reg_write", uclib.uc_reg_write)):
        setattr(state, field, ctypes.cast(fn, ctypes.c_void_p).value)
    state.read_ids[:], state.ret_ids[:], state.rip_id = list(read_ids), list(ret_ids), rip_id
    handle = ctypes.c_size_t()
    err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_CODE,
                            ctypes.cast(lib.klpemu_hypercall, ctypes.c_void_p),
                            ctypes.cast(ctypes.byref(state), ctypes.c_void_p), ctypes.c_uint64(address),
                            ctypes.c_uint64(address))
    if err:
        raise UcError(err)
    # the hook holds pointers to the state and the callback: keep both with the instance
    uc.__dict__.setdefault("_klpemu_native_state", []).extend((state, callback))
    return True
