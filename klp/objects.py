"""The livepatch data model (include/linux/livepatch.h), read from guest memory.

The author's fields (old_name, new_func, callbacks …) are read from the
module's structs; the core's bookkeeping lives here and is mirrored into
the guest structs where guest code can observe it (obj->mod, func->old_func,
the patched/transition flags, post_unpatch_enabled).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emu import Machine
    from emu.module.manager import Module

KSYM_NAME_LEN = 512
MODULE_NAME_LEN = 56


class KlpState(IntEnum):
    """KLP_TRANSITION_* (KLP_UNDEFINED/UNPATCHED/PATCHED before 6.9)."""
    IDLE = -1
    UNPATCHED = 0
    PATCHED = 1


@dataclass(eq=False)
class KlpFunc:
    old_name: str | None               # None: NULL, which klp_init_func refuses
    new_func: int
    old_sympos: int
    struct: int | None                 # the guest klp_func (None for a dynamic nop)
    nop: bool = False
    old_func: int = 0
    old_size: int = 0
    new_size: int = 0
    patched: bool = False
    transition: bool = False
    immediate: bool = False            # 4.12-4.15: no stack check for this func

    @property
    def sysfs_name(self) -> str:
        return f"{self.old_name},{self.old_sympos or 1}"


@dataclass(eq=False)
class KlpObject:
    name: str | None                   # None: vmlinux
    struct: int | None                 # the guest klp_object (None when dynamic)
    funcs: list[KlpFunc]
    pre_patch: int = 0
    post_patch: int = 0
    pre_unpatch: int = 0
    post_unpatch: int = 0
    dynamic: bool = False
    mod: "Module | None" = None
    patched: bool = False
    post_unpatch_enabled: bool = False

    @property
    def display_name(self) -> str:
        return self.name or "vmlinux"

    @property
    def loaded(self) -> bool:
        return self.name is None or self.mod is not None


@dataclass(frozen=True)
class KlpStateEntry:
    id: int
    version: int
    struct: int


@dataclass(eq=False)
class KlpPatch:
    name: str
    struct: int
    module: "Module"
    objs: list[KlpObject]
    states: list[KlpStateEntry]
    replace: bool
    enabled: bool = False
    forced: bool = False
    immediate: bool = False            # 4.12-4.15: no per-task consistency model

    def funcs(self):
        for obj in self.objs:
            yield from ((obj, f) for f in obj.funcs)


@dataclass
class GuestStructs:
    """Readers and writers for the guest's klp structs (offsets from the guest)."""
    machine: "Machine"
    o: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.o = self.machine.offsets

    def u64(self, addr: int, field_name: str) -> int:
        return self.machine.mem.read_u64(addr + self.o[field_name])

    def u8(self, addr: int, field_name: str) -> int:
        return self.machine.mem.read(addr + self.o[field_name], 1)[0]

    def u32(self, addr: int, field_name: str) -> int:
        return self.machine.mem.read_u32(addr + self.o[field_name])

    def cstr(self, pointer: int, limit: int) -> str | None:
        return None if pointer == 0 else self.machine.mem.read_cstr(pointer, limit + 1)

    def set_u64(self, addr: int | None, field_name: str, value: int) -> None:
        if addr is not None:
            self.machine.mem.write_u64(addr + self.o[field_name], value)

    def set_bool(self, addr: int | None, field_name: str, value: bool) -> None:
        if addr is not None:
            self.machine.mem.write(addr + self.o[field_name], bytes([int(value)]))
