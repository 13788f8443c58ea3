"""The guest kernel as data, drgn-style: its memory, the vmlinux image, the
struct layouts the guest exports (its asm-offsets table) and kallsyms.

Everything that reads kernel objects (task views, the unwinder, the module
loader, the livepatch core) starts from a Program; none of it needs the
running machine.
"""
from __future__ import annotations

from emu.arch.memory import AddressSpace
from emu.elf.image import ElfImage
from emu.errors import EmuError
from emu.kernel.kallsyms import Kallsyms
from emu.kernel.taint import Taint


class Program:
    def __init__(self, mem: AddressSpace, image: ElfImage, kallsyms: Kallsyms) -> None:
        self.mem = mem
        self.image = image
        self.offsets = image.offsets()
        self.kallsyms = kallsyms
        self.taint = Taint()              # the kernel's tainted_mask
        self._pcpu_areas = self.symbol_address("pcpu_areas")

    def symbol_address(self, name: str) -> int:
        """A vmlinux symbol's address; EmuError when it has none of that name."""
        sym = self.image.find_symbol(name)
        if sym is None:
            raise EmuError(f"the kernel has no symbol {name}")
        return sym.address

    def symbolize(self, address: int) -> str:
        return self.kallsyms.symbolize(address)

    def per_cpu(self, index: int, field: str) -> int:
        """The address of a field of CPU `index`'s struct pcpu_area (PCPU_* offsets)."""
        return self._pcpu_areas + index * self.offsets["PCPU_size"] + self.offsets[field]

    def cpu_curr(self, index: int) -> int:
        """The task_struct running on CPU `index` (its per-CPU current_task)."""
        return self.mem.read_u64(self.per_cpu(index, "PCPU_current_task"))
