"""The machine: a gcc-built kernel on N emulated CPUs, in virtual time.

Machine is the composition root: it loads the images into RAM, builds the
parts (the run loop, the kernel's services, ftrace, the unwinder, modules,
the VFS), hands each the narrow pieces it uses, registers every part's
hypercalls in this machine's table, and offers the API users script
(boot, run, files through the guest shell, insmod, call). The parts never
see the Machine.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from emu.abi import DOORBELL_VECTOR, FIXTURES, KERNEL_VIRT_BASE, NR, O_NONBLOCK, PAGE_OFFSET, THREAD_SIZE, USER_BASE, abi
from emu.arch.cpu import Cpu
from emu.arch.engine import Engine
from emu.arch.memory import (BOOT_PARAMS_PHYS, HEAP_PHYS, KERNEL_PHYS, MAX_HEAP, USER_CODE_PHYS, AddressSpace, MiB,
                             Ram, build_page_tables, write_gdt)
from emu.elf.image import ElfImage
from emu.errors import EmuError, ImageError, ShellError
from emu.faults.hung_task import HungTaskDetector
from emu.faults.oops import FaultHandler, Oops
from emu.faults.watchdog import Watchdog
from emu.fs.files import FileTree
from emu.fs.procfs import register_procfs
from emu.fs.vfs import Vfs
from emu.kernel.dyndbg import DynamicDebug
from emu.kernel.guestcall import GuestCalls
from emu.kernel.hypercalls import HypercallTable
from emu.kernel.kallsyms import Kallsyms
from emu.kernel.printk import KernelLog, LogBuffer
from emu.kernel.program import Program
from emu.kernel.services import KernelServices
from emu.kernel.shell import Mailbox, Shell
from emu.kernel.tasks import TaskView, find_task, for_each_task, running_on
from emu.kernel.text_patching import TextPatcher
from emu.module.manager import ModuleManager
from emu.preempt import PreemptionPoints
from emu.runloop import PARK_PHYS, MachineStats, RunLoop
from emu.schedule import Schedule, ScheduleSpec, make_schedule
from emu.snapshot import Snapshot
from emu.time import VirtualClock
from emu.trace.ftrace import Ftrace
from emu.trace.kprobes import Kprobes
from emu.trace.tracer import FunctionTracer
from emu.trace.tracefs_funcs import register_function_files
from emu.unwind.stack_walker import StackWalker

log = logging.getLogger(__name__)

LOG_PHYS, LOG_SIZE = 0x100000, 0x400000
MAILBOX_BASE = USER_BASE + 0x200000   # user data page: shell mailboxes, then stacks
MAILBOX_SIZE = 0x7200                 # MAX_SHELLS of them fill the 1 MiB below the stacks
MAX_SHELLS = 35
USER_STACKS_BASE = USER_BASE + 0x300000
USER_STAGING = abi("USER_STAGING")
STAGING_SIZE = 0x200000
BOOT_SCHEDULE = ScheduleSpec("rr", 0)
MODULE_SYSCALLS = ("__x64_sys_init_module", "__x64_sys_delete_module")
DYNDBG_CONTROL = ("/sys/kernel/debug/dynamic_debug/control", "/proc/dynamic_debug/control")


def resolve_kernel(kernel: str | Path) -> Path:
    """A flavour name (`modern`, `legacy`) or a path to a vmlinux."""
    path = Path(kernel)
    if path.exists():
        return path
    flavour = FIXTURES / "build" / f"vmlinux-{kernel}"
    if flavour.exists():
        return flavour
    raise ImageError(f"no kernel {kernel!r}: not a file, and no built flavour {flavour}")


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
    # how long a shell command may run before its task is reported as hung
    # (emu.faults.hung_task; the kernel's hung_task_timeout_secs is 120)
    hung_task_timeout_s: float = 10.0
    # how the CPUs interleave after boot (emu.schedule: rr, random, pct,
    # targeted, with parameters: "pct,depth=2"), drawn from `seed`; boot
    # itself always runs the same way, so that every schedule starts from
    # the same booted machine
    schedule: str = "random"
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
        if config.ram_mib * MiB - HEAP_PHYS > MAX_HEAP:
            raise EmuError(f"ram_mib must be at most {(HEAP_PHYS + MAX_HEAP) // MiB} (the kernel stacks' area "
                           f"maps a heap of {MAX_HEAP // MiB} MiB), not {config.ram_mib}")
        if not 1 <= config.quantum_min <= config.quantum_max:
            raise EmuError("quantum_min must be >= 1 and <= quantum_max")
        self.config = config
        self.kernel = ElfImage(resolve_kernel(config.kernel))
        self.user = ElfImage(config.user_image)
        self.mailbox_layout = Mailbox.from_offsets(self.user.offsets(), MAILBOX_SIZE)
        self.ram = Ram(config.ram_mib * MiB)
        self.mem = AddressSpace(self.ram)
        self.kallsyms = Kallsyms()
        self.kallsyms.add(self.kernel.symbols)
        self.prog = Program(self.mem, self.kernel, self.kallsyms)
        self.offsets = self.prog.offsets
        self.clock = VirtualClock()
        self.klog = KernelLog(LogBuffer(self.ram, LOG_PHYS, LOG_SIZE), self.clock)
        self._load_images()

        cr3 = build_page_tables(self.ram)
        gdt = write_gdt(self.ram)
        self.ram.write(PARK_PHYS, b"\xf4" * 0x1000)
        self.cpus = [Cpu(i, Engine(self.ram, cr3, gdt, self.mem.v2p)) for i in range(config.cpus)]
        self.boot_params = PAGE_OFFSET + BOOT_PARAMS_PHYS
        self.walker = StackWalker(self.prog, self.cpus)
        self.faults = FaultHandler(self.prog, self.walker, self.klog, self._crash)
        self.schedule_spec = ScheduleSpec.parse(config.schedule, seed=config.seed)
        self.runloop = RunLoop(self.prog, self.cpus, self.clock, self._schedule(BOOT_SCHEDULE),
                               clock_addr=self.boot_params + self.offsets["BP_clock_ns"],
                               on_fault=self.faults)
        self.watchdog = Watchdog(self.prog, self.walker, self.cpus, self.clock, self.klog,
                                 self.runloop.crash, config.watchdog_thresh_s)
        self.runloop.after_round.append(self.watchdog.check)
        self.text = TextPatcher(self.mem, self.cpus, self.runloop.stop_machine)
        self.preempt = PreemptionPoints(self.cpus, lambda cpu: self.runloop.schedule.preempt_here(cpu))
        self.preempt.set("stack switches", {s.load_ip for s in self.walker.switches})
        self.preempt.set("module syscalls", {self.prog.symbol_address(name) for name in MODULE_SYSCALLS})

        self.guest_calls = GuestCalls(self.prog)
        self.services = KernelServices(self.prog, self.klog, self.guest_calls)
        self.hung_task = HungTaskDetector(self.prog, self.walker, self.cpus, self.klog, self.run,
                                          self.run_until, self.services.dead_tasks, config.hung_task_timeout_s,
                                          lockup_s=2 * config.watchdog_thresh_s, send_signal=self.send_signal)
        self.vfs = Vfs(self.mem)
        self.files = FileTree(self.prog, self.vfs)
        self.vfs.directory = self.files.is_dir
        self.dyndbg = DynamicDebug(self.klog, self.mem, config.cmdline)
        for control in DYNDBG_CONTROL:
            self.vfs.register(control, self.dyndbg.show, lambda ctx, text: self.dyndbg.store(text), mode=0o644)
        register_procfs(self.vfs, self.prog, self.walker)
        self.ftrace = Ftrace(self.prog, self.text, self.vfs, self.cpus, self._alloc_pages)
        self.modules = ModuleManager(self.prog, self.klog, self.vfs, self.text,
                                     listeners=[self.kallsyms, self.ftrace, self.walker], debug=self.dyndbg)
        self.tracer = FunctionTracer(self.prog, self.ftrace, self.vfs, len(self.cpus), self.clock)
        register_function_files(self.vfs, self.ftrace, self.kallsyms)
        self.kprobes = Kprobes(self.prog, self.ftrace, self.text, self._alloc_pages)
        self.hypercalls = HypercallTable(self.prog, self.guest_calls, self.faults)
        for part in (self.runloop, self.services, self.guest_calls, self.vfs, self.modules, self.kprobes,
                     self.dyndbg):
            self.hypercalls.register_object(part)
        # what layers above attach (the livepatch core: "klp")
        self.extensions: dict[str, object] = {}

        entry_syscall = self.prog.symbol_address("entry_SYSCALL_64")
        hypercall_site = self.prog.symbol_address("klpemu_hypercall_site")
        for cpu in self.cpus:
            cpu.engine.hook_hypercall(hypercall_site, partial(self.hypercalls.dispatch, cpu))
            cpu.engine.hook_syscall(entry_syscall)
        self._write_boot_params()
        self.runloop.start_cpu(0, self.prog.symbol_address("startup_64"),
                               self.prog.symbol_address("init_stack") + THREAD_SIZE, self.boot_params)
        self.shells: list[Shell] = [self._shell(MAILBOX_BASE, respawned=self._init_shell)]

    # ---------------------------------------------------------------- set-up
    def _load_images(self) -> None:
        for seg in self.kernel.segments:
            self.ram.write(seg.vaddr - KERNEL_VIRT_BASE, seg.data)
        for seg in self.user.segments:
            if not USER_BASE <= seg.vaddr < USER_BASE + 0x200000:
                raise ImageError(f"user image segment at {seg.vaddr:#x} is outside the user code page")
            self.ram.write(USER_CODE_PHYS + seg.vaddr - USER_BASE, seg.data)
        end = max(s.vaddr + s.memsize for s in self.kernel.segments) - KERNEL_VIRT_BASE
        if end > HEAP_PHYS or self.kernel.segments[0].vaddr - KERNEL_VIRT_BASE != KERNEL_PHYS:
            raise ImageError(f"{self.kernel.path} does not fit the kernel's physical window")

    def _write_boot_params(self) -> None:
        o, m, base = self.offsets, self.mem, self.boot_params
        m.write_u64(base + o["BP_mem_start"], HEAP_PHYS)
        m.write_u64(base + o["BP_mem_end"], self.ram.size)
        m.write_u64(base + o["BP_nr_cpus"], len(self.cpus))
        m.write_u64(base + o["BP_user_entry"], self.user.entry)
        m.write_u64(base + o["BP_user_stacks_base"], USER_STACKS_BASE)
        m.write_u64(base + o["BP_shell_mailbox"], MAILBOX_BASE)
        m.write(base + o["BP_cmdline"], self.config.cmdline.encode()[:255] + b"\0")

    def _shell(self, mailbox: int, respawned: Callable[[], TaskView | None] | None = None) -> Shell:
        return Shell(self.prog, self.mailbox_layout, mailbox, run_until=self.run_until, ring_doorbell=self.ring_doorbell,
                     dead_tasks=self.services.dead_tasks, respawned=respawned,
                     hang_timeout_s=self.hung_task.timeout_s, on_hang=self.hung_task.shell_hung)

    def _init_shell(self) -> TaskView | None:
        """The task main.c's shell_task names: the first shell, or the one
        the kernel respawned after it died."""
        address = self.mem.read_u64(self.prog.symbol_address("shell_task"))
        return TaskView(self.prog, address) if address else None

    def _schedule(self, spec: ScheduleSpec) -> Schedule:
        return make_schedule(spec, self.config.quantum_min, self.config.quantum_max, len(self.cpus))

    def set_schedule(self, spec: ScheduleSpec) -> None:
        """Interleave the CPUs by `spec` from now on (boot() applies the config's)."""
        self.schedule_spec = spec
        self.runloop.schedule = self._schedule(spec)
        self.preempt.arm(spec.strategy == "targeted")

    def _alloc_pages(self, size: int) -> int:
        return self.modules.alloc_pages(size)

    def _crash(self, reason: str) -> None:
        self.runloop.crash(reason)

    # ---------------------------------------------------------------- state
    @property
    def clock_ns(self) -> int:
        """Virtual nanoseconds since boot."""
        return self.clock.ns

    @property
    def booted(self) -> bool:
        return self.services.booted

    @property
    def crashed(self) -> str | None:
        """Why the machine stopped for good (a panic, a lockup), or None."""
        return self.runloop.crashed

    @property
    def oopses(self) -> list[Oops]:
        return self.faults.oopses

    @property
    def stats(self) -> MachineStats:
        stats = self.runloop.stats
        stats.hypercalls = self.hypercalls.count
        return stats

    @property
    def dmesg_log(self) -> LogBuffer:
        return self.klog.buffer

    # ---------------------------------------------------------------- symbols and the log
    def symbol_address(self, name: str) -> int:
        return self.prog.symbol_address(name)

    def symbolize(self, address: int) -> str:
        return self.prog.symbolize(address)

    def log(self, text: str, level: int = 6) -> None:
        """Append to the kernel log at the current virtual time."""
        self.klog.log(text, level)

    def dmesg(self) -> str:
        return self.klog.text()

    def dmesg_lines(self) -> list[str]:
        return self.klog.lines()

    # ---------------------------------------------------------------- running
    def boot(self, timeout_s: float = 5.0) -> "Machine":
        """Run until start_kernel has finished and the shell is waiting."""
        self.run_until(lambda: self.booted, timeout_s=timeout_s, what="the kernel to boot")
        self.run_until(self.shells[0].is_idle, timeout_s=timeout_s, what="the shell to start")
        self.set_schedule(self.schedule_spec)
        return self

    def run(self, seconds: float) -> None:
        """Run for `seconds` of virtual time."""
        self.runloop.run(seconds)

    def run_until(self, predicate: Callable[[], bool], timeout_s: float = 60.0,
                  what: str = "a condition") -> None:
        """Run until predicate() holds; GuestTimeout after timeout_s of virtual time."""
        self.runloop.run_until(predicate, timeout_s, what)

    def snapshot(self) -> Snapshot["Machine"]:
        """This machine as it is now, to start runs from: `snapshot().run(fn)`
        calls fn(machine) on a copy, in a forked child (emu.snapshot)."""
        if self.runloop.in_round:
            raise EmuError("a snapshot is taken between runs, not while the CPUs run (from a hook or hypercall)")
        return Snapshot(self, self._state_mark)

    def _state_mark(self) -> tuple[int, int, int, int]:
        """What changes whenever the machine runs or logs (a snapshot's staleness
        check): a record logged to a full buffer is counted as dropped."""
        return self.clock.ns, self.runloop.stats.rounds, *self.klog.buffer.header()

    def stop_machine(self, fn: Callable[[], None]) -> None:
        """Run fn with every CPU stopped (now, or at the end of this round)."""
        self.runloop.stop_machine(fn)

    def ring_doorbell(self) -> None:
        """Tell the guest that the emulator posted work (wakes the shells)."""
        self.runloop.raise_interrupt(0, DOORBELL_VECTOR)

    def send_signal(self, pid: int, signo: int) -> None:
        """kill(pid, signo) from outside the guest: sent by the doorbell's
        interrupt handler, when it next runs (kill_pid_info)."""
        self.services.queue_signal(pid, signo)
        self.ring_doorbell()

    def text_poke(self, address: int, data: bytes) -> None:
        """Write guest code with every CPU stopped, coherently on every CPU."""
        self.text.poke(address, data)

    def text_poke_many(self, writes: list[tuple[int, bytes]]) -> None:
        self.text.poke_many(writes)

    # ---------------------------------------------------------------- tasks
    def tasks(self) -> list[TaskView]:
        """Every live task, in creation order (the guest's task_list)."""
        return for_each_task(self.prog)

    def task(self, pid: int) -> TaskView:
        task = find_task(self.prog, pid)
        if task is None:
            raise EmuError(f"no task with pid {pid}")
        return task

    def current_task(self, cpu: Cpu) -> int:
        """The task running on `cpu` (its per-CPU current_task)."""
        return self.prog.cpu_curr(cpu.index)

    def running_on(self, task: TaskView) -> Cpu | None:
        """The CPU whose current task this is, if it is on one."""
        return running_on(self.prog, self.cpus, task)

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
        self.services.pending_calls.append((address, tuple(a & 0xFFFFFFFFFFFFFFFF for a in args)))
        value = self.shell.syscall(NR["__NR_klpemu_call"]) & 0xFFFFFFFFFFFFFFFF
        if returns == "void":
            return 0
        bits = 64 if returns == "long" else 32
        value &= (1 << bits) - 1
        return value - (1 << bits) if value >> (bits - 1) else value

    # ---------------------------------------------------------------- the guest shell
    @property
    def shell(self) -> Shell:
        """init's shell, which every file operation, insmod and rmmod goes
        through: EmuError before boot() (the kernel has not started it)."""
        if not self.booted:
            raise EmuError("the machine has not booted: call boot() before using its shell "
                           "(insmod, rmmod, read_file, write_file …)")
        return self.shells[0]

    def spawn_shell(self) -> Shell:
        """Start another shell task (via the first one); returns its driver."""
        if len(self.shells) >= MAX_SHELLS:
            raise EmuError(f"at most {MAX_SHELLS} shells")
        shell = self._shell(MAILBOX_BASE + len(self.shells) * MAILBOX_SIZE)
        shell.pid = self.shell.spawn(0, "sh", shell.mailbox)
        self.shells.append(shell)
        self.run_until(shell.is_idle, timeout_s=5, what="the new shell to start")
        return shell

    def insmod(self, path: str | Path, args: str = "") -> None:
        """insmod: the shell stages the file and calls init_module(2).
        ShellError (with the errno) if the kernel refuses it."""
        data = Path(path).read_bytes()
        # the arguments follow the image in the staging area, as long as the
        # kernel takes them (strndup_user of the whole string), not a mailbox's
        uargs = (len(data) + 7) & ~7
        raw = args.encode(errors="surrogateescape") + b"\0"
        if uargs + len(raw) > STAGING_SIZE:
            raise EmuError(f"{path} and its arguments are larger than the {STAGING_SIZE >> 20} MiB staging area")
        self.mem.write(USER_STAGING, data)
        self.mem.write(USER_STAGING + uargs, raw)
        with self._kernel_reason():
            self.shell.check(self.shell.syscall(NR["__NR_init_module"], USER_STAGING, len(data),
                                                USER_STAGING + uargs), f"insmod {path}")

    def rmmod(self, name: str) -> None:
        """rmmod: delete_module(2) with O_NONBLOCK, as kmod does."""
        with self._kernel_reason():
            self.shell.check(self.shell.syscall(NR["__NR_delete_module"], self.shell.put_string(name),
                                                O_NONBLOCK), f"rmmod {name}")

    def read_file(self, path: str) -> str:
        """`cat PATH` through the guest shell."""
        with self._kernel_reason():
            return self.shell.cat(path)

    def write_file(self, path: str, data: str) -> int:
        """`echo DATA > PATH` through the guest shell (a newline is added)."""
        with self._kernel_reason():
            return self.shell.write(path, data if data.endswith("\n") else data + "\n")

    @contextmanager
    def _kernel_reason(self) -> Iterator[None]:
        """A ShellError of the operation carries what the kernel logged
        meanwhile (an errno alone hides the reason, which is in dmesg)."""
        mark = self.klog.count()
        try:
            yield
        except ShellError as exc:
            said = [r.text for r in self.klog.records()[mark:]]
            if not said:
                raise
            raise ShellError(f"{exc} (kernel: {' / '.join(said)})", errno=exc.errno, signal=exc.signal,
                             exit_status=exc.exit_status, pid=exc.pid) from None

    # what `ls`/`stat` would see (emu.fs.files.FileTree: no syscall)
    def exists(self, path: str) -> bool:
        return self.files.exists(path)

    def is_dir(self, path: str) -> bool:
        return self.files.is_dir(path)

    def listdir(self, path: str) -> list[str]:
        return self.files.listdir(path)

    def file_mode(self, path: str) -> int:
        return self.files.file_mode(path)
