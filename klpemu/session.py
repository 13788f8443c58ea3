"""One scenario run, the way `klpemu run` does it and every schedule of an
exploration does it: boot (always the same way), attach the livepatch core
through the scenario runner, switch to the run's schedule, run the script.

Keeping the order in one place is what makes an exploration's schedule and
its replay line (`klpemu run SCRIPT --seed S --schedule …`) the same run,
byte for byte: a run forked from a booted session (klpemu.explore) and a
session booted from scratch reach the script in the same state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from emu import Machine, MachineConfig
from emu.schedule import ScheduleSpec
from klp.core import Livepatch
from klpemu.scenario import ScenarioResult, ScenarioRunner


@dataclass(frozen=True)
class RunConfig:
    """What a run is, but for its schedule: the machine and the livepatch core."""
    kernel: str = "modern"
    cpus: int = 2
    cmdline: str = MachineConfig.cmdline
    watchdog_thresh_s: float = MachineConfig.watchdog_thresh_s
    hung_task_timeout_s: float = MachineConfig.hung_task_timeout_s
    dispatch: str | None = None
    klp_version: str | None = None
    module_dirs: tuple[Path, ...] = field(default=())
    unsafe_switch_to: bool = False

    def replay_args(self) -> list[str]:
        """The `klpemu run` options that give this configuration (defaults left out)."""
        args: list[str] = []
        if self.kernel != "modern":
            args += ["--kernel", self.kernel]
        if self.cpus != 2:
            args += ["--cpus", str(self.cpus)]
        if self.cmdline != MachineConfig.cmdline:
            args += ["--cmdline", self.cmdline]
        if self.watchdog_thresh_s != MachineConfig.watchdog_thresh_s:
            args += ["--watchdog-thresh", f"{self.watchdog_thresh_s:g}"]
        if self.hung_task_timeout_s != MachineConfig.hung_task_timeout_s:
            args += ["--hung-task-timeout", f"{self.hung_task_timeout_s:g}"]
        if self.dispatch:
            args += ["--dispatch", self.dispatch]
        if self.klp_version:
            args += ["--klp-version", self.klp_version]
        for d in self.module_dirs:
            args += ["--module-dir", str(d)]
        if self.unsafe_switch_to:
            args += ["--unsafe-switch-to"]
        return args


class ScenarioSession:
    """A booted machine with its scenario runner, ready for one run."""

    def __init__(self, config: RunConfig, out: TextIO) -> None:
        self.config = config
        self.machine = Machine(MachineConfig(kernel=config.kernel, cpus=config.cpus, cmdline=config.cmdline,
                                             watchdog_thresh_s=config.watchdog_thresh_s,
                                             hung_task_timeout_s=config.hung_task_timeout_s))
        self.machine.boot()
        self.runner = ScenarioRunner(self.machine, out, module_dirs=list(config.module_dirs),
                                     dispatch=config.dispatch, klp_version=config.klp_version)
        if config.unsafe_switch_to:
            Livepatch.attach(self.machine).allow_unsafe_switch_to()

    def run(self, text: str, schedule: ScheduleSpec, script: Path | str | None = None) -> ScenarioResult:
        """Run the script under `schedule` (a session runs once); SCRIPT, its
        file, gives $0 and the directory it runs in (its functions.sh …)."""
        self.machine.set_schedule(schedule)
        return self.runner.run_text(text, script=script)
