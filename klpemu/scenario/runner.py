"""Running a script on a machine: ScenarioRunner builds the shell (interp.py)
with the namespace of the script's directory (fs.py), the builtins, the
commands and, for scripts that source no functions.sh, the selftests'
built-in helpers; parses the whole script first (a syntax error or an
unsupported construct is reported before anything runs); runs it as
`cd DIR && ./SCRIPT` would; and gives back the ScenarioResult.
"""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

from emu import Machine
from klp.core import Livepatch
from klpemu.scenario import builtins as builtin_commands
from klpemu.scenario.commands import COMMANDS
from klpemu.scenario.fs import Namespace
from klpemu.scenario.helpers import HELPERS, PREDEFINED, selftest_of
from klpemu.scenario.interp import Shell
from klpemu.scenario.result import KSFT_SKIP, ScenarioError, ScenarioResult
from klpemu.scenario.streams import OutputLimitExceeded, Terminal
from klpemu.selftest import FIXTURE_MODULES, Selftest

ENVIRONMENT = {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SHELL": "/bin/bash", "USER": "root",
               "UID": "0", "EUID": "0", "TERM": "dumb", "BASH_VERSION": "5.2.15(1)-release"}
ALL_COMMANDS = frozenset(COMMANDS)


class ScenarioRunner:
    def __init__(self, machine: Machine, out: TextIO, *, module_dirs: list[Path] | None = None,
                 dispatch: str | None = None, klp_version: str | None = None) -> None:
        # the selftests' kernel has CONFIG_LIVEPATCH; klp_version: klp/profiles.py
        self.profile = Livepatch.attach(machine, dispatch, klp_version).profile
        self.machine = machine
        self.out = out
        self.result = ScenarioResult()
        self.module_dirs = [Path(d) for d in (module_dirs or [])] + [FIXTURE_MODULES]
        self.release = f"{self.profile.name}.0-klpemu"
        self.shell: Shell | None = None

    def run_file(self, script: Path | str) -> ScenarioResult:
        """SCRIPT as the kselftest runner starts it: from its directory, as ./NAME."""
        path = Path(script)
        return self.run_text(path.read_text(), script=path)

    def run_text(self, text: str, first_line: int = 1, *, script: Path | str | None = None) -> ScenarioResult:
        """Run TEXT (SCRIPT's, when given: $0 and the working directory are
        its). ScenarioError, before anything runs, if it cannot be parsed.
        Successive runs share one shell (its variables, functions and the
        built-in helpers' state, as lines typed into one terminal would)."""
        path = Path(script).resolve() if script is not None else None
        name = f"./{path.name}" if path is not None else "bash"
        ns = Namespace(self.machine, script_dir=path.parent if path else None, module_dirs=self.module_dirs,
                       release=self.release, commands=ALL_COMMANDS)
        sh = self.shell
        if sh is None:
            sh = self.shell = Shell(self.machine, Terminal(self.out, self.result), ns, script_name=name,
                                    source_name=name, commands=COMMANDS, builtins=builtin_commands.BUILTINS,
                                    helpers=HELPERS, seed=self.machine.config.seed)
            for key, value in {**ENVIRONMENT, **PREDEFINED}.items():
                sh.assign(key, value)
            for key in ENVIRONMENT:
                sh.vars.globals[key].exported = True
        sh.ns, sh.script_name, sh.source = ns, name, name
        sh.assign("PWD", ns.cwd)
        program = sh.parse(text, name, first_line)
        try:
            status = sh.run_script(program)
        except RecursionError:                # functions or $( ) nested beyond the interpreter's limit
            raise ScenarioError(sh.line, "maximum nesting level exceeded (functions, sourced files or "
                                         "command substitutions)", name) from None
        except OutputLimitExceeded as exc:
            raise ScenarioError(sh.line, str(exc), name) from None
        self._finish(status)
        return self.result

    @property
    def selftest(self) -> Selftest:
        """The built-in helpers' state (LAST_DMESG …), shared by successive runs."""
        if self.shell is None:
            raise RuntimeError("no script has run yet")
        return selftest_of(self.shell)

    def _finish(self, status: int) -> None:
        """The outcome is the exit status, as kselftest has it; a failed run
        says why: the message of the step that ended it."""
        result = self.result
        result.exit_status = status
        if status == KSFT_SKIP:
            said = "".join(result.output).rstrip("\n").rsplit("\n", 1)[-1] if result.output else ""
            result.skipped = said.removeprefix("SKIP: ") or "skipped"
        elif status:
            last = result.steps[-1] if result.steps else None
            result.failures.append(last.message if last is not None and not last.ok and last.message
                                   else f"exit {status}")
