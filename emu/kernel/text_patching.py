"""text_poke: writing guest code while it may be running.

Writes happen with every CPU stopped (stop_machine), then every CPU drops
its translations of the range, the emulator's sync_core IPI: Unicorn does
not notice host writes to code (field notes §4).
"""
from __future__ import annotations

from typing import Callable

from emu.arch.cpu import Cpu
from emu.arch.memory import AddressSpace


class TextPatcher:
    def __init__(self, mem: AddressSpace, cpus: list[Cpu], stop_machine: Callable[[Callable[[], None]], None]) -> None:
        self.mem = mem
        self.cpus = cpus
        self.stop_machine = stop_machine

    def poke(self, address: int, data: bytes) -> None:
        self.poke_many([(address, data)])

    def poke_many(self, writes: list[tuple[int, bytes]]) -> None:
        """Several code writes in one stop_machine."""
        def poke() -> None:
            for address, data in writes:
                self.mem.write(address, data)
                self.invalidate(address, len(data))
        self.stop_machine(poke)

    def invalidate(self, address: int, size: int) -> None:
        """Drop every CPU's translations of [address, address+size) (new code
        written while nothing ran it, e.g. a module's image)."""
        for cpu in self.cpus:
            cpu.engine.invalidate(address, size)
