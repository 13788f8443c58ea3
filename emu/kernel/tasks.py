"""Guest tasks: views of struct task_struct read from guest memory on each
access, and the helpers that find them (drgn-style: for_each_task,
find_task)."""
from __future__ import annotations

from emu.arch.cpu import Cpu
from emu.kernel.program import Program

MAX_TASKS = 100_000    # a walk of the task list that never ends is a corrupt list
# task_struct.__state bits (include/linux/sched.h)
TASK_RUNNING, TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE = 0x0000, 0x0001, 0x0002
_STATE_LETTERS = {TASK_RUNNING: "R", TASK_INTERRUPTIBLE: "S", TASK_UNINTERRUPTIBLE: "D", 4: "T", 0x10: "X",
                  0x20: "Z", 0x80: "X"}


class TaskView:
    """A guest `struct task_struct` at `address` (offsets from the guest's table)."""

    __slots__ = ("prog", "address")

    def __init__(self, prog: Program, address: int) -> None:
        self.prog = prog
        self.address = address

    def _u64(self, field: str) -> int:
        return self.prog.mem.read_u64(self.address + self.prog.offsets[field])

    def _s32(self, field: str) -> int:
        return self.prog.mem.read_s32(self.address + self.prog.offsets[field])

    @property
    def pid(self) -> int:
        return self._s32("TASK_pid")

    @property
    def comm(self) -> str:
        return self.prog.mem.read_cstr(self.address + self.prog.offsets["TASK_comm"], 16)

    @property
    def state(self) -> int:
        return self._s32("TASK_state") & 0xFFFFFFFF

    @property
    def state_letter(self) -> str:
        if self.state == 0:
            return "R"
        return next((l for bit, l in _STATE_LETTERS.items() if bit and self.state & bit), "?")

    @property
    def cpu(self) -> int:
        return self._s32("TASK_cpu")

    @property
    def flags(self) -> int:
        return self._s32("TASK_flags") & 0xFFFFFFFF

    @property
    def ti_flags(self) -> int:
        return self._u64("TASK_flags_ti")

    def _set_ti_flag(self, bit: int, on: bool) -> None:
        flags = self.ti_flags
        self.prog.mem.write_u64(self.address + self.prog.offsets["TASK_flags_ti"],
                                flags | 1 << bit if on else flags & ~(1 << bit))

    @property
    def patch_pending(self) -> bool:
        """TIF_PATCH_PENDING: the task has yet to switch to the transition's target."""
        return bool(self.ti_flags >> self.prog.offsets["TIF_PATCH_PENDING_"] & 1)

    @patch_pending.setter
    def patch_pending(self, on: bool) -> None:
        self._set_ti_flag(self.prog.offsets["TIF_PATCH_PENDING_"], on)

    @property
    def never_ran(self) -> bool:
        """TIF_FORK (legacy switch_to only): set until the task's first switch-in."""
        bit = self.prog.offsets.get("TIF_FORK_")
        return bit is not None and bool(self.ti_flags >> bit & 1)

    @property
    def is_kthread(self) -> bool:
        return bool(self.flags & self.prog.offsets["PF_KTHREAD_"])

    @property
    def is_idle(self) -> bool:
        return bool(self.flags & self.prog.offsets["PF_IDLE_"])

    @property
    def on_cpu(self) -> bool:
        return bool(self._s32("TASK_on_cpu"))

    @property
    def patch_state(self) -> int:
        return self._s32("TASK_patch_state")

    @patch_state.setter
    def patch_state(self, state: int) -> None:
        self.prog.mem.write(self.address + self.prog.offsets["TASK_patch_state"],
                            (state & 0xFFFFFFFF).to_bytes(4, "little"))

    @property
    def stack(self) -> int:
        return self._u64("TASK_stack")

    @property
    def thread_sp(self) -> int:
        return self._u64("TASK_thread_sp")

    @property
    def nvcsw(self) -> int:
        return self._u64("TASK_nvcsw")

    @property
    def nivcsw(self) -> int:
        return self._u64("TASK_nivcsw")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskView) and other.address == self.address

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"<task {self.pid} {self.comm} at {self.address:#x}>"


def for_each_task(prog: Program) -> list[TaskView]:
    """Every live task, in creation order (the guest's task_list)."""
    head = prog.symbol_address("task_list")
    off = prog.offsets["TASK_tasks"]
    out, node = [], prog.mem.read_u64(head)
    while node != head and len(out) < MAX_TASKS:
        out.append(TaskView(prog, node - off))
        node = prog.mem.read_u64(node)
    return out


def find_task(prog: Program, pid: int) -> TaskView | None:
    """The task with `pid` (pid 0: the boot CPU's idle task), or None."""
    return next((t for t in for_each_task(prog) if t.pid == pid and not (pid == 0 and t.cpu != 0)), None)


def cpu_curr(prog: Program, index: int) -> TaskView:
    """The task running on CPU `index`."""
    return TaskView(prog, prog.cpu_curr(index))


def running_on(prog: Program, cpus: list[Cpu], task: TaskView) -> Cpu | None:
    """The online CPU whose current task `task` is, if any."""
    for cpu in cpus:
        if cpu.online and prog.cpu_curr(cpu.index) == task.address:
            return cpu
    return None
