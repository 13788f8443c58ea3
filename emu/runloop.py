"""The run loop: N emulated CPUs driven round-robin from one host thread, in
virtual time.

In each round every runnable CPU executes one quantum of the same
seeded-random length (capped at the next timer event), then virtual time
advances by that length at NS_PER_INSN. A quantum of N instructions is a
budget of N * BYTES_PER_INSN bytes of code blocks (a native block hook, no
per-instruction counting); one quantum in TAIL_EVERY, drawn from its
length, then runs up to TAIL_MAX instructions into the block it stopped
at, so that a task can be preempted anywhere, not only where blocks
begin (in a prologue before its frame is set up, say). Interrupts are delivered at quantum
boundaries when the CPU has them enabled; when every CPU halts, time skips
to the next timer event. Code patching waits for the end of a round, when
every CPU is stopped (stop_machine). Same kernel + same seed = the same
run, byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.abi import DOORBELL_VECTOR, LOCAL_TIMER_VECTOR, PAGE_OFFSET, RESCHEDULE_VECTOR
from emu.arch.cpu import Cpu
from emu.arch.engine import CpuFault
from emu.errors import EmuError, GuestIdle, GuestTimeout, MachineCrashed
from emu.kernel.hypercalls import hypercall
from emu.kernel.program import Program
from emu.schedule import Schedule
from emu.time import NS_PER_INSN, VirtualClock

PARK_PHYS = 0x22000                   # a page of `hlt`: the never-reached end of every run
BYTES_PER_INSN = 4                    # a quantum's budget in code bytes per instruction
TAIL_EVERY, TAIL_MAX = 64, 7          # quanta with a precise tail into a block: 7 in 64
VECTOR_ENTRIES = {
    LOCAL_TIMER_VECTOR: "asm_sysvec_apic_timer_interrupt",
    RESCHEDULE_VECTOR: "asm_sysvec_reschedule_ipi",
    DOORBELL_VECTOR: "asm_common_interrupt_doorbell",
}


@dataclass
class MachineStats:
    """Counters of what the machine did (for benchmarks and curiosity)."""
    rounds: int = 0
    quanta: int = 0
    code_bytes: int = 0          # bytes of the code blocks the CPUs started (the budget's unit)
    interrupts: int = 0
    hypercalls: int = 0


class RunLoop:
    def __init__(self, prog: Program, cpus: list[Cpu], clock: VirtualClock, schedule: Schedule, *,
                 clock_addr: int, on_fault: Callable[[Cpu, CpuFault], None]) -> None:
        self.prog = prog
        self.cpus = cpus
        self.clock = clock
        self.schedule = schedule              # who runs how long each round (emu.schedule)
        self.stats = MachineStats()
        self.crashed: str | None = None
        self.after_round: list[Callable[[], None]] = []   # e.g. the watchdog
        self._clock_addr = clock_addr
        self._on_fault = on_fault
        self._until = PAGE_OFFSET + PARK_PHYS + 0x800    # never reached
        self._halt_resume = prog.symbol_address("native_safe_halt_resume")
        self._halt_insn = self._halt_resume - 1          # the hlt right after native_safe_halt's sti
        self._vector_entry = {v: prog.symbol_address(n) for v, n in VECTOR_ENTRIES.items()}
        self._in_round = False
        self._deferred: list[Callable[[], None]] = []
        self._current_cpu: Cpu | None = None

    @property
    def in_round(self) -> bool:
        """True while the CPUs run a round (inside a hook or a hypercall)."""
        return self._in_round

    # ---------------------------------------------------------------- running
    def run(self, seconds: float) -> None:
        """Run for `seconds` of virtual time."""
        target = self.clock.ns + int(seconds * 1e9)
        while self.clock.ns < target:
            self.check_alive()
            if not self._round(limit_ns=target):
                self.clock.ns = target

    def run_until(self, predicate: Callable[[], bool], timeout_s: float = 60.0,
                  what: str = "a condition") -> None:
        """Run until predicate() holds; GuestTimeout after timeout_s of virtual time."""
        deadline = self.clock.ns + int(timeout_s * 1e9)
        while not predicate():
            self.check_alive()
            if self.clock.ns >= deadline:
                raise GuestTimeout(f"timed out after {timeout_s} virtual seconds waiting for {what}")
            if not self._round(limit_ns=deadline):
                raise GuestIdle(f"the guest went idle with nothing pending while waiting for {what}",
                                left_s=(deadline - self.clock.ns) / 1e9)

    def check_alive(self) -> None:
        if self.crashed:
            raise MachineCrashed(f"the machine crashed earlier: {self.crashed}")

    def _round(self, limit_ns: int) -> bool:
        """One round of quanta. False when every CPU idles with no event before limit_ns."""
        now = self.clock.ns
        for cpu in self.cpus:
            if not cpu.online or cpu.dead:
                continue
            if cpu.halted:
                if cpu.wake_at_ns and now >= cpu.wake_at_ns:
                    cpu.pending.add(LOCAL_TIMER_VECTOR)
                if cpu.pending:
                    cpu.halted = False
                    cpu.next_tick_ns = self.schedule.next_tick(cpu, now)
            elif now >= cpu.next_tick_ns:
                cpu.pending.add(LOCAL_TIMER_VECTOR)
                cpu.next_tick_ns = self.schedule.next_tick(cpu, now)
        runnable = [c for c in self.cpus if c.runnable]
        if not runnable:
            wakes = [c.wake_at_ns for c in self.cpus if c.online and c.halted and c.wake_at_ns]
            nxt = min(wakes, default=None)
            if nxt is None or nxt > limit_ns:
                return False
            self.clock.ns = max(now, nxt)
            return True
        events = [limit_ns, *(c.next_tick_ns for c in runnable)]
        events += [c.wake_at_ns for c in self.cpus if c.online and c.halted and c.wake_at_ns]
        span = max(1, (min(events) - now + NS_PER_INSN - 1) // NS_PER_INSN)
        plan = self.schedule.plan(runnable, span)
        self.prog.mem.write_u64(self._clock_addr, now)
        self._in_round = True
        try:
            for cpu, quantum in plan.quanta:
                if cpu.runnable:
                    self.prog.mem.write_u64(self.prog.per_cpu(cpu.index, "PCPU_sched_pick"),
                                            self.schedule.pick(cpu))
                    self._run_quantum(cpu, quantum)
        finally:
            self._in_round = False
            self._current_cpu = None
        self.clock.ns = now + plan.length * NS_PER_INSN
        self.stats.rounds += 1
        self._run_deferred()
        for check in self.after_round:
            check()
        return True

    def _run_quantum(self, cpu: Cpu, quantum: int) -> None:
        engine = cpu.engine
        rip = engine.entry_regs()[0]
        # no interrupt between native_safe_halt's sti and hlt (the sti
        # shadow): its handler's wake-up would be slept through by the hlt
        if cpu.pending and cpu.interrupts_enabled() and rip != self._halt_insn:
            vector = max(cpu.pending)
            cpu.pending.discard(vector)
            cpu.deliver_interrupt(vector, self._vector_entry[vector], self.prog.mem,
                                  self.prog.mem.read_u64(self.prog.per_cpu(cpu.index, "PCPU_top_of_stack")))
            self.stats.interrupts += 1
            rip = self._vector_entry[vector]
        self._current_cpu = cpu
        engine.clear_fault_address()
        before = engine.code_bytes
        fault = engine.run(rip, self._until, quantum * BYTES_PER_INSN)
        tail = quantum % TAIL_EVERY
        if fault is None and 0 < tail <= TAIL_MAX and engine.budget_spent and not self._deferred:
            fault = engine.run_into_block(tail)
        self.stats.quanta += 1
        self.stats.code_bytes += engine.code_bytes - before
        if fault is not None:
            self._on_fault(cpu, fault)
        elif cpu.entering_idle and engine.entry_regs()[0] == self._halt_resume:
            cpu.halted = True                       # the hlt ran (not an interrupt's return that
            cpu.entering_idle = False               # happened to end the quantum there)

    def _run_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    def stop_machine(self, fn: Callable[[], None]) -> None:
        """Run fn with every CPU stopped (now, or at the end of this round)."""
        if self._in_round:
            self._deferred.append(fn)
            if self._current_cpu is not None:
                self._current_cpu.engine.stop()
        else:
            fn()

    def crash(self, reason: str) -> None:
        """The kernel panicked or hung: stop every CPU for good."""
        self.crashed = reason
        for cpu in self.cpus:
            cpu.dead = True
            if self._in_round:
                cpu.engine.stop()

    # ---------------------------------------------------------------- CPUs and interrupts
    def start_cpu(self, index: int, rip: int, rsp: int, rdi: int) -> None:
        cpu = self.cpus[index]
        e = cpu.engine
        e.set_reg("rsp", rsp)
        e.set_reg("rdi", rdi)
        e.set_reg("rip", rip)
        cpu.online = True

    def raise_interrupt(self, index: int, vector: int) -> None:
        if not 0 <= index < len(self.cpus):
            raise EmuError(f"no CPU {index} to interrupt")
        if vector not in self._vector_entry:
            raise EmuError(f"no interrupt vector {vector:#x}")
        self.cpus[index].pending.add(vector)

    @hypercall("HC_IDLE")
    def hc_idle(self, cpu: Cpu, next_event_ns: int, *_: int) -> int:
        """void idle_enter(u64 next_timer_ns): the CPU halts next; wake it then (0: no timer)."""
        cpu.wake_at_ns = next_event_ns
        cpu.entering_idle = True
        return 0

    @hypercall("HC_SEND_IPI")
    def hc_send_ipi(self, cpu: Cpu, target: int, vector: int, *_: int) -> int:
        """void send_ipi(int cpu, int vector)"""
        self.raise_interrupt(target, vector)
        return 0

    @hypercall("HC_CPU_UP")
    def hc_cpu_up(self, cpu: Cpu, index: int, stack_top: int, *_: int) -> int:
        """void cpu_up(int cpu, unsigned long stack_top): start CPU `index` on its idle stack."""
        if not 0 < index < len(self.cpus):
            raise EmuError(f"guest asked to start CPU {index}, which does not exist")
        self.start_cpu(index, self.prog.symbol_address("secondary_startup_64"), stack_top, index)
        self.cpus[index].next_tick_ns = self.schedule.next_tick(self.cpus[index], self.clock.ns)
        return 0

    @hypercall("HC_PANIC")
    def hc_panic(self, cpu: Cpu, text: int, length: int, *_: int) -> int:
        """void panic_commit(const char *text, int len): the machine is finished."""
        self.crash(f"Kernel panic - not syncing: {self.prog.mem.read(text, length).decode('utf-8', 'replace')}")
        return 0
