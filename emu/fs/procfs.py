"""The /proc files the machine itself serves: /proc/kallsyms and
/proc/<pid>/stack (the kernel's proc_pid_stack: a best-effort walk)."""
from __future__ import annotations

import re

from emu.fs.vfs import FileNode, Vfs
from emu.kernel.program import Program
from emu.kernel.tasks import find_task
from emu.unwind import FrameKind, StackTrace
from emu.unwind.stack_walker import StackWalker


def register_procfs(vfs: Vfs, prog: Program, walker: StackWalker) -> None:
    vfs.register("/proc/kallsyms", prog.kallsyms.proc_text, mode=0o444)

    def proc_stack(match: re.Match[str]) -> FileNode | None:
        task = find_task(prog, int(match.group(1)))
        if task is None:
            return None

        def show() -> str:
            trace = walker.trace(task, reliable=False)
            kernel = StackTrace(tuple(f for f in trace.frames if f.kind != FrameKind.USER),
                                trace.reliable, trace.reason)
            return "".join(f"[<0>] {line}\n" for line in walker.format(kernel))
        return FileNode(show, None, 0o400)
    vfs.register_dynamic(r"/proc/(\d+)/stack", proc_stack)
