"""The kernel's own services to the emulator that belong to no subsystem:
the log, BUG(), the end of boot, task exit, kallsyms_lookup_name, the
guest calls that Machine.call() queues, and the signals the emulator sends."""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel.guestcall import GuestCalls
from emu.kernel.hypercalls import hypercall
from emu.kernel.printk import KernelLog
from emu.kernel.program import Program

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu
    from emu.kernel.guestcall import ServiceContext

KSYM_NAME_LEN = 512


class KernelServices:
    def __init__(self, prog: Program, log: KernelLog, calls: GuestCalls) -> None:
        self.prog = prog
        self.log = log
        self.calls = calls
        self.booted = False
        self.dead_tasks: dict[int, int] = {}       # task_struct -> its wait status (emu.kernel.wait_status)
        self.pending_calls: list[tuple[int, tuple[int, ...]]] = []
        self._signals: list[tuple[int, int]] = []      # (pid, signo), sent at the next doorbell
        self._signals_queued = prog.symbol_address("host_signals_queued")

    @hypercall("HC_PRINTK")
    def hc_printk(self, cpu: "Cpu", level: int, text: int, length: int, _: int) -> int:
        """void printk_commit(int level, const char *text, int len)"""
        self.log.log(self.prog.mem.read(text, length).decode("utf-8", "replace"), level=level)
        return 0

    @hypercall("HC_BUG")
    def hc_bug(self, cpu: "Cpu", file: int, line: int, *_: int) -> int:
        """void bug_report(const char *file, int line): the ud2 that follows oopses."""
        self.log.log(f"kernel BUG at {self.prog.mem.read_cstr(file)}:{line}!", level=4)
        return 0

    @hypercall("HC_BOOT_DONE")
    def hc_boot_done(self, cpu: "Cpu", *_: int) -> int:
        """void boot_done(void)"""
        self.booted = True
        return 0

    @hypercall("HC_TASK_EXIT")
    def hc_task_exit(self, cpu: "Cpu", task: int, code: int, *_: int) -> int:
        """void task_exit(struct task_struct *t, long code): code is a wait status."""
        self.dead_tasks[task] = code
        self.calls.task_died(task)
        return 0

    @hypercall("HC_KALLSYMS_LOOKUP_NAME")
    def hc_kallsyms_lookup_name(self, cpu: "Cpu", name: int, *_: int) -> int:
        """unsigned long kallsyms_lookup_name(const char *name): 0 if unknown."""
        return self.prog.kallsyms.lookup_name(self.prog.mem.read_cstr(name, KSYM_NAME_LEN)) or 0

    def queue_signal(self, pid: int, signo: int) -> None:
        """kill(pid, signo) for the doorbell's handler to make when it next runs."""
        self._signals.append((pid, signo))
        self.prog.mem.write_u64(self._signals_queued, len(self._signals))

    @hypercall("HC_SIGNAL_REQUEST")
    def hc_signal_request(self, cpu: "Cpu", *_: int) -> int:
        """long signal_request(void): the next signal to send, pid << 8 | signo (0: none)."""
        if not self._signals:
            return 0
        pid, signo = self._signals.pop(0)
        self.prog.mem.write_u64(self._signals_queued, len(self._signals))
        return pid << 8 | signo

    @hypercall("HC_CALL_REQUEST", blocking=True)
    def hc_call_request(self, ctx: "ServiceContext", *_: int) -> int:
        """long klpemu_call(void): run the call Machine.call() queued."""
        function, args = self.pending_calls.pop(0)
        return ctx.call(function, *args)
