"""Small fixed-size slots of module-area memory for generated code and its
data: ftrace chains, kprobe stubs, livepatch trampolines and records.

Freed slots are reused first-in first-out: a task preempted inside generated
code may still be there when its user goes away, so a slot is rewritten as
late as possible (the kernel waits for an RCU-tasks grace period instead).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from emu.errors import EmuError

PAGE = 4096


class SlotPool:
    def __init__(self, alloc_pages: Callable[[int], int], size: int) -> None:
        """`alloc_pages(size)`: fresh page-aligned module-area memory (module_alloc)."""
        if not 0 < size <= PAGE:
            raise EmuError(f"a slot holds 1 to {PAGE} bytes, not {size}")
        self.alloc_pages = alloc_pages
        self.size = size
        self._free: deque[int] = deque()

    def take(self) -> int:
        if not self._free:
            page = self.alloc_pages(PAGE)
            self._free.extend(range(page, page + PAGE - self.size + 1, self.size))
        return self._free.popleft()

    def give(self, slot: int) -> None:
        self._free.append(slot)
