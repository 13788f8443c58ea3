"""Virtual time: one clock per machine, advanced by the run loop as the CPUs
execute (NS_PER_INSN per instruction), skipped ahead when every CPU idles."""
from __future__ import annotations

from emu.abi import HZ

NS_PER_INSN = 50                      # 20 M instructions per virtual second per CPU
NSEC_PER_SEC = 1_000_000_000
TICK_NS = NSEC_PER_SEC // HZ


class VirtualClock:
    """Nanoseconds since boot; `ns` is read by whoever stamps an event."""

    __slots__ = ("ns",)

    def __init__(self) -> None:
        self.ns = 0

    def next_tick(self) -> int:
        """The first jiffy boundary after now."""
        return (self.ns // TICK_NS + 1) * TICK_NS
