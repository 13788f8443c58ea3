"""The lockup detectors (kernel/watchdog.c), in virtual time: a CPU with
interrupts off for longer than watchdog_thresh is a hard lockup, one that
does not schedule (preemption off) for twice as long a soft lockup. Either
panics the machine, as with the kernel's *_panic sysctls set, and raises
GuestHang with the report."""
from __future__ import annotations

import math
from typing import Callable

from emu.arch.cpu import Cpu
from emu.errors import EmuError, GuestHang
from emu.faults.oops import lockup_report
from emu.kernel.printk import KernelLog
from emu.kernel.program import Program
from emu.kernel.tasks import cpu_curr
from emu.time import NSEC_PER_SEC, VirtualClock
from emu.unwind.stack_walker import StackWalker

WATCHDOG_THRESH_MAX = 60          # the sysctl's extra2 (kernel/watchdog.c)


def check_watchdog_thresh(seconds: float) -> float:
    """watchdog_thresh as the kernel's sysctl takes it: 0 (off) to 60 seconds."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)
            and 0 <= seconds <= WATCHDOG_THRESH_MAX):
        raise EmuError(f"watchdog_thresh must be 0 (off) to {WATCHDOG_THRESH_MAX} seconds, not {seconds!r}")
    return float(seconds)


class Watchdog:
    def __init__(self, prog: Program, walker: StackWalker, cpus: list[Cpu], clock: VirtualClock,
                 log: KernelLog, crash: Callable[[str], None], thresh_s: float) -> None:
        self.prog = prog
        self.walker = walker
        self.cpus = cpus
        self.clock = clock
        self.log = log
        self.crash = crash
        self.thresh_ns = int(check_watchdog_thresh(thresh_s) * NSEC_PER_SEC)

    def check(self) -> None:
        """After each round: raise GuestHang when a CPU is locked up."""
        thresh, now = self.thresh_ns, self.clock.ns
        if thresh == 0:
            return
        for cpu in self.cpus:
            if not cpu.runnable:
                cpu.irqs_off_since_ns = cpu.preempt_off_since_ns = None
                continue
            if cpu.interrupts_enabled():
                cpu.irqs_off_since_ns = None
            elif cpu.irqs_off_since_ns is None:
                cpu.irqs_off_since_ns = now
            elif now - cpu.irqs_off_since_ns > thresh:
                text = f"Watchdog detected hard LOCKUP on cpu {cpu.index}"
                self._hang(cpu, text, f"NMI watchdog: {text}", "Hard LOCKUP")
            preempt = self.prog.mem.read_s32(self.prog.per_cpu(cpu.index, "PCPU_preempt_count"))
            if preempt == 0 or cpu.irqs_off_since_ns is not None:
                cpu.preempt_off_since_ns = None
            elif cpu.preempt_off_since_ns is None:
                cpu.preempt_off_since_ns = now
            elif now - cpu.preempt_off_since_ns > 2 * thresh:
                task = cpu_curr(self.prog, cpu.index)
                stuck = (now - cpu.preempt_off_since_ns) // NSEC_PER_SEC
                text = f"BUG: soft lockup - CPU#{cpu.index} stuck for {stuck}s! [{task.comm}:{task.pid}]"
                self._hang(cpu, text, f"watchdog: {text}", "softlockup: hung tasks")

    def _hang(self, cpu: Cpu, text: str, headline: str, panic: str) -> None:
        report = lockup_report(self.prog, self.walker, cpu, headline)
        for line in report:
            self.log.log(line, level=0)
        self.log.log(f"Kernel panic - not syncing: {panic}", level=0)
        self.crash(text)
        raise GuestHang(text, report="\n".join(report))
