"""The one module that talks to Unicorn: a CPU engine per emulated CPU.

Field-notes facts this module encodes:
- the binding's reg_read/reg_write cost ~2.6 µs; direct ctypes calls ~0.75 µs;
- hooks are applied when a block is translated, and `count=` quanta would
  put a counting hook on every instruction and stop TCG chaining blocks, so
  a quantum is a budget of block bytes taken by a native block hook
  (emu.arch.native), finished, now and then, by a short precise tail into
  the next block (an `until` exit inside it);
- host writes to code need ctl_remove_cache on every instance;
- a hook's exception is hidden when emu_start itself fails: we keep it
  ourselves and re-raise it chained to the Unicorn error.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Sequence

from unicorn import (UC_ARCH_X86, UC_ERR_EXCEPTION, UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED,
                     UC_ERR_INSN_INVALID, UC_ERR_READ_PROT, UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_PROT,
                     UC_ERR_WRITE_UNMAPPED, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_MEM_INVALID, UC_MODE_64,
                     UC_PROT_ALL, Uc, UcError)
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from emu.arch.memory import Ram, is_canonical
from emu.arch import native
from emu.arch.native import BlockBudget
from emu.arch.disasm import disassembler
from emu.arch.straight_line import straight_line_end
from emu.errors import BadGuestAddress

if TYPE_CHECKING:
    from capstone import CsInsn

MSR_EFER = 0xC0000080
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
EFER_SCE, EFER_LME, EFER_LMA = 0x1, 0x100, 0x400
CR0_PE, CR0_ET, CR0_PG = 0x1, 0x10, 0x80000000
CR4_PAE, CR4_PGE = 0x20, 0x80

# Register ids by name, the kernel's pt_regs names where they differ.
REG = {
    "rax": x86.UC_X86_REG_RAX, "rbx": x86.UC_X86_REG_RBX, "rcx": x86.UC_X86_REG_RCX,
    "rdx": x86.UC_X86_REG_RDX, "rsi": x86.UC_X86_REG_RSI, "rdi": x86.UC_X86_REG_RDI,
    "rbp": x86.UC_X86_REG_RBP, "rsp": x86.UC_X86_REG_RSP, "r8": x86.UC_X86_REG_R8,
    "r9": x86.UC_X86_REG_R9, "r10": x86.UC_X86_REG_R10, "r11": x86.UC_X86_REG_R11,
    "r12": x86.UC_X86_REG_R12, "r13": x86.UC_X86_REG_R13, "r14": x86.UC_X86_REG_R14,
    "r15": x86.UC_X86_REG_R15, "rip": x86.UC_X86_REG_RIP, "rflags": x86.UC_X86_REG_EFLAGS,
    "cs": x86.UC_X86_REG_CS, "ss": x86.UC_X86_REG_SS,
    "gs_base": x86.UC_X86_REG_GS_BASE, "cr2": x86.UC_X86_REG_CR2, "cr3": x86.UC_X86_REG_CR3,
}
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
GPR_INDEX = {name: i for i, name in enumerate(GPRS)}
RIP_INDEX, RFLAGS_INDEX = 16, 17
RCX_INDEX, R11_INDEX = GPR_INDEX["rcx"], GPR_INDEX["r11"]
RFLAGS_FIXED = 0x2                    # the reserved bit 1: rflags at syscall entry (SFMASK clears the rest)
_BATCH_NAMES = (*GPRS, "rip", "rflags")
_SELECTORS = ("cs", "ss")
# the registers a quantum starts from (RunLoop, Cpu.deliver_interrupt), in this order
ENTRY_REGS = ("rip", "rflags", "rsp", "cs")
# a hypercall's number and arguments (rax; rdi, rsi, rdx, rcx) and its caller's rsp
HYPERCALL_REGS = ("rax", "rdi", "rsi", "rdx", "rcx", "rsp")


class _X86Msr(ctypes.Structure):
    _fields_ = [("rid", ctypes.c_uint32), ("value", ctypes.c_uint64)]


class _RegBatch:
    """Prebuilt arrays for reading/writing a set of registers in one call
    (by default the GPRs, rip and rflags)."""

    def __init__(self, uch: object, names: tuple[str, ...] = _BATCH_NAMES) -> None:
        n = len(names)
        self._uch = uch
        self._n = n
        self.ids = (ctypes.c_int * n)(*[REG[name] for name in names])
        self._vals = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self._vals)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        # 16-bit registers (cs) fill only their low bytes: cleared before each read
        self._narrow = [i for i, name in enumerate(names) if name in _SELECTORS]

    def read(self) -> tuple[int, ...]:
        return tuple(self.load())

    def load(self) -> "ctypes.Array[ctypes.c_uint64]":
        """Read into the batch's own array and return it (no copies: the hot path)."""
        for i in self._narrow:
            self._vals[i] = 0
        uclib.uc_reg_read_batch(self._uch, self.ids, self._ptrs, self._n)
        return self._vals

    def store(self) -> None:
        """Write the batch's array back, as load() returned and its caller edited it."""
        uclib.uc_reg_write_batch(self._uch, self.ids, self._ptrs, self._n)

    def write(self, *values: int) -> None:
        """Write these values, in the batch's order."""
        self._vals[:] = values
        uclib.uc_reg_write_batch(self._uch, self.ids, self._ptrs, self._n)


