"""The quantum budget as a native Unicorn block hook, or its Python fallback.

A budget of N bytes lets blocks start while it is positive, each taking its
size; the first block that starts with it spent stops the CPU. The native
hook (budget.c, built by the install as `_budget`) runs no Python per block;
the fallback does the same arithmetic in a Python UC_HOOK_BLOCK callback, so
both stop at the same block. KLPEMU_NATIVE=0 in the environment selects the
fallback even when the library is present.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import cache

from unicorn import UC_HOOK_BLOCK, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib


class _Budget(ctypes.Structure):
    _fields_ = [("remaining", ctypes.c_int64), ("blocks", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64), ("emu_stop", ctypes.c_void_p)]


@cache
def library() -> ctypes.CDLL | None:
    """The native library, or None when it was not built or KLPEMU_NATIVE=0."""
    if os.environ.get("KLPEMU_NATIVE", "1") == "0":
        return None
    spec = importlib.util.find_spec("emu.arch.native._budget")
    if spec is None or not spec.origin:
        return None
    return ctypes.CDLL(spec.origin)


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
            uc.__dict__.setdefault("_klpemu_native_budgets", []).append(self._state)
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
