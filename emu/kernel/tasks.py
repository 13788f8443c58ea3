"""Views of guest task_structs, read from guest memory on each access."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu.machine import Machine

PF_IDLE = 0x2
PF_KTHREAD = 0x00200000
TIF_PATCH_PENDING = 13
_STATE_LETTERS = {0: "R", 1: "S", 2: "D", 4: "T", 0x10: "X", 0x20: "Z", 0x80: "X"}


class TaskView:
    """A guest `struct task_struct` at `address` (offsets from the guest's table)."""

    __slots__ = ("machine", "address")

    def __init__(self, machine: "Machine", address: int) -> None:
        self.machine = machine
        self.address = address

    def _u64(self, field: str) -> int:
        return self.machine.mem.read_u64(self.address + self.machine.offsets[field])

    def _s32(self, field: str) -> int:
        return self.machine.mem.read_s32(self.address + self.machine.offsets[field])

    @property
    def pid(self) -> int:
        return self._s32("TASK_pid")

    @property
    def comm(self) -> str:
        return self.machine.mem.read_cstr(self.address + self.machine.offsets["TASK_comm"], 16)

    @property
    def state(self) -> int:
        return self._s32("TASK_state") & 0xFFFFFFFF

    @property
    def state_letter(self) -> str:
        if self.state == 0:
            return "R"
        return next((l for bit, l in _STATE_LETTERS.items() if bit and self.state & bit), "?")

    @property
    def cpu(self) -> int:
        return self._s32("TASK_cpu")

    @property
    def flags(self) -> int:
        return self._s32("TASK_flags") & 0xFFFFFFFF

    @property
    def ti_flags(self) -> int:
        return self._u64("TASK_flags_ti")

    @property
    def is_kthread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def is_idle(self) -> bool:
        return bool(self.flags & PF_IDLE)

    @property
    def on_cpu(self) -> bool:
        return bool(self._s32("TASK_on_cpu"))

    @property
    def patch_state(self) -> int:
        return self._s32("TASK_patch_state")

    @property
    def stack(self) -> int:
        return self._u64("TASK_stack")

    @property
    def thread_sp(self) -> int:
        return self._u64("TASK_thread_sp")

    @property
    def nvcsw(self) -> int:
        return self._u64("TASK_nvcsw")

    @property
    def nivcsw(self) -> int:
        return self._u64("TASK_nivcsw")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskView) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"<task {self.pid} {self.comm} at {self.address:#x}>"