_CR2_CLEAR = 0xDEAD_0000_0000_0000     # non-canonical: never a real fault address


# instructions a precise tail stops before (Engine.run_into_block): they end
# a translation block, leave it, or depend on or change the CPU's mode
class FaultKind(Enum):
    PAGE_FAULT = "page fault"
    INVALID_OPCODE = "invalid opcode"
    GENERAL_PROTECTION = "general protection fault"


_FAULTS = {
    UC_ERR_READ_UNMAPPED: (FaultKind.PAGE_FAULT, "read"),
    UC_ERR_WRITE_UNMAPPED: (FaultKind.PAGE_FAULT, "write"),
    UC_ERR_FETCH_UNMAPPED: (FaultKind.PAGE_FAULT, "instruction fetch"),
    UC_ERR_READ_PROT: (FaultKind.PAGE_FAULT, "read"),
    UC_ERR_WRITE_PROT: (FaultKind.PAGE_FAULT, "write"),
    UC_ERR_FETCH_PROT: (FaultKind.PAGE_FAULT, "instruction fetch"),
    UC_ERR_INSN_INVALID: (FaultKind.INVALID_OPCODE, None),
    UC_ERR_EXCEPTION: (FaultKind.GENERAL_PROTECTION, None),
}


@dataclass(frozen=True)
class CpuFault:
    """Why emu_start stopped with an error: what the guest did wrong."""
    kind: FaultKind
    access: str | None     # read / write / instruction fetch (page faults)
    address: int | None    # the faulting data address, when known
    pc: int
    unicorn_error: str


