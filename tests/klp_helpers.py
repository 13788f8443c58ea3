"""Helpers shared by the livepatch tests: where the fixture modules are, loading
a livepatch and waiting for its transition, disabling it (the selftests'
helpers of klpemu.selftest, the one implementation), reading its sysfs and
/proc files, and a reader blocked in a /proc file.

Every wait is on a condition in virtual time, never a fixed delay: the
timeout is the bound the test allows."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pytest

from emu import Machine, ShellError
from emu.kernel.shell import Shell
from emu.kernel.tasks import TaskView
from klp import Livepatch
from klpemu.scenario import ScenarioResult, ScenarioRunner
from klpemu.selftest import RETRY_INTERVAL, Die, Selftest, module_dirs_finder

MODULES = Path(__file__).resolve().parent.parent / "fixtures" / "build" / "modules"
SYSFS = "/sys/kernel/livepatch"
SEC = 1_000_000_000
TICK = SEC // 250
PATCHED = "test_klp_livepatch: this has been live patched\n"      # its /proc/cmdline


DYNDBG_CONTROL = "/sys/kernel/debug/dynamic_debug/control"


def set_dynamic_debug(m: Machine) -> None:
    """functions.sh's set_dynamic_debug: the livepatch core's pr_debug lines
    (initializing/completing … transition) on, klp_try_switch_task's off."""
    Selftest(m, module_dirs_finder([MODULES])).set_dynamic_debug()


def attr(m: Machine, patch: str, name: str) -> str:
    """/sys/kernel/livepatch/PATCH/NAME."""
    return m.read_file(f"{SYSFS}/{patch}/{name}")


def wait_done(m: Machine, patch: str, timeout_s: float = 2.5) -> None:
    """Until the patch's transition is over (or the patch is gone, freed by
    a completed disable or replace) within timeout_s virtual seconds."""
    m.run_until(lambda: not m.exists(f"{SYSFS}/{patch}") or attr(m, patch, "transition") == "0\n",
                timeout_s, f"the transition of {patch} to complete")


def selftest(m: Machine, module: str | Path = "", timeout_s: float = 60) -> tuple[Selftest, str]:
    """functions.sh on M, its waits bounded by timeout_s; MODULE (a fixture
    module's name, or a .ko path) is found by its name."""
    path = module if isinstance(module, Path) else MODULES / f"{module}.ko"
    find = module_dirs_finder([MODULES])
    st = Selftest(m, lambda name: path if name == path.stem else find(name))
    st.max_retries = max(1, round(timeout_s / RETRY_INTERVAL))
    return st, path.stem


def load_lp(m: Machine, module: str | Path, args: str = "", timeout_s: float = 60) -> None:
    """functions.sh's load_lp: insmod a livepatch and wait until its
    transition completes; the patch must stay enabled."""
    st, name = selftest(m, module, timeout_s)
    try:
        st.load_lp(name, *args.split())
    except Die as exc:
        raise AssertionError(f"load_lp {name}: {exc.message}") from None


def disable_lp(m: Machine, name: str, timeout_s: float = 60) -> None:
    """functions.sh's disable_lp: echo 0 > enabled, and wait until the patch is freed."""
    st, _ = selftest(m, name, timeout_s)
    try:
        st.disable_lp(name)
    except Die as exc:
        raise AssertionError(f"disable_lp {name}: {exc.message}") from None


def klp_lines(m: Machine) -> list[str]:
    """The livepatch core's lines in the kernel log."""
    return [line for line in m.dmesg_lines() if line.startswith("livepatch:")]


def patch_state(m: Machine, pid: int) -> str:
    return m.read_file(f"/proc/{pid}/patch_state")


def errno_of(call: Callable[..., object], *args: object) -> int:
    """The errno of the ShellError that call(*args) must raise."""
    with pytest.raises(ShellError) as exc:
        call(*args)
    return exc.value.errno


def frames(m: Machine, task: TaskView) -> list[str]:
    """The task's symbolised stack, innermost first."""
    return m.walker.format(m.walker.trace(task))


def wait_sleeping_in(m: Machine, task: Callable[[], TaskView | None], func: str,
                     timeout_s: float = 5.0) -> TaskView:
    """Until task() is off-CPU, asleep (TASK_INTERRUPTIBLE or UNINTERRUPTIBLE)
    with a frame of a function whose name ends with `func` (so a livepatch's
    livepatch_FUNC counts) on its stack."""
    def asleep() -> bool:
        t = task()
        return (t is not None and m.running_on(t) is None and t.state in (1, 2)
                and any(f.split("+")[0].endswith(func) for f in frames(m, t)))
    m.run_until(asleep, timeout_s, f"a task to sleep in {func}")
    return task()


def reader(m: Machine, path: str, func: str) -> Shell:
    """A new shell (forked from the first one) running `cat PATH` in the
    background, waited for until it sleeps in `func`."""
    sh = m.spawn_shell()
    sh.cat_background(path)
    wait_sleeping_in(m, sh.task, func)
    return sh


def run_script(m: Machine, directory: Path, text: str, name: str = "t.sh", **options: object) -> ScenarioResult:
    """TEXT as the script DIRECTORY/NAME, run as kselftest would (./NAME from DIRECTORY)."""
    script = directory / name
    script.write_text(text)
    return ScenarioRunner(m, io.StringIO(), **options).run_file(script)   # type: ignore[arg-type]


class Session:
    """A booted machine with a livepatch core and a scenario runner whose
    steps must all succeed."""

    def __init__(self, cpus: int = 2) -> None:
        self.m = Machine(cpus=cpus, seed=0).boot()
        self.core = Livepatch.attach(self.m)
        set_dynamic_debug(self.m)
        self.out = io.StringIO()
        self.r = ScenarioRunner(self.m, self.out)

    def run(self, text: str) -> None:
        result = self.r.run_text(text)
        assert result.ok, self.out.getvalue() + "\n" + self.m.dmesg()

    def log(self) -> list[str]:
        """check_result's view: the livepatch lines since the last start_test."""
        return self.r.selftest.result().split("\n")

    def patch(self, name: str):
        return next(p for p in self.core.patches if p.name == name)
