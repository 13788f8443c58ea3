"""The machine's own hypercall services: log, idle, IPIs, CPUs, panics."""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.kernel.hypercalls import hypercall

if TYPE_CHECKING:
    from emu.arch.cpu import Cpu
    from emu.kernel.guestcall import ServiceContext
    from emu.machine import Machine


@hypercall("HC_PRINTK")
def hc_printk(m: "Machine", cpu: "Cpu", level: int, text: int, length: int, _: int) -> int:
    """void printk_commit(int level, const char *text, int len)"""
    m.log(m.mem.read(text, length).decode("utf-8", "replace"), level=level)
    return 0


@hypercall("HC_IDLE")
def hc_idle(m: "Machine", cpu: "Cpu", next_event_ns: int, *_: int) -> int:
    """void idle_enter(u64 next_timer_ns): the CPU halts next; wake it then (0: no timer)."""
    cpu.wake_at_ns = next_event_ns
    return 0


@hypercall("HC_SEND_IPI")
def hc_send_ipi(m: "Machine", cpu: "Cpu", target: int, vector: int, *_: int) -> int:
    """void send_ipi(int cpu, int vector)"""
    m.raise_interrupt(target, vector)
    return 0


@hypercall("HC_CPU_UP")
def hc_cpu_up(m: "Machine", cpu: "Cpu", index: int, stack_top: int, *_: int) -> int:
    """void cpu_up(int cpu, unsigned long stack_top)"""
    m.start_secondary(index, stack_top)
    return 0


@hypercall("HC_BOOT_DONE")
def hc_boot_done(m: "Machine", cpu: "Cpu", *_: int) -> int:
    """void boot_done(void)"""
    m.booted = True
    return 0


@hypercall("HC_PANIC")
def hc_panic(m: "Machine", cpu: "Cpu", text: int, length: int, *_: int) -> int:
    """void panic_commit(const char *text, int len): the machine is finished."""
    m.crash(f"Kernel panic - not syncing: {m.mem.read(text, length).decode('utf-8', 'replace')}")
    return 0


@hypercall("HC_BUG")
def hc_bug(m: "Machine", cpu: "Cpu", file: int, line: int, *_: int) -> int:
    """void bug_report(const char *file, int line): the ud2 that follows oopses."""
    m.log(f"kernel BUG at {m.mem.read_cstr(file)}:{line}!", level=4)
    return 0


@hypercall("HC_TASK_EXIT")
def hc_task_exit(m: "Machine", cpu: "Cpu", task: int, code: int, *_: int) -> int:
    """void task_exit(struct task_struct *t, long code)"""
    m.task_exited(task)
    return 0


@hypercall("HC_CALL_RETURN")
def hc_call_return(m: "Machine", cpu: "Cpu", value: int, *_: int) -> int | None:
    """void klpemu_call_return(long value): a Python->guest call returned."""
    m.guest_calls.resume(cpu, m.current_task(cpu), value)
    return None


@hypercall("HC_CALL_REQUEST", blocking=True)
def hc_call_request(ctx: "ServiceContext", *_: int) -> int:
    """long klpemu_call(void): run the call Machine.call() queued."""
    function, args = ctx.machine.pending_calls.pop(0)
    return ctx.call(function, *args)