class Engine:
    """One emulated x86-64 CPU: a Unicorn instance over the shared RAM."""

    def __init__(self, ram: Ram, cr3: int, gdt: tuple[int, int],
                 v2p: Callable[[int], int] | None = None) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self._uch = self.uc._uch
        self.uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.base)
        self._val = ctypes.c_uint64()
        self._msr = _X86Msr()
        self._batch = _RegBatch(self._uch)
        self._entry_regs = _RegBatch(self._uch, ENTRY_REGS)
        self._hypercall_regs = _RegBatch(self._uch, HYPERCALL_REGS)
        # rip never goes in a batch write: from inside a hook, Unicorn 2.1.4's
        # uc_reg_write_batch does not redirect the CPU (the instruction at the
        # hook runs again), where uc_reg_write does
        self._return_regs = _RegBatch(self._uch, ("rax", "rsp"))
        self._jump_regs = _RegBatch(self._uch, ("rsp", "rflags"))
        self._read = uclib.uc_reg_read
        self._write = uclib.uc_reg_write
        self._val_ref = ctypes.byref(self._val)
        self._entry_context: object | None = None
        self._v2p = v2p
        self._hook_error: BaseException | None = None
        self._fault_address: int | None = None
        self._hooks: list[int] = []
        self._budget = BlockBudget(self.uc)
        self._exit_regs: tuple[int, int, int, int] | None = None   # entry_regs() since the last run
        self._running = False
        self._enter_long_mode(cr3, gdt)
        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid_memory)
        # every context taken from here on carries the cleared CR2 (a context
        # restore sets it): only a fault's exit leaves another value in it
        self.set_reg("cr2", _CR2_CLEAR)
        self._cr2_dirty = False
        self.kernel_context = self.uc.context_save()

    def _enter_long_mode(self, cr3: int, gdt: tuple[int, int]) -> None:
        base, limit = gdt
        uc = self.uc
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, base, limit, 0))
        uc.reg_write(x86.UC_X86_REG_CR3, cr3)
        uc.reg_write(x86.UC_X86_REG_CR4, uc.reg_read(x86.UC_X86_REG_CR4) | CR4_PAE)
        uc.msr_write(MSR_EFER, EFER_SCE | EFER_LME | EFER_LMA)
        uc.reg_write(x86.UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
        uc.reg_write(x86.UC_X86_REG_CS, 0x10)
        for seg in (x86.UC_X86_REG_SS, x86.UC_X86_REG_DS, x86.UC_X86_REG_ES):
            uc.reg_write(seg, 0x18)

    # -- registers (direct ctypes calls: the binding costs 3x more) --
    def reg(self, name: str) -> int:
        self._val.value = 0            # 16- and 32-bit registers fill only the low bytes
        self._read(self._uch, REG[name], self._val_ref)
        return self._val.value

    def set_reg(self, name: str, value: int) -> None:
        self._exit_regs = None
        self._val.value = value & 0xFFFFFFFFFFFFFFFF
        self._write(self._uch, REG[name], self._val_ref)

    def entry_regs(self) -> tuple[int, int, int, int]:
        """(rip, rflags, rsp, cs): what a quantum starts from. Read once
        after each run, while Unicorn's state is still in the host's caches
        (a 4-register batch: 1.3 us right after emu_start, 2.8 us after
        touching 8192 pages, raw Unicorn, measured in review), and kept until
        an Engine method writes a register: between runs only those do."""
        regs = self._exit_regs
        if regs is None:
            rip, rflags, rsp, cs = self._entry_regs.load()
            regs = (rip, rflags, rsp, cs)
            if not self._running:                # from a hook: they are changing
                self._exit_regs = regs
        return regs

    def hypercall_regs(self) -> tuple[int, int, int, int, int, int]:
        """(rax, rdi, rsi, rdx, rcx, rsp) in one call: a hypercall's number,
        its arguments and the stack its caller's return address is on."""
        rax, rdi, rsi, rdx, rcx, rsp = self._hypercall_regs.load()
        return rax, rdi, rsi, rdx, rcx, rsp

    def return_to(self, rax: int, rip: int, rsp: int) -> None:
        """Set rax, rsp and then rip (a `ret` with a return value, done by hand)."""
        self._exit_regs = None
        self._return_regs.write(rax & 0xFFFFFFFFFFFFFFFF, rsp)
        self.set_reg("rip", rip)

    def jump_to(self, rip: int, rsp: int, rflags: int) -> None:
        """Set rsp, rflags and then rip (an interrupt gate's entry at the same CPL)."""
        self._exit_regs = None
        self._jump_regs.write(rsp, rflags)
        self.set_reg("rip", rip)

    def gprs(self) -> dict[str, int]:
        return dict(zip(GPRS, self._batch.read()[:16]))

    def msr(self, msr: int) -> int:
        self._msr.rid = msr
        uclib.uc_reg_read(self._uch, x86.UC_X86_REG_MSR, ctypes.byref(self._msr))
        return self._msr.value

    def set_msr(self, msr: int, value: int) -> None:
        self._exit_regs = None
        self._msr.rid = msr
        self._msr.value = value
        uclib.uc_reg_write(self._uch, x86.UC_X86_REG_MSR, ctypes.byref(self._msr))

    def enter_kernel_mode(self, transform: Callable[["ctypes.Array[ctypes.c_uint64]"], None]) -> None:
        """Switch to CPL 0 as an interrupt or syscall does.

        `transform` gets the register values [16 GPRs in GPRS order, rip,
        rflags] as they were (an array of u64), and edits them in place into
        the values to run with at CPL 0.

        Writing CS does not change the privilege level in Unicorn (field notes
        §7), so a kernel context is restored and the user registers are put
        back. The context is a per-CPU template taken at the first entry, with
        GS_BASE = 0 (user) and KERNEL_GS_BASE = this CPU's per-CPU area, which
        is what the MSRs hold at every user->kernel transition here (user code
        never sets a GS base, and a CPU's per-CPU area never moves).
        """
        self._exit_regs = None
        regs = self._batch.load()
        if self._entry_context is None:
            gs_base, kernel_gs = self.msr(MSR_GS_BASE), self.msr(MSR_KERNEL_GS_BASE)
            self.uc.context_restore(self.kernel_context)
            self.set_msr(MSR_GS_BASE, gs_base)
            self.set_msr(MSR_KERNEL_GS_BASE, kernel_gs)
            self._entry_context = self.uc.context_save()
        else:
            uclib.uc_context_restore(self._uch, self._entry_context.context)
        transform(regs)
        self._batch.store()

    # -- hooks --
    def _trapped(self, fn: Callable[[], None]) -> None:
        """FN, from inside a hook: an exception stops the CPU and is raised
        again by run() (Unicorn's hooks must not raise, and none is swallowed)."""
        try:
            fn()
        except BaseException as exc:
            self._hook_error = exc
            self.uc.emu_stop()

    def hook_code_at(self, address: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` each time the instruction at `address` is about to
        run; returns the function that removes the hook."""
        def on_code(uc: Uc, addr: int, size: int, data: object) -> None:
            self._trapped(callback)
        handle = self.uc.hook_add(UC_HOOK_CODE, on_code, None, address, address)
        self._hooks.append(handle)
        self.invalidate(address, 1)

        def remove() -> None:
            self.uc.hook_del(handle)
            self._hooks.remove(handle)
        return remove

    def hook_hypercall(self, address: int,
                       serve: Callable[[Sequence[int]], tuple[int, int, int] | None]) -> None:
        """Serve the hypercall site at `address`: serve(regs) gets the
        registers HYPERCALL_REGS names and returns (rax, rip, rsp) to return
        to the caller with, or None to go on as the service left the CPU.
        Natively when the library is there (no Python register calls),
        else with a code hook and batched register calls; the same effect."""
        state = native.HypercallState()

        def serve_natively() -> None:
            ret = serve(state.regs[:])
            if ret is not None:
                rax, rip, rsp = ret
                state.ret_rax, state.ret_rsp, state.ret_rip = rax & 0xFFFFFFFFFFFFFFFF, rsp, rip
                state.returning = 1

        def service() -> None:
            self._trapped(serve_natively)

        def on_code() -> None:
            ret = serve(self.hypercall_regs())
            if ret is not None:
                self.return_to(*ret)

        if native.hook_hypercall(self.uc, address, state, service, list(self._hypercall_regs.ids),
                                 list(self._return_regs.ids), REG["rip"]):
            self.invalidate(address, 1)
        else:
            self.hook_code_at(address, on_code)

    def hook_syscall(self, entry: int) -> None:
        """Make `syscall` do what it does on hardware (Unicorn only calls a
        hook): enter CPL 0 at `entry` (LSTAR), rcx = the return address, r11 =
        rflags, IF masked (SFMASK). The first entry runs in Python (it takes
        the CPU's kernel-context template); from then on the native hook
        enters, when the library is there."""
        handle = 0

        def enter() -> None:
            self._enter_syscall(entry)
            if native.hook_syscall_entry(self.uc, self._entry_context, entry, RFLAGS_FIXED,
                                         list(self._batch.ids)):
                self.uc.hook_del(handle)
                self._hooks.remove(handle)

        def on_syscall(uc: Uc, data: object) -> None:
            self._trapped(enter)
        handle = self.uc.hook_add(UC_HOOK_INSN, on_syscall, None, 1, 0, x86.UC_X86_INS_SYSCALL)
        self._hooks.append(handle)

    def _enter_syscall(self, entry: int) -> None:
        def to_kernel(regs: "ctypes.Array[ctypes.c_uint64]") -> None:
            rip, rflags = regs[RIP_INDEX], regs[RFLAGS_INDEX]
            regs[RCX_INDEX], regs[R11_INDEX] = rip + 2, rflags
            # entry - 2: Unicorn adds the syscall's length after the hook returns
            regs[RIP_INDEX], regs[RFLAGS_INDEX] = entry - 2, RFLAGS_FIXED
        self.enter_kernel_mode(to_kernel)

    def _on_invalid_memory(self, uc: Uc, access: int, address: int, size: int, value: int,
                           data: object) -> bool:
        self._fault_address = address
        return False

    # -- running --
    def run(self, begin: int, until: int, nbytes: int) -> CpuFault | None:
        """Run from `begin` until blocks of `nbytes` bytes in all have started
        (the next block start stops it); a guest fault is returned.

        An exception raised by a hook is re-raised here, chained to the
        Unicorn error when emu_start failed too. `until` must be an address
        the guest never reaches (Unicorn invalidates the code around it).
        """
        self._budget.arm(nbytes)
        return self._start(begin, until)

    @property
    def budget_spent(self) -> bool:
        """The last run stopped because its budget ran out (at a block start),
        not for a hook, a halt or a fault."""
        return self._budget.remaining <= 0

    @property
    def code_bytes(self) -> int:
        """Bytes of guest code in the blocks started since the engine was made."""
        return self._budget.started_bytes

    def run_into_block(self, count: int) -> CpuFault | None:
        """Run the first `count` instructions of the block at rip, stopping
        before any that could leave it or change how it runs (a branch, a
        privileged or serialising instruction): a stop inside a block, where
        a budget cannot stop. Costs two translations of the block."""
        rip = self.reg("rip")
        exit_at = self._straight_line_end(rip, count)
        if exit_at == rip:
            return None
        # the block was translated without an exit inside it; only it may start
        self.uc.ctl_remove_cache(rip, rip + 1)
        self._budget.arm(1)
        return self._start(rip, exit_at)

    def _straight_line_end(self, rip: int, count: int) -> int:
        if not self._v2p:
            return rip
        try:
            code = bytes(self.uc.mem_read(self._v2p(rip), 15 * count))
        except (BadGuestAddress, UcError):
            return rip
        return straight_line_end(code, rip, count)

    def _start(self, begin: int, until: int) -> CpuFault | None:
        self._hook_error = None
        self._fault_address = None
        fault = None
        self._exit_regs = None                       # the registers change as it runs
        self._running = True
        try:
            self.uc.emu_start(begin, until)
        except UcError as err:
            self._running = False
            self.entry_regs()
            self._cr2_dirty = True                   # a page fault's exit sets CR2
            if self._hook_error is not None:
                raise self._hook_error from err
            fault = self._classify(err)
        finally:
            self._running = False
        if fault is None:
            self.entry_regs()
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        return fault

    def _classify(self, err: UcError) -> CpuFault:
        """What the guest did. Under paging Unicorn reports a page fault as a
        bare exception: CR2 (cleared before each run) tells it apart, and the
        instruction's operands tell a read from a write."""
        rip = self.reg("rip")
        if not is_canonical(rip):          # a jump or return to a non-canonical address: #GP
            return CpuFault(FaultKind.GENERAL_PROTECTION, "instruction fetch", None, rip, str(err))
        kind, access = _FAULTS.get(err.errno, (FaultKind.GENERAL_PROTECTION, None))
        address = self._fault_address
        cr2 = self.reg("cr2")
        if err.errno == UC_ERR_EXCEPTION and cr2 != _CR2_CLEAR:
            kind, address = FaultKind.PAGE_FAULT, cr2
            access = "instruction fetch" if cr2 == rip else self._access_of(rip)
        if kind is not FaultKind.INVALID_OPCODE and access != "instruction fetch":
            # Unicorn reports a non-canonical operand as an unmapped access to 0
            # or a bare exception; the CPU raises #GP for it
            non_canonical = self._non_canonical_operand(rip)
            if non_canonical is not None:
                kind, address, access = FaultKind.GENERAL_PROTECTION, non_canonical, self._access_of(rip)
        return CpuFault(kind, access, address, rip, str(err))

    def _insn(self, rip: int) -> "CsInsn | None":
        if not self._v2p:
            return None
        try:
            code = bytes(self.uc.mem_read(self._v2p(rip), 16))
        except BadGuestAddress:
            return None
        return next(disassembler(detail=True).disasm(code, rip, 1), None)

    def _access_of(self, rip: int) -> str:
        from capstone import CS_AC_WRITE
        from capstone.x86 import X86_OP_MEM
        insn = self._insn(rip)
        if insn is None:
            return "instruction fetch"
        for op in insn.operands:
            if op.type == X86_OP_MEM and op.access & CS_AC_WRITE:
                return "write"
        return "read"

    def _non_canonical_operand(self, rip: int) -> int | None:
        """The non-canonical address a memory operand of the instruction at
        rip names, as the kernel's #GP handler decodes it (traps.c)."""
        from capstone.x86 import X86_OP_MEM, X86_REG_RIP
        insn = self._insn(rip)
        if insn is None:
            return None
        for op in insn.operands:
            if op.type != X86_OP_MEM:
                continue
            m = op.mem
            base = rip + insn.size if m.base == X86_REG_RIP else self._reg_or_zero(insn, m.base)
            addr = (base + self._reg_or_zero(insn, m.index) * m.scale + m.disp) & 0xFFFFFFFFFFFFFFFF
            if not is_canonical(addr):
                return addr
        return None

    def _reg_or_zero(self, insn: "CsInsn", reg: int) -> int:
        name = insn.reg_name(reg) if reg else None
        return self.reg(name) if name in GPRS else 0

    def clear_fault_address(self) -> None:
        """Clear CR2 before a run, where a fault may have set it (_classify
        tells a page fault by CR2 != the cleared value)."""
        if self._cr2_dirty:
            self.set_reg("cr2", _CR2_CLEAR)
            self._cr2_dirty = False

    def stop(self) -> None:
        self.uc.emu_stop()

    def invalidate(self, address: int, size: int) -> None:
        """Drop translated code for [address, address+size) on this CPU.

        ctl_remove_cache finds the code through the CPU's current privilege:
        on a CPU in user mode a kernel address does not translate, and the
        call silently removes nothing (measured on 2.1.4: the CPU went on
        running the old code of a patched syscall). Such a CPU drops all of
        its translations instead."""
        if self.reg("cs") & 3:
            self.uc.ctl_flush_tb()
        else:
            self.uc.ctl_remove_cache(address, address + size)

    def flush_all(self) -> None:
        self.uc.ctl_flush_tb()
