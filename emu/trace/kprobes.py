"""kprobes on ftrace sites: the emulator's half of fixtures/kernel/kprobes.c.

The guest keeps the probes and decides, as kernel/kprobes.c does, when an
address is armed and with which of its two ftrace ops. These hypercalls
answer what it cannot know by itself (symbol names, which addresses are
ftrace sites) and put the ops on the site:

- `kprobe_ftrace_ops` (probes without a post_handler) is an ordinary ops:
  the site's chain calls `kprobe_ftrace_caller` (entry.S) with r11 = the
  site, and other users of the site (a livepatch, the tracer) still run;
- `kprobe_ipmodify_ops` (a post_handler) owns the site, IPMODIFY: the site
  jumps to a stub of its own, `movabs r11, site; call kprobe_ftrace_caller;
  jmp site+5`. So a livepatch of the function fails with -EBUSY, and so does
  a probe with a post_handler on a livepatched function, as in the kernel.
"""
from __future__ import annotations

import errno
from typing import Callable

from emu.arch.cpu import Cpu
from emu.arch.disasm import disassembler
from emu.kernel.hypercalls import hypercall
from emu.kernel.kallsyms import Location
from emu.kernel.program import Program
from emu.kernel.text_patching import TextPatcher
from emu.trace.ftrace import CHAIN_SLOT, FTRACE_OPS_FL_IPMODIFY, Ftrace, FtraceOps, chain_code
from emu.trace.slots import SlotPool

MCOUNT_INSN_SIZE = 5


class Kprobes:
    def __init__(self, prog: Program, ftrace: Ftrace, text: TextPatcher,
                 alloc_pages: Callable[[int], int]) -> None:
        self.prog = prog
        self.ftrace = ftrace
        self.text = text
        self._shared: FtraceOps | None = None           # kprobe_ftrace_ops
        self._ipmodify: dict[int, FtraceOps] = {}       # site -> its kprobe_ipmodify_ops
        self._stubs = SlotPool(alloc_pages, CHAIN_SLOT)
        self._caller = prog.symbol_address("kprobe_ftrace_caller")
        self._ops = {prog.symbol_address("kprobe_ipmodify_ops"): True,
                     prog.symbol_address("kprobe_ftrace_ops"): False}

    def _is_ipmodify(self, ops: int) -> bool | None:
        """Which of the guest's two ops `ops` is (None: neither)."""
        return self._ops.get(ops)

    def prepare(self, addr: int) -> int:
        """Whether a probe may go at `addr`, with the kernel's errno where it
        would refuse it, and -EOPNOTSUPP where it would plant an int3."""
        loc = self.prog.kallsyms.lookup(addr)
        if loc is None:
            return -errno.ENOENT                        # _kprobe_addr: in no symbol
        if self.ftrace.is_site(addr):
            return 0
        if not loc.symbol.is_function:
            return -errno.EINVAL                        # not kernel or module text
        if not self._on_insn_boundary(loc):
            return -errno.EILSEQ                        # can_probe()
        return -errno.EOPNOTSUPP

    def _on_insn_boundary(self, loc: Location) -> bool:
        start = loc.symbol.address
        code = self.prog.mem.read(start, loc.symbol.size)
        for address, size, _, _ in disassembler().disasm_lite(code, start):
            if address >= start + loc.offset:
                return address == start + loc.offset
        return False

    def arm(self, ops: int, site: int) -> int:
        """Register the guest's `ops` on `site`: 0 or the -errno of ftrace."""
        ipmodify = self._is_ipmodify(ops)
        ftrace = self.ftrace
        if ipmodify is None or not ftrace.is_site(site):
            return -errno.EINVAL
        if not ipmodify:
            if self._shared is None:
                self._shared = FtraceOps("kprobe_ftrace_ops", 0, callback=self._caller)
            if self._shared in ftrace.ops.get(site, []):
                return -errno.EBUSY
            return ftrace.register(self._shared, site)
        if site in self._ipmodify:
            return -errno.EBUSY
        stub = self._stub(site)
        fops = FtraceOps("kprobe_ipmodify_ops", FTRACE_OPS_FL_IPMODIFY, target=stub)
        ret = ftrace.register(fops, site)
        if ret:
            self._stubs.give(stub)
            return ret
        self._ipmodify[site] = fops
        return 0

    def disarm(self, ops: int, site: int) -> int:
        """Unregister the guest's `ops` from `site`: 0, or -ENOENT if it is not there."""
        ipmodify = self._is_ipmodify(ops)
        ftrace = self.ftrace
        if ipmodify:
            fops = self._ipmodify.pop(site, None)
            if fops is None:
                return -errno.ENOENT
            ftrace.unregister(fops, site)
            self._stubs.give(fops.target)
            return 0
        if ipmodify is None or self._shared is None or self._shared not in ftrace.ops.get(site, []):
            return -errno.ENOENT
        ftrace.unregister(self._shared, site)
        return 0

    def _stub(self, site: int) -> int:
        """The IPMODIFY target of one site: kprobe_ftrace_caller, then the function."""
        stub = self._stubs.take()
        self.text.poke(stub, chain_code(stub, site, [self._caller], site + MCOUNT_INSN_SIZE))
        return stub

    # ------------------------------------------------------------ hypercalls
    @hypercall("HC_KPROBE_PREPARE")
    def hc_kprobe_prepare(self, cpu: Cpu, addr: int, *_: int) -> int:
        """int check_kprobe_address_safe(addr): 0 for an ftrace site, else -errno."""
        return self.prepare(addr)

    @hypercall("HC_KPROBE_ARM")
    def hc_kprobe_arm(self, cpu: Cpu, ops: int, addr: int, *_: int) -> int:
        """int arm(struct ftrace_ops *ops, void *addr): 0 or -errno."""
        return self.arm(ops, addr)

    @hypercall("HC_KPROBE_DISARM")
    def hc_kprobe_disarm(self, cpu: Cpu, ops: int, addr: int, *_: int) -> int:
        """int disarm(struct ftrace_ops *ops, void *addr): 0 or -errno."""
        return self.disarm(ops, addr)
