"""The machine: a gcc-built kernel on N emulated CPUs, in virtual time.

One host thread drives the CPUs round-robin in rounds. In each round every
runnable CPU executes one quantum of the same seeded-random length (capped
at the next timer event), then virtual time advances by that length at
NS_PER_INSN. Interrupts are delivered at quantum boundaries when the CPU has
them enabled; when every CPU halts, time skips to the next timer event.
Same kernel + same seed = the same run, byte for byte.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emu.abi import (DOORBELL_VECTOR, FIXTURES, HZ, LOCAL_TIMER_VECTOR, PAGE_OFFSET, RESCHEDULE_VECTOR,
                     THREAD_SIZE, USER_BASE, abi)
from emu.arch.cpu import Cpu
from emu.arch.engine import CpuFault, Engine
from emu.arch.memory import (BOOT_PARAMS_PHYS, HEAP_PHYS, KERNEL_PHYS, USER_CODE_PHYS, AddressSpace, MiB, Ram,
                             build_page_tables, write_gdt)
from emu.elf.image import ElfImage
from emu.errors import EmuError, GuestHang, ImageError, MachineCrashed
from emu.fs import vfs as _vfs  # noqa: F401  (registers the VFS hypercalls)
from emu.fs.vfs import Vfs
from emu.kernel import services  # noqa: F401  (registers the machine's hypercalls)
from emu.kernel.guestcall import GuestCalls
from emu.kernel.hypercalls import REGISTRY
from emu.kernel.kallsyms import Kallsyms
from emu.kernel.modules import ModuleManager
from emu.kernel.oops import Oops
from emu.kernel.printk import LogBuffer
from emu.kernel.shell import Shell
from emu.kernel.tasks import TaskView
from emu.trace.ftrace import Ftrace
from emu.trace.kprobes import Kprobes
from emu.trace.tracer import FunctionTracer
from emu.unwind.stack_walker import StackWalker

log = logging.getLogger(__name__)

NS_PER_INSN = 50                      # 20 M instructions per virtual second per CPU
TICK_NS = 1_000_000_000 // HZ
PARK_PHYS = 0x22000                   # a `hlt` the engines are parked on at start-up
LOG_PHYS, LOG_SIZE = 0x100000, 0x400000
MAILBOX_BASE = USER_BASE + 0x200000   # user data page: shell mailboxes, then stacks
MAILBOX_SIZE = 0x6000
MAX_SHELLS = 40
USER_STACKS_BASE = USER_BASE + 0x300000
USER_STAGING = abi("USER_STAGING")
SYS_KLPEMU_CALL = 502
SYS_INIT_MODULE, SYS_DELETE_MODULE = 175, 176
O_NONBLOCK = 0o4000
S_IFDIR = 0o040000
STAGING_SIZE = 0x200000
VECTOR_ENTRIES = {
    LOCAL_TIMER_VECTOR: "asm_sysvec_apic_timer_interrupt",
    RESCHEDULE_VECTOR: "asm_sysvec_reschedule_ipi",
    DOORBELL_VECTOR: "asm_common_interrupt_doorbell",
}


def resolve_kernel(kernel: str | Path) -> Path:
    """A flavour name (`modern`, `legacy`) or a path to a vmlinux."""
    path = Path(kernel)
    if path.exists():
        return path
    flavour = FIXTURES / "build" / f"vmlinux-{kernel}"
    if flavour.exists():
        return flavour
    raise ImageError(f"no kernel {kernel!r}: not a file, and no built flavour {flavour}")


@dataclass
class MachineStats:
    """Counters of what the machine did (for benchmarks and curiosity)."""
    rounds: int = 0
    quanta: int = 0
    instructions: int = 0        # in quanta that ran to their end (exact count)
    interrupts: int = 0
    hypercalls: int = 0


@dataclass(frozen=True)
class MachineConfig:
    kernel: str | Path = "modern"
    cpus: int = 2
    seed: int = 0
    cmdline: str = "console=ttyS0 klpemu"
    ram_mib: int = 192                 # guest RAM; the heap (tasks, stacks) is all above 96 MiB
    quantum_min: int = 2_000           # instructions
    quantum_max: int = 20_000
    watchdog_thresh_s: float = 10.0    # the kernel's watchdog_thresh
    user_image: str | Path = field(default=FIXTURES / "build" / "user.elf")


class Machine:
    """A booted (or booting) emulated kernel. See README for the API tour."""

    def __init__(self, config: MachineConfig | None = None, **overrides: object) -> None:
        config = config or MachineConfig()
        if overrides:
            config = MachineConfig(**{**config.__dict__, **overrides})
        if not 1 <= config.cpus <= 8:
            raise EmuError(f"cpus must be between 1 and 8, not {config.cpus}")
        if config.ram_mib < 128:
            raise EmuError(f"ram_mib must be at least 128 (the heap starts at 96 MiB), not {config.ram_mib}")
        if not 1 <= config.quantum_min <= config.quantum_max:
            raise EmuError("quantum_min must be >= 1 and <= quantum_max")
        self.config = config
        self.kernel = ElfImage(resolve_kernel(config.kernel))
        self.user = ElfImage(config.user_image)
        self.offsets = self.kernel.offsets()
        self._pcpu_areas = self.symbol_address("pcpu_areas")   # hot: current_task() per task check
        self.rng = random.Random(config.seed)
        self.ram = Ram(config.ram_mib * MiB)
        self.mem = AddressSpace(self.ram)
        self.kallsyms = Kallsyms()
        self.kallsyms.add(self.kernel.symbols)
        self.clock_ns = 0
        self.booted = False
        self.crashed: str | None = None
        self.oopses: list[Oops] = []
        self.dmesg_log = LogBuffer(self.ram, LOG_PHYS, LOG_SIZE)
        self.guest_calls = GuestCalls(self)
        self.vfs = Vfs(self)
        self.vfs.register("/proc/kallsyms", self.kallsyms.proc_text, mode=0o444)
        self.shells: list[Shell] = []
        self.dead_tasks: set[int] = set()
        self.pending_calls: list[tuple[int, tuple[int, ...]]] = []
        self.stats = MachineStats()
        self._in_round = False
        self._deferred: list[Callable[[], None]] = []
        self._current_cpu: Cpu | None = None

        self._load_images()
        cr3 = build_page_tables(self.ram)
        gdt = write_gdt(self.ram)
        self.ram.write(PARK_PHYS, b"\xf4" * 0x1000)
        self._until = PAGE_OFFSET + PARK_PHYS + 0x800    # never reached
        self.cpus = [Cpu(i, Engine(self.ram, cr3, gdt, self.mem.v2p)) for i in range(config.cpus)]
        self.ftrace = Ftrace(self)
        self.tracer = FunctionTracer(self)
        self.kprobes = Kprobes(self)
        self.walker = StackWalker(self)
        self.modules = ModuleManager(self)
        self.extensions: dict[str, object] = {}
        for cpu in self.cpus:
            cpu.engine.enable_counting(PAGE_OFFSET + PARK_PHYS)
            cpu.engine.hook_code_at(self.symbol_address("klpemu_hypercall_site"),
                                    lambda c=cpu: self._on_hypercall(c))
            cpu.engine.hook_syscall(lambda c=cpu: c.enter_syscall(self._entry_syscall))
        self._entry_syscall = self.symbol_address("entry_SYSCALL_64")
        self._halt_resume = self.symbol_address("native_safe_halt_resume")
        self._vector_entry = {v: self.symbol_address(n) for v, n in VECTOR_ENTRIES.items()}
        self._write_boot_params()
        self._start_cpu0()

    # ---------------------------------------------------------------- set-up
    def _load_images(self) -> None:
        for seg in self.kernel.segments:
            self.ram.write(seg.vaddr - 0xFFFFFFFF80000000, seg.data)
        for seg in self.user.segments:
            if not USER_BASE <= seg.vaddr < USER_BASE + 0x200000:
                raise ImageError(f"user image segment at {seg.vaddr:#x} is outside the user code page")
            self.ram.write(USER_CODE_PHYS + seg.vaddr - USER_BASE, seg.data)
        end = max(s.vaddr + s.memsize for s in self.kernel.segments) - 0xFFFFFFFF80000000
        if end > HEAP_PHYS or self.kernel.segments[0].vaddr - 0xFFFFFFFF80000000 != KERNEL_PHYS:
            raise ImageError(f"{self.kernel.path} does not fit the kernel's physical window")

    def _write_boot_params(self) -> None:
        o = self.offsets
        base = PAGE_OFFSET + BOOT_PARAMS_PHYS
        m = self.mem
        m.write_u64(base + o["BP_mem_start"], HEAP_PHYS)
        m.write_u64(base + o["BP_mem_end"], self.ram.size)
        m.write_u64(base + o["BP_nr_cpus"], len(self.cpus))
        m.write_u64(base + o["BP_user_entry"], self.user.entry)
        m.write_u64(base + o["BP_user_stacks_base"], USER_STACKS_BASE)
        m.write_u64(base + o["BP_shell_mailbox"], MAILBOX_BASE)
        cmdline = self.config.cmdline.encode()[:255]
        m.write(base + o["BP_cmdline"], cmdline + b"\0")
        self._clock_addr = base + o["BP_clock_ns"]
        self.boot_params = base

    def _start_cpu0(self) -> None:
        cpu = self.cpus[0]
        e = cpu.engine
        stack = self.symbol_address("init_stack") + THREAD_SIZE
        e.set_reg("rsp", stack)
        e.set_reg("rdi", self.boot_params)
        e.set_reg("rip", self.symbol_address("startup_64"))
        cpu.online = True
        self.shells.append(Shell(self, MAILBOX_BASE))

    def start_secondary(self, index: int, stack_top: int) -> None:
        """HC_CPU_UP: the guest asks to start CPU `index` on its idle stack."""
        if not 0 < index < len(self.cpus):
            raise EmuError(f"guest asked to start CPU {index}, which does not exist")
        cpu = self.cpus[index]
        e = cpu.engine
        e.set_reg("rsp", stack_top)
        e.set_reg("rdi", index)
        e.set_reg("rip", self.symbol_address("secondary_startup_64"))
        cpu.online = True
        cpu.next_tick_ns = (self.clock_ns // TICK_NS + 1) * TICK_NS

    # ---------------------------------------------------------------- symbols
    def symbol_address(self, name: str) -> int:
        sym = self.kernel.find_symbol(name)
        if sym is None:
            raise EmuError(f"the kernel has no symbol {name}")
        return sym.address

    def symbolize(self, address: int) -> str:
        return self.kallsyms.symbolize(address)

    # ---------------------------------------------------------------- log
    def log(self, text: str, level: int = 6) -> None:
        """Append to the kernel log at the current virtual time."""
        self.dmesg_log.append(self.clock_ns, level, text)

    def dmesg(self) -> str:
        return self.dmesg_log.text()

    def dmesg_lines(self) -> list[str]:
        return [r.text for r in self.dmesg_log.records()]

    # ---------------------------------------------------------------- running
    def boot(self, timeout_s: float = 5.0) -> "Machine":
        """Run until start_kernel has finished and the shell is waiting."""
        self.run_until(lambda: self.booted, timeout_s=timeout_s, what="the kernel to boot")
        self.run_until(self.shells[0].is_idle, timeout_s=timeout_s, what="the shell to start")
        return self

    def run(self, seconds: float) -> None:
        """Run for `seconds` of virtual time."""
        target = self.clock_ns + int(seconds * 1e9)
        while self.clock_ns < target:
            self._check_alive()
            if not self._round(limit_ns=target):
                self.clock_ns = target

    def run_until(self, predicate: Callable[[], bool], timeout_s: float = 60.0,
                  what: str = "a condition") -> None:
        """Run until predicate() holds; EmuError after timeout_s of virtual time."""
        deadline = self.clock_ns + int(timeout_s * 1e9)
        while not predicate():
            self._check_alive()
            if self.clock_ns >= deadline:
                raise EmuError(f"timed out after {timeout_s} virtual seconds waiting for {what}")
            if not self._round(limit_ns=deadline):
                raise EmuError(f"the guest went idle with nothing pending while waiting for {what}")

    def _check_alive(self) -> None:
        if self.crashed:
            raise MachineCrashed(f"the machine crashed earlier: {self.crashed}")

    def _round(self, limit_ns: int) -> bool:
        """One round of quanta. False when every CPU idles with no event before limit_ns."""
        now = self.clock_ns
        for cpu in self.cpus:
            if not cpu.online or cpu.dead:
                continue
            if cpu.halted:
                if cpu.wake_at_ns and now >= cpu.wake_at_ns:
                    cpu.pending.add(LOCAL_TIMER_VECTOR)
                if cpu.pending:
                    cpu.halted = False
                    cpu.next_tick_ns = (now // TICK_NS + 1) * TICK_NS
            elif now >= cpu.next_tick_ns:
                cpu.pending.add(LOCAL_TIMER_VECTOR)
                cpu.next_tick_ns = (now // TICK_NS + 1) * TICK_NS
        runnable = [c for c in self.cpus if c.runnable]
        if not runnable:
            wakes = [c.wake_at_ns for c in self.cpus if c.online and c.halted and c.wake_at_ns]
            nxt = min(wakes, default=None)
            if nxt is None or nxt > limit_ns:
                return False
            self.clock_ns = max(now, nxt)
            return True
        events = [limit_ns, *(c.next_tick_ns for c in runnable)]
        events += [c.wake_at_ns for c in self.cpus if c.online and c.halted and c.wake_at_ns]
        span = max(1, (min(events) - now + NS_PER_INSN - 1) // NS_PER_INSN)
        quantum = min(self.rng.randint(self.config.quantum_min, self.config.quantum_max), span)
        self.mem.write_u64(self._clock_addr, now)
        self._in_round = True
        try:
            for cpu in runnable:
                if cpu.runnable:
                    self._run_quantum(cpu, quantum)
        finally:
            self._in_round = False
            self._current_cpu = None
        self.clock_ns = now + quantum * NS_PER_INSN
        self.stats.rounds += 1
        self._run_deferred()
        self._watchdog()
        return True

    def _run_quantum(self, cpu: Cpu, quantum: int) -> None:
        if cpu.pending and cpu.interrupts_enabled():
            vector = max(cpu.pending)
            cpu.pending.discard(vector)
            cpu.deliver_interrupt(vector, self._vector_entry[vector], self.mem, self._kernel_stack_top(cpu))
            self.stats.interrupts += 1
        self._current_cpu = cpu
        cpu.engine.clear_fault_address()
        fault = cpu.engine.run(cpu.engine.reg("rip"), self._until, quantum)
        self.stats.quanta += 1
        if fault is not None:
            self._handle_fault(cpu, fault)
        elif cpu.engine.reg("rip") == self._halt_resume:
            cpu.halted = True
        elif not self._deferred:
            self.stats.instructions += quantum

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

    # ---------------------------------------------------------------- interrupts
    def raise_interrupt(self, index: int, vector: int) -> None:
        if not 0 <= index < len(self.cpus):
            raise EmuError(f"no CPU {index} to interrupt")
        if vector not in self._vector_entry:
            raise EmuError(f"no interrupt vector {vector:#x}")
        self.cpus[index].pending.add(vector)

    def ring_doorbell(self) -> None:
        """Tell the guest that the emulator posted work (wakes the shells)."""
        self.raise_interrupt(0, DOORBELL_VECTOR)

    # ---------------------------------------------------------------- guest state
    def pcpu_address(self, index: int) -> int:
        return self._pcpu_areas + index * self.offsets["PCPU_size"]

    def current_task(self, cpu: Cpu) -> int:
        """The task running on `cpu` (its per-CPU current_task)."""
        return self.mem.read_u64(self.pcpu_address(cpu.index) + self.offsets["PCPU_current_task"])

    def _kernel_stack_top(self, cpu: Cpu) -> int:
        return self.mem.read_u64(self.pcpu_address(cpu.index) + self.offsets["PCPU_top_of_stack"])

    def tasks(self) -> list[TaskView]:
        """Every live task, in creation order (the guest's task_list)."""
        head = self.symbol_address("task_list")
        off = self.offsets["TASK_tasks"]
        out, node = [], self.mem.read_u64(head)
        while node != head and len(out) < 100_000:
            out.append(TaskView(self, node - off))
            node = self.mem.read_u64(node)
        return out

    def task(self, pid: int) -> TaskView:
        for t in self.tasks():
            if t.pid == pid and not (pid == 0 and t.cpu != 0):
                return t
        raise EmuError(f"no task with pid {pid}")

    def running_on(self, task: TaskView) -> Cpu | None:
        """The CPU whose current task this is, if it is on one."""
        for cpu in self.cpus:
            if cpu.online and self.current_task(cpu) == task.address:
                return cpu
        return None

    def task_exited(self, task: int) -> None:
        self.dead_tasks.add(task)
        self.guest_calls.task_died(task)

    def call(self, function: str | int, *args: int, returns: str = "long") -> int:
        """Call a kernel function with integer arguments and return its result,
        read as the C type `returns` ("long", "int" or "void"). It runs in
        process context on a shell's kernel stack, entered through a syscall,
        and may sleep."""
        if returns not in ("long", "int", "void"):
            raise EmuError(f"returns must be long, int or void, not {returns!r}")
        address = self.symbol_address(function) if isinstance(function, str) else function
        if self.kallsyms.lookup(address) is None:
            raise EmuError(f"{address:#x} is not in kernel text")
        self.pending_calls.append((address, tuple(a & 0xFFFFFFFFFFFFFFFF for a in args)))
        value = self.shell.syscall(SYS_KLPEMU_CALL) & 0xFFFFFFFFFFFFFFFF
        if returns == "void":
            return 0
        bits = 64 if returns == "long" else 32
        value &= (1 << bits) - 1
        return value - (1 << bits) if value >> (bits - 1) else value

    # ---------------------------------------------------------------- files
    @property
    def shell(self) -> Shell:
        return self.shells[0]

    def spawn_shell(self) -> Shell:
        """Start another shell task (via the first one); returns its driver."""
        if len(self.shells) >= MAX_SHELLS:
            raise EmuError(f"at most {MAX_SHELLS} shells")
        shell = Shell(self, MAILBOX_BASE + len(self.shells) * MAILBOX_SIZE)
        shell.pid = self.shell.spawn(0, "sh", shell.mailbox)
        self.shells.append(shell)
        self.run_until(shell.is_idle, timeout_s=5, what="the new shell to start")
        return shell

    def insmod(self, path: str | Path, args: str = "") -> None:
        """insmod: the shell stages the file and calls init_module(2).
        ShellError (with the errno) if the kernel refuses it."""
        data = Path(path).read_bytes()
        if len(data) > STAGING_SIZE:
            raise EmuError(f"{path} is larger than the {STAGING_SIZE >> 20} MiB staging area")
        self.mem.write(USER_STAGING, data)
        self.shell.check(self.shell.syscall(SYS_INIT_MODULE, USER_STAGING, len(data),
                                            self.shell.put_string(args)), f"insmod {path}")

    def rmmod(self, name: str) -> None:
        """rmmod: delete_module(2) with O_NONBLOCK, as kmod does."""
        self.shell.check(self.shell.syscall(SYS_DELETE_MODULE, self.shell.put_string(name), O_NONBLOCK),
                         f"rmmod {name}")

    def exists(self, path: str) -> bool:
        """Whether a /proc or /sys path exists (no syscall: a look at the trees)."""
        return self.vfs.exists(path) or path in self.guest_entries() or self.is_dir(path)

    def is_dir(self, path: str) -> bool:
        """A directory of the Python trees, or of the guest's table (a kobject's
        directory, or one implied by the files below it)."""
        path = path.rstrip("/") or "/"
        if self.vfs.is_dir(path):
            return True
        below = path.rstrip("/") + "/"
        return any((p == path and mode & S_IFDIR) or p.startswith(below)
                   for p, mode in self.guest_entries().items())

    def listdir(self, path: str) -> list[str]:
        below = path.rstrip("/") + "/"
        guest = {p[len(below):].split("/", 1)[0] for p in self.guest_entries() if p.startswith(below)}
        return sorted(guest.union(self.vfs.listdir(path)))

    def file_mode(self, path: str) -> int:
        """Permission bits (0o755 for a directory)."""
        mode = self.vfs.mode(path)
        if mode is None:
            mode = self.guest_entries().get(path)
            if mode is None and self.is_dir(path):
                mode = 0o755
        if mode is None:
            raise EmuError(f"{path} does not exist")
        return mode & 0o7777

    def guest_entries(self) -> dict[str, int]:
        """The guest's own VFS table (/proc files, sysfs kobjects and their
        attributes): path -> mode, S_IFDIR set for a directory."""
        base, stride = self.symbol_address("entries"), self.offsets["PDE_size"]
        path_off, mode_off = self.offsets["PDE_path"], self.offsets["PDE_mode"]
        count = self.mem.read_s32(self.symbol_address("nr_entries"))
        entries = {}
        for i in range(count):
            entry = base + i * stride
            path = self.mem.read_cstr(entry + path_off, 64)
            if path:                                  # an empty path is a free slot
                entries[path] = int.from_bytes(self.mem.read(entry + mode_off, 2), "little")
        return entries

    def read_file(self, path: str) -> str:
        """`cat PATH` through the guest shell."""
        return self.shell.cat(path)

    def write_file(self, path: str, data: str) -> int:
        """`echo DATA > PATH` through the guest shell (a newline is added)."""
        return self.shell.write(path, data if data.endswith("\n") else data + "\n")

    # ---------------------------------------------------------------- faults
    def _handle_fault(self, cpu: Cpu, fault: CpuFault) -> None:
        oops = Oops.from_fault(self, cpu, fault)
        self.oopses.append(oops)
        for line in oops.lines:
            self.log(line, level=4)
        if oops.fatal:
            self.crash(oops.fatal)
            return
        oops.kill_task(self, cpu)

    def crash(self, reason: str) -> None:
        """The kernel panicked or hung: stop every CPU for good."""
        self.crashed = reason
        for cpu in self.cpus:
            cpu.dead = True
            if self._in_round:
                cpu.engine.stop()

    def _watchdog(self) -> None:
        from emu.kernel.oops import lockup_report
        thresh = int(self.config.watchdog_thresh_s * 1e9)
        now = self.clock_ns
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
                self._hang(cpu, text, lockup_report(self, cpu, f"NMI watchdog: {text}"))
                return
            preempt = self.mem.read_s32(self.pcpu_address(cpu.index) + self.offsets["PCPU_preempt_count"])
            if preempt == 0 or cpu.irqs_off_since_ns is not None:
                cpu.preempt_off_since_ns = None
            elif cpu.preempt_off_since_ns is None:
                cpu.preempt_off_since_ns = now
            elif now - cpu.preempt_off_since_ns > 2 * thresh:
                task = TaskView(self, self.current_task(cpu))
                stuck = (now - cpu.preempt_off_since_ns) // 1_000_000_000
                text = f"BUG: soft lockup - CPU#{cpu.index} stuck for {stuck}s! [{task.comm}:{task.pid}]"
                self._hang(cpu, text, lockup_report(self, cpu, f"watchdog: {text}"))
                return

    def _hang(self, cpu: Cpu, text: str, report: list[str]) -> None:
        for line in report:
            self.log(line, level=0)
        self.log(f"Kernel panic - not syncing: {'Hard LOCKUP' if 'hard' in text else 'softlockup: hung tasks'}",
                 level=0)
        self.crash(text)
        raise GuestHang(text, report="\n".join(report))

    # ---------------------------------------------------------------- hypercalls
    def _on_hypercall(self, cpu: Cpu) -> None:
        self.stats.hypercalls += 1
        e = cpu.engine
        nr = e.reg("rax")
        call = REGISTRY.get(nr)
        if call is None:
            raise EmuError(f"the guest made unknown hypercall {nr} at {self.symbolize(self._caller(cpu))}")
        args = (e.reg("rdi"), e.reg("rsi"), e.reg("rdx"), e.reg("rcx"))
        if call.blocking:
            result = self.guest_calls.start(cpu, self.current_task(cpu), call.handler, args)
        else:
            result = call.handler(self, cpu, *args)
        if result is not None:
            # Return from klpemu_hypercall here rather than let its `ret` run:
            # a service that stopped the CPU (stop_machine for a code patch)
            # would otherwise resume at the hook and run the hypercall again.
            rsp = e.reg("rsp")
            e.set_reg("rax", result)
            e.set_reg("rip", self.mem.read_u64(rsp))
            e.set_reg("rsp", rsp + 8)

    def _caller(self, cpu: Cpu) -> int:
        return self.mem.read_u64(cpu.engine.reg("rsp"))

    # ---------------------------------------------------------------- code
    def text_poke(self, address: int, data: bytes) -> None:
        """Write guest code with every CPU stopped, then drop every CPU's stale
        translations of it (the emulator's sync_core IPI)."""
        self.text_poke_many([(address, data)])

    def text_poke_many(self, writes: list[tuple[int, bytes]]) -> None:
        """Several code writes in one stop_machine."""
        def poke() -> None:
            for address, data in writes:
                self.mem.write(address, data)
                for cpu in self.cpus:
                    cpu.engine.invalidate(address, len(data))
        self.stop_machine(poke)
