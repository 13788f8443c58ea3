"""klp_ops and dispatch (kernel/livepatch/patch.c).

One KlpOps per patched original function holds its func_stack (newest
first). Dispatch is the kernel's klp_ftrace_handler, compiled: the function's
fentry site becomes `jmp trampoline`, and the trampoline reads a record that
the core keeps current (no Python per call):

    record.transition == 0            -> jmp [record.target]
    current->patch_state != UNPATCHED -> jmp [record.target]
    otherwise                         -> jmp [record.prev]

where target is the head func's new_func (or the original body, old_func+5,
for a nop) and prev is the next func's, or the original when there is none.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.ftrace import JMP, rel32_insn

from .objects import KlpFunc

if TYPE_CHECKING:
    from emu import Machine

RECORD_SIZE = 24            # u64 target, u64 prev, u8 transition (+pad)
TRAMPOLINE_SIZE = 48
GS_CURRENT = 8              # gs:8 is current (struct pcpu.current_task)


def trampoline_code(tramp: int, record: int, patch_state_offset: int) -> bytes:
    """The x86 code of one trampoline at `tramp` reading the record at `record`."""
    code = bytearray()

    def rip(disp_target: int, insn_len: int) -> bytes:
        return struct.pack("<i", disp_target - (tramp + len(code) + insn_len))
    # cmp byte ptr [rip + transition], 0
    code += b"\x80\x3d" + rip(record + 16, 7) + b"\x00"
    code += b"\x75\x06"                                           # jne slow
    code += b"\xff\x25" + rip(record, 6)                           # jmp [target]
    # slow:
    code += b"\x50"                                               # push rax
    code += b"\x65\x48\x8b\x04\x25" + struct.pack("<i", GS_CURRENT)  # mov rax, gs:[8]
    code += b"\x83\xb8" + struct.pack("<i", patch_state_offset) + b"\x00"  # cmp dword [rax+ps], 0
    code += b"\x58"                                               # pop rax
    code += b"\x74\x06"                                           # je unpatched
    code += b"\xff\x25" + rip(record, 6)                           # jmp [target]
    code += b"\xff\x25" + rip(record + 8, 6)                       # unpatched: jmp [prev]
    assert len(code) <= TRAMPOLINE_SIZE
    return bytes(code)


@dataclass(eq=False)
class KlpOps:
    old_func: int
    site: int
    trampoline: int
    record: int
    func_stack: list[KlpFunc] = field(default_factory=list)   # newest first


class Dispatch:
    """Trampolines and records in the module area; site rewrites via ftrace."""

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.ops: dict[int, KlpOps] = {}
        self._free: list[tuple[int, int]] = []                # (trampoline, record) slots
        self._patch_state = machine.offsets["TASK_patch_state"]

    def find_ops(self, old_func: int) -> KlpOps | None:
        return self.ops.get(old_func)

    def _slot(self) -> tuple[int, int]:
        if not self._free:
            m = self.machine
            text = m.modules.alloc_pages(4096)
            data = m.modules.alloc_pages(4096)
            per_page = 4096 // TRAMPOLINE_SIZE
            self._free = [(text + i * TRAMPOLINE_SIZE, data + i * RECORD_SIZE) for i in range(per_page)]
            self._free.reverse()
        return self._free.pop()

    def push(self, func: KlpFunc) -> None:
        """klp_patch_func: first func for an address registers the ops."""
        ops = self.ops.get(func.old_func)
        if ops is None:
            m = self.machine
            tramp, record = self._slot()
            ops = KlpOps(func.old_func, func.old_func, tramp, record)
            ops.func_stack.insert(0, func)
            self.ops[func.old_func] = ops
            self.sync(ops)
            m.text_poke(tramp, trampoline_code(tramp, record, self._patch_state))
            m.ftrace.write_site(ops.site, rel32_insn(JMP, ops.site, tramp))
        else:
            ops.func_stack.insert(0, func)
            self.sync(ops)
        func.patched = True

    def pop(self, func: KlpFunc) -> None:
        """klp_unpatch_func: the last func of an address unregisters the ops."""
        ops = self.ops[func.old_func]
        ops.func_stack.remove(func)
        if not ops.func_stack:
            self.machine.ftrace.reset_site(ops.site)
            del self.ops[func.old_func]
            self._free.append((ops.trampoline, ops.record))
        else:
            self.sync(ops)
        func.patched = False

    def sync(self, ops: KlpOps) -> None:
        """Write the record the trampoline reads (data: no code invalidation)."""
        original = ops.old_func + 5

        def entry(f: KlpFunc) -> int:
            return original if f.nop else f.new_func
        head = ops.func_stack[0]
        prev = entry(ops.func_stack[1]) if len(ops.func_stack) > 1 else original
        self.machine.mem.write(ops.record, struct.pack("<QQB7x", entry(head), prev, int(head.transition)))

    def sync_all(self) -> None:
        for ops in self.ops.values():
            self.sync(ops)
