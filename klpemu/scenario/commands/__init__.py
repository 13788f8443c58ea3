"""The commands a script runs that are not shell builtins, by name (what
/bin and /usr/bin hold in this namespace)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from klpemu.scenario.commands import awk, coreutils, diff, grep, kmod, procps, sed
from klpemu.scenario.builtins import echo, printf
from klpemu.scenario.programs import kill_builtin
from klpemu.scenario.testexpr import test_command

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc

COMMANDS: dict[str, Callable[["Proc"], int]] = {
    **coreutils.COMMANDS, **kmod.COMMANDS, **procps.COMMANDS, **diff.COMMANDS,
    "grep": grep.grep, "sed": sed.sed, "awk": awk.awk,
    # the programs behind the builtins of the same name (/bin/echo …)
    "echo": echo, "printf": printf, "test": test_command, "[": test_command, "kill": kill_builtin,
    "true": lambda proc: 0, "false": lambda proc: 1,
}
