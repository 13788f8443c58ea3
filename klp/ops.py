"""klp_ops and dispatch (kernel/livepatch/patch.c).

One KlpOps per patched original function holds its func_stack (newest
first) and the ftrace ops that owns the function's fentry site (IPMODIFY |
PERMANENT, as the kernel's). Two backends choose, per call, which func runs,
with the kernel's klp_ftrace_handler logic:

- **native** (the default): no Python per call. Outside a transition the
  answer is the same for every task, so the site jumps straight to the head
  func's new_func (stays a NOP for a nop func: the original runs). During a
  transition the site jumps to a per-function trampoline that reads a
  record the core keeps current:

      current->patch_state != UNPATCHED -> jmp [record.target]
      record.transition == 0            -> jmp [record.target]
      otherwise                         -> jmp [record.prev]

  target is the head func's new_func (the original body, old_func+5, for a
  nop); prev is the next func's, or the original when there is none. The
  task's state is tested first, as the trampoline only runs during a
  transition, where most tasks are soon patched: their path is 4
  instructions. It clobbers r11, free at a function's entry (SysV ABI).
- **python**: the site jumps to a stub `jmp old_func+5` whose first
  instruction carries a Unicorn code hook running the same selection on the
  func_stack itself and setting RIP (slow: for tracing and cross-checking).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from emu.trace.ftrace import FTRACE_OPS_FL_IPMODIFY, FTRACE_OPS_FL_PERMANENT, JMP, FtraceOps, rel32_insn
from emu.trace.slots import SlotPool
from klp.errors import LivepatchError
from klp.objects import KlpFunc, KlpState

if TYPE_CHECKING:
    from emu import Machine
    from emu.arch.cpu import Cpu

BACKENDS = ("native", "python")
RECORD_SIZE = 24            # u64 target, u64 prev, u8 transition (+pad)
TRAMPOLINE_SIZE = 48


def trampoline_code(tramp: int, record: int, current_offset: int, patch_state_offset: int) -> bytes:
    """The x86 code of one native trampoline at `tramp` reading the record at
    `record`; gs:[current_offset] is current, [current + patch_state_offset]
    its patch_state."""
    code = bytearray()

    def rip(disp_target: int, insn_len: int) -> bytes:
        return struct.pack("<i", disp_target - (tramp + len(code) + insn_len))
    code += b"\x65\x4c\x8b\x1c\x25" + struct.pack("<i", current_offset)  # mov r11, gs:[current]
    code += b"\x41\x83\xbb" + struct.pack("<i", patch_state_offset) + b"\x00"  # cmp dword [r11+ps], 0
    code += b"\x75\x0f"                                           # jne target
    code += b"\x80\x3d" + rip(record + 16, 7) + b"\x00"            # cmp byte [rip+transition], 0
    code += b"\x74\x06"                                           # je target
    code += b"\xff\x25" + rip(record + 8, 6)                       # jmp [prev]
    code += b"\xff\x25" + rip(record, 6)                           # target: jmp [target]
    assert len(code) <= TRAMPOLINE_SIZE
    return bytes(code)


@dataclass(eq=False)
class KlpOps:
    old_func: int
    site: int
    trampoline: int
    record: int
    fops: FtraceOps
    func_stack: list[KlpFunc] = field(default_factory=list)   # newest first
    hooks: list[Callable[[], None]] = field(default_factory=list)  # python backend: removers


class Dispatch:
    """Trampolines and records in the module area; sites owned through ftrace."""

    def __init__(self, machine: "Machine", backend: str = "native", permanent: bool = True) -> None:
        """`permanent`: the ops are FTRACE_OPS_FL_PERMANENT (5.5+), so that
        kernel.ftrace_enabled cannot go to 0 under a livepatch; before, it
        could, and silently took every patch out of effect."""
        if backend not in BACKENDS:
            raise LivepatchError(f"unknown dispatch backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.machine = machine
        self.backend = backend
        self._flags = FTRACE_OPS_FL_IPMODIFY | (FTRACE_OPS_FL_PERMANENT if permanent else 0)
        self.ops: dict[int, KlpOps] = {}
        self._trampolines = SlotPool(machine.modules.alloc_pages, TRAMPOLINE_SIZE)
        self._records = SlotPool(machine.modules.alloc_pages, RECORD_SIZE)
        self._patch_state = machine.offsets["TASK_patch_state"]
        self._current = machine.offsets["PCPU_current_task"]
        self.python_calls = 0           # calls the python backend dispatched

    def find_ops(self, old_func: int) -> KlpOps | None:
        return self.ops.get(old_func)

    def push(self, func: KlpFunc) -> int:
        """klp_patch_func: the first func for an address registers the ops.
        0, or the -errno of the ftrace registration."""
        ops = self.ops.get(func.old_func)
        if ops is not None:
            ops.func_stack.insert(0, func)
            self.sync(ops)
            func.patched = True
            return 0
        m = self.machine
        tramp, record = self._trampolines.take(), self._records.take()
        fops = FtraceOps("klp", self._flags, target=tramp)
        ops = KlpOps(func.old_func, func.old_func, tramp, record, fops, [func])
        self.sync(ops)
        if self.backend == "native":
            m.text_poke(tramp, trampoline_code(tramp, record, self._current, self._patch_state))
        else:
            m.text_poke(tramp, rel32_insn(JMP, tramp, ops.old_func + 5))
            ops.hooks = [cpu.engine.hook_code_at(tramp, self._python_handler(ops, cpu)) for cpu in m.cpus]
        ret = m.ftrace.register(fops, ops.site)
        if ret:
            self._release(ops)
            return ret
        self.ops[func.old_func] = ops
        func.patched = True
        return 0

    def pop(self, func: KlpFunc) -> None:
        """klp_unpatch_func: the last func of an address unregisters the ops."""
        ops = self.ops[func.old_func]
        ops.func_stack.remove(func)
        if not ops.func_stack:
            self.machine.ftrace.unregister(ops.fops, ops.site)
            del self.ops[func.old_func]
            self._release(ops)
        else:
            self.sync(ops)
        func.patched = False

    def _release(self, ops: KlpOps) -> None:
        for remove in ops.hooks:
            remove()
        ops.hooks = []
        self._trampolines.give(ops.trampoline)
        self._records.give(ops.record)

    def sync(self, ops: KlpOps) -> None:
        """Write the record the trampoline reads; with the native backend, also
        point the site at the trampoline during a transition and straight at
        the answer outside one."""
        original = ops.old_func + 5

        def entry(f: KlpFunc) -> int:
            return original if f.nop else f.new_func
        head = ops.func_stack[0]
        prev = entry(ops.func_stack[1]) if len(ops.func_stack) > 1 else original
        self.machine.mem.write(ops.record, struct.pack("<QQB7x", entry(head), prev, int(head.transition)))
        if self.backend == "native":
            self.machine.ftrace.retarget(ops.fops, ops.site, ops.trampoline if head.transition else entry(head))

    def sync_all(self) -> None:
        for ops in self.ops.values():
            self.sync(ops)

    # ------------------------------------------------------------ python backend
    def _python_handler(self, ops: KlpOps, cpu: "Cpu") -> Callable[[], None]:
        m, engine = self.machine, cpu.engine

        def klp_ftrace_handler() -> None:
            self.python_calls += 1
            func: KlpFunc | None = ops.func_stack[0]
            if func.transition:
                task = m.current_task(cpu)
                state = int.from_bytes(m.mem.read(task + self._patch_state, 4), "little", signed=True)
                if state == KlpState.UNPATCHED:
                    func = ops.func_stack[1] if len(ops.func_stack) > 1 else None
            if func is not None and not func.nop:
                engine.set_reg("rip", func.new_func)
        return klp_ftrace_handler

