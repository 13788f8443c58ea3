"""The kernel's taint mask (kernel/panic.c, 6.12's 19 flags) and
print_tainted(), which every oops, lockup and hung-task report prints:
"Not tainted" until something taints the kernel, then "Tainted: " and one
letter per flag in the table's order, the flag's letter when set, else a
space (G for a kernel without proprietary modules)."""
from __future__ import annotations

from enum import IntEnum

# (set, clear) letters per flag, in taint_flags[] order
_LETTERS = ("PG", "F ", "S ", "R ", "M ", "B ", "U ", "D ", "A ", "W ", "C ", "I ", "O ", "E ", "L ", "K ",
            "X ", "T ", "N ")


class TaintFlag(IntEnum):
    """TAINT_* bit numbers (include/linux/panic.h): those the emulator sets."""
    DIE = 7                 # an oops
    OOT_MODULE = 12         # every module is out of tree
    LIVEPATCH = 15


class Taint:
    def __init__(self) -> None:
        self.mask = 0

    def add(self, flag: TaintFlag) -> None:
        """add_taint()"""
        self.mask |= 1 << flag

    def test(self, flag: TaintFlag) -> bool:
        return bool(self.mask >> flag & 1)

    def __str__(self) -> str:
        """print_tainted()"""
        if not self.mask:
            return "Not tainted"
        return "Tainted: " + "".join(letters[0] if self.mask >> i & 1 else letters[1]
                                     for i, letters in enumerate(_LETTERS))
