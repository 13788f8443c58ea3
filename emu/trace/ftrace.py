"""ftrace: the fentry call sites of every traceable function, and who uses them.

At start-up every `__mcount_loc` site (a 5-byte `call __fentry__`) becomes the
5-byte NOP, before any CPU runs. Rewriting a site later happens with every
CPU stopped (stop_machine) and drops every CPU's translated code for it:
Unicorn does not notice host writes to code (field notes §4).

Users register `FtraceOps` on sites, as in the kernel, with the kernel's
rules: one IPMODIFY ops per site (-EBUSY otherwise), PERMANENT ops refused
while the `kernel.ftrace_enabled` sysctl is 0 and keeping it from going to 0.
A site with only an IPMODIFY ops jumps straight to its target (the livepatch
trampoline); with callback ops too, it jumps to a small generated chain that
calls each callback and then jumps on (ftrace's list function, compiled).
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from emu.arch.cpu import Cpu
from emu.elf.module_loader import LoadedModule
from emu.errors import EmuError, ImageError
from emu.fs.vfs import Vfs
from emu.kernel.kstrtox import proc_dointvec_write
from emu.kernel.program import Program
from emu.kernel.text_patching import TextPatcher
from emu.trace.slots import SlotPool

if TYPE_CHECKING:
    from emu.kernel.guestcall import ServiceContext

NOP5 = bytes.fromhex("0f1f440000")
CALL, JMP = 0xE8, 0xE9
FTRACE_OPS_FL_IPMODIFY = 1 << 0
FTRACE_OPS_FL_PERMANENT = 1 << 1
SYSCTL = "/proc/sys/kernel/ftrace_enabled"
CHAIN_SLOT = 128            # bytes of generated code per chain


def rel32_insn(opcode: int, site: int, target: int) -> bytes:
    """`call`/`jmp` rel32 at `site` to `target`."""
    disp = target - (site + 5)
    if not -(1 << 31) <= disp < (1 << 31):
        raise EmuError(f"{target:#x} is out of rel32 reach of {site:#x}")
    return bytes([opcode]) + struct.pack("<i", disp)


def chain_code(at: int, site: int, callbacks: list[int], target: int) -> bytes:
    """Generated code at `at` for `site`: call each callback with r11 = the
    site (the stack as at the function's entry below the return address),
    then jump to `target` (an IPMODIFY owner, or the function's body)."""
    code = bytearray()
    for callback in callbacks:
        code += b"\x49\xbb" + struct.pack("<Q", site)              # movabs r11, site
        code += rel32_insn(CALL, at + len(code), callback)
    code += rel32_insn(JMP, at + len(code), target)
    if len(code) > CHAIN_SLOT:
        raise EmuError(f"too many ftrace callbacks on {site:#x}")
    return bytes(code)


@dataclass(eq=False)
class FtraceOps:
    """A user of ftrace sites (struct ftrace_ops, reduced to what decides the code).

    An IPMODIFY ops takes the function over: the site ends in `jmp target`,
    entered with the stack exactly as at the function's entry. Any other ops
    is a `callback` called on the way, with r11 = the site's address and
    [rsp+8] = the traced function's return address; it must preserve every
    register but r11 (and the flags)."""
    name: str
    flags: int
    target: int = 0
    callback: int = 0

    @property
    def ipmodify(self) -> bool:
        return bool(self.flags & FTRACE_OPS_FL_IPMODIFY)


class Ftrace:
    def __init__(self, prog: Program, text: TextPatcher, vfs: Vfs, cpus: list[Cpu],
                 alloc_pages: Callable[[int], int]) -> None:
        self.prog = prog
        self.text = text
        self.cpus = cpus
        fentry = prog.symbol_address("__fentry__")
        self.sites: dict[int, str] = {}
        for site in prog.image.mcount_sites():
            insn = prog.mem.read(site, 5)
            if insn != rel32_insn(CALL, site, fentry):
                raise ImageError(f"__mcount_loc entry {site:#x} is not a call to __fentry__: {insn.hex()}")
            loc = prog.kallsyms.lookup(site)
            if loc is None or loc.offset != 0:
                raise ImageError(f"fentry site {site:#x} is not at the start of a function")
            self.sites[site] = loc.symbol.name
            prog.mem.write(site, NOP5)
        self._module_sites: dict[str, list[int]] = {}
        self.ops: dict[int, list[FtraceOps]] = {}      # site -> registered ops, oldest first
        self.modified: set[int] = set()                 # sites an IPMODIFY ops ever owned (FTRACE_FL_MODIFIED)
        self.enabled = 1                                # the kernel.ftrace_enabled sysctl
        self._chains: dict[int, int] = {}               # site -> its chain's code
        self.chain_slots = SlotPool(alloc_pages, CHAIN_SLOT)
        vfs.register(SYSCTL, self._sysctl_show, self._sysctl_store, mode=0o644)

    def module_loaded(self, name: str, image: LoadedModule) -> None:
        """A loaded module's sites (already NOPed by the loader)."""
        for site in image.mcount_sites:
            loc = self.prog.kallsyms.lookup(site)
            self.sites[site] = loc.symbol.name if loc else f"{site:#x}"
        self._module_sites[name] = list(image.mcount_sites)

    def module_removed(self, name: str, image: LoadedModule) -> None:
        for site in self._module_sites.pop(name, []):
            self.sites.pop(site, None)
            self.ops.pop(site, None)
            self.modified.discard(site)
            chain = self._chains.pop(site, None)
            if chain is not None:
                self.chain_slots.give(chain)

    def site_of(self, function: str) -> int:
        """The fentry site of a traceable vmlinux function; EmuError if it has none."""
        address = self.prog.kallsyms.find(function)
        if address is None or address.address not in self.sites:
            raise EmuError(f"{function} has no fentry site (notrace, inlined or unknown)")
        return address.address

    def is_site(self, address: int) -> bool:
        return address in self.sites

    def read_site(self, site: int) -> bytes:
        return self.prog.mem.read(site, 5)

    def write_site(self, site: int, insn: bytes) -> None:
        """Replace the 5 bytes at a site, with all CPUs stopped, coherently on each."""
        if site not in self.sites:
            raise EmuError(f"{site:#x} is not an ftrace site")
        if len(insn) != 5:
            raise EmuError("an ftrace site holds exactly 5 bytes")
        self.text.poke(site, insn)

    def reset_site(self, site: int) -> None:
        self.write_site(site, NOP5)

    # ------------------------------------------------------------ ops
    def register(self, ops: FtraceOps, site: int) -> int:
        """register_ftrace_function() for one site: 0 or -errno, as the kernel."""
        return self.register_many(ops, [site])

    def register_many(self, ops: FtraceOps, sites: list[int]) -> int:
        """One ops on many sites (a filter), all or nothing, in one stop_machine."""
        if any(site not in self.sites for site in sites):
            return -errno.EINVAL
        if ops.flags & FTRACE_OPS_FL_PERMANENT and not self.enabled:
            return -errno.EBUSY
        if ops.ipmodify and any(self.owner(site) for site in sites):
            return -errno.EBUSY
        for site in sites:
            self.ops.setdefault(site, []).append(ops)
        if ops.ipmodify:
            self.modified.update(sites)
        self._update(sites)
        return 0

    def unregister(self, ops: FtraceOps, site: int) -> None:
        self.unregister_many(ops, [site])

    def unregister_many(self, ops: FtraceOps, sites: list[int]) -> None:
        changed = []
        for site in sites:
            users = self.ops.get(site, [])
            if ops in users:
                users.remove(ops)
                if not users:
                    del self.ops[site]
                changed.append(site)
        self._update(changed)

    def retarget(self, ops: FtraceOps, site: int, target: int) -> None:
        """Point a registered IPMODIFY ops somewhere else (ftrace_modify_direct)."""
        if ops.target != target:
            ops.target = target
            if ops in self.ops.get(site, []):
                self._update([site])

    def chain_of(self, site: int) -> int:
        """Where a site with callback ops jumps: its generated chain (0: none)."""
        return self._chains.get(site, 0)

    def owner(self, site: int) -> FtraceOps | None:
        """The IPMODIFY ops of a site, if any."""
        return next((o for o in self.ops.get(site, []) if o.ipmodify), None)

    def python_callback(self, handler: Callable[[Cpu], None]) -> int:
        """A callback address for a non-IPMODIFY ops implemented in Python:
        a `ret` whose code hook runs `handler(cpu)` (r11 = the site, [rsp+8] =
        the traced function's caller). Slow, like every Python hook: for tracing."""
        stub = self.chain_slots.take()
        self.text.poke(stub, b"\xc3")
        for cpu in self.cpus:
            cpu.engine.hook_code_at(stub, lambda cpu=cpu: handler(cpu))
        return stub

    def _update(self, sites: list[int]) -> None:
        """Make the sites' code match their ops (and the sysctl), in one stop_machine."""
        writes: list[tuple[int, bytes]] = []
        freed: list[int] = []
        for site in sites:
            users = self.ops.get(site, []) if self.enabled else []
            callbacks = [o for o in users if not o.ipmodify]
            owner = next((o for o in users if o.ipmodify), None)
            old_chain = self._chains.pop(site, None)
            if old_chain is not None:
                freed.append(old_chain)
            if not users:
                insn = NOP5
            elif not callbacks:
                # an owner sending calls on to the body itself needs no jump at all
                insn = NOP5 if owner.target == site + 5 else rel32_insn(JMP, site, owner.target)
            else:
                chain = self.chain_slots.take()
                writes.append((chain, chain_code(chain, site, [o.callback for o in callbacks],
                                                 owner.target if owner else site + 5)))
                self._chains[site] = chain
                insn = rel32_insn(JMP, site, chain)
            if self.read_site(site) != insn:
                writes.append((site, insn))
        if writes:
            self.text.poke_many(writes)
        for chain in freed:
            self.chain_slots.give(chain)

    # ------------------------------------------------------------ kernel.ftrace_enabled
    def set_enabled(self, value: int) -> int:
        """ftrace_enable_sysctl: 0, or -EBUSY when PERMANENT ops are registered."""
        if bool(value) == bool(self.enabled):
            self.enabled = value
            return 0
        if not value and any(o.flags & FTRACE_OPS_FL_PERMANENT for users in self.ops.values() for o in users):
            return -errno.EBUSY
        self.enabled = value
        self._update(list(self.ops))
        return 0

    def _sysctl_show(self) -> str:
        return f"{self.enabled}\n"

    def _sysctl_store(self, ctx: "ServiceContext", text: str) -> int:
        """ftrace_enable_sysctl: proc_dointvec's parse, then the switch."""
        write = proc_dointvec_write(text.encode("latin-1"))
        if write.err or not write.values:
            return write.err
        ret = self.set_enabled(write.values[0])
        return ret if ret else write.count
