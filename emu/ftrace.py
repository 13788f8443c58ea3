"""ftrace: the fentry call sites of every traceable function, and rewriting them.

At start-up every `__mcount_loc` site (a 5-byte `call __fentry__`) becomes the
5-byte NOP, before any CPU runs. Rewriting a site later happens with every
CPU stopped (stop_machine) and drops every CPU's translated code for it:
Unicorn does not notice host writes to code (field notes §4).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .errors import EmuError, ImageError

if TYPE_CHECKING:
    from .machine import Machine

NOP5 = bytes.fromhex("0f1f440000")
CALL, JMP = 0xE8, 0xE9


def rel32_insn(opcode: int, site: int, target: int) -> bytes:
    """`call`/`jmp` rel32 at `site` to `target`."""
    disp = target - (site + 5)
    if not -(1 << 31) <= disp < (1 << 31):
        raise EmuError(f"{target:#x} is out of rel32 reach of {site:#x}")
    return bytes([opcode]) + struct.pack("<i", disp)


class Ftrace:
    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        fentry = machine.symbol_address("__fentry__")
        self.sites: dict[int, str] = {}
        for site in machine.kernel.mcount_sites():
            insn = machine.mem.read(site, 5)
            if insn != rel32_insn(CALL, site, fentry):
                raise ImageError(f"__mcount_loc entry {site:#x} is not a call to __fentry__: {insn.hex()}")
            loc = machine.kallsyms.lookup(site)
            if loc is None or loc.offset != 0:
                raise ImageError(f"fentry site {site:#x} is not at the start of a function")
            self.sites[site] = loc.symbol.name
            machine.mem.write(site, NOP5)
        self._module_sites: dict[str, list[int]] = {}

    def add_module_sites(self, module: str, sites: list[int]) -> None:
        """A loaded module's sites (already NOPed by the loader)."""
        for site in sites:
            loc = self.machine.kallsyms.lookup(site)
            self.sites[site] = loc.symbol.name if loc else f"{site:#x}"
        self._module_sites[module] = list(sites)

    def remove_module_sites(self, module: str) -> None:
        for site in self._module_sites.pop(module, []):
            self.sites.pop(site, None)

    def site_of(self, function: str) -> int:
        """The fentry site of a traceable vmlinux function; EmuError if it has none."""
        address = self.machine.kallsyms.find(function)
        if address is None or address.address not in self.sites:
            raise EmuError(f"{function} has no fentry site (notrace, inlined or unknown)")
        return address.address

    def is_site(self, address: int) -> bool:
        return address in self.sites

    def read_site(self, site: int) -> bytes:
        return self.machine.mem.read(site, 5)

    def write_site(self, site: int, insn: bytes) -> None:
        """Replace the 5 bytes at a site, with all CPUs stopped, coherently on each."""
        if site not in self.sites:
            raise EmuError(f"{site:#x} is not an ftrace site")
        if len(insn) != 5:
            raise EmuError("an ftrace site holds exactly 5 bytes")
        self.machine.text_poke(site, insn)

    def reset_site(self, site: int) -> None:
        self.write_site(site, NOP5)
