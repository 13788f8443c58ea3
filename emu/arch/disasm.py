"""Capstone, loaded when first needed: importing it costs ~60 ms, and a run
whose unwind rows and stack switches come from the cache needs it only for
a fault's operands or a kprobe."""
from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capstone import Cs


@cache
def disassembler(detail: bool = False) -> "Cs":
    """An x86-64 Capstone instance, with operand details or without."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    cs.detail = detail
    return cs
