"""Running a scenario on a machine: ScenarioRunner parses a script, runs its
statements (if, for, ||, assignments, redirections, `PROGRAM &`), expands
words ($VAR, arrays, $((…)) with klpemu/scenario/arith.py, $(…)), evaluates conditions,
waits as functions.sh's loop_until does, and looks each command's verb up in
the registry when it runs. Also the variables functions.sh predefines and
_Stop, the end of a script (die, skip or exit).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, TextIO

from emu import Machine, ShellError
from emu.abi import FIXTURES
from klp.core import Livepatch
from klpemu.scenario import arith
from klpemu.scenario.coreutils import cpulist_count, echo_text, sequence, translate
from klpemu.scenario.grep import Grep
from klpemu.scenario.kmod import insmod_error, modinfo, modprobe_error
from klpemu.scenario.registry import PROGRAMS, REDIRECTABLE, VERBS, check_background, program_name
from klpemu.scenario.result import KSFT_SKIP, ScenarioError, ScenarioResult, Step
from klpemu.scenario.syntax import (_ASSIGN, BACKGROUND, PIPE, REDIRECT, ForCommand, IfCommand, Lexer, OrList,
                                    Part, RawCommand, Statement, _array_assignment, check_condition,
                                    parse_script)

FIXTURE_MODULES = FIXTURES / "build" / "modules"
SYSFS_KLP_DIR = "/sys/kernel/livepatch"
SYSFS_TRACING_DIR = "/sys/kernel/debug/tracing"
FTRACE_SYSCTL = "/proc/sys/kernel/ftrace_enabled"
MAX_RETRIES = 600
RETRY_INTERVAL = 0.1
CPU_ONLINE = "/sys/devices/system/cpu/online"

# The variables functions.sh defines, visible to every scenario.
PREDEFINED = {
    "MAX_RETRIES": str(MAX_RETRIES),
    "RETRY_INTERVAL": ".1",
    "ksft_skip": str(KSFT_SKIP),
    "SYSFS_KERNEL_DIR": "/sys/kernel",
    "SYSFS_KLP_DIR": SYSFS_KLP_DIR,
    "KLP_SYSFS_DIR": SYSFS_KLP_DIR,
    "SYSFS_DEBUG_DIR": "/sys/kernel/debug",
    "SYSFS_TRACING_DIR": SYSFS_TRACING_DIR,
    "SYSFS_KPROBES_DIR": "/sys/kernel/debug/kprobes",
}


class _Stop(Exception):
    """End of the script: die, skip or exit."""


class ScenarioRunner:
    def __init__(self, machine: Machine, out: TextIO, *, module_dirs: list[Path] | None = None,
                 dispatch: str | None = None, klp_version: str | None = None) -> None:
        # the selftests' kernel has CONFIG_LIVEPATCH; klp_version: klp/profiles.py
        self.profile = Livepatch.attach(machine, dispatch, klp_version).profile
        self.machine = machine
        self.out = out
        self.result = ScenarioResult()
        self.module_dirs = [Path(d) for d in (module_dirs or [])]
        self.variables: dict[str, str] = dict(PREDEFINED)
        self.arrays: dict[str, dict[int, str]] = {}
        self.canary: str | None = None        # the text of start_test's canary
        self.mark = 0                         # `dmesg -C`: records before this are gone
        self.redirect: str | None = None      # the `> PATH` of the running command
        self._step: Step | None = None
        self._last_canary_ns = -1

    # ------------------------------------------------------------ output
    def emit(self, text: str) -> None:
        self.result.output.append(text)
        self.out.write(text)
        self.out.flush()

    def fail(self, message: str, *, show: bool = True) -> None:
        """A failed step: recorded, printed, the script goes on."""
        self.result.failures.append(message)
        if self._step is not None:
            self._step.ok = False
            self._step.message = message if not self._step.message else f"{self._step.message}; {message}"
        if show:
            self.emit(f"{message}\n")

    def log(self, message: str) -> None:
        """functions.sh's log: `echo MSG > /dev/kmsg`."""
        self.machine.write_file("/dev/kmsg", message)

    def die(self, message: str) -> None:
        """functions.sh's die: log `ERROR: msg`, print it, stop with a failure."""
        try:
            self.log(f"ERROR: {message}")
        except ShellError:
            pass
        self.fail(f"ERROR: {message}")
        raise _Stop

    def skip(self, message: str) -> None:
        try:
            self.log(f"SKIP: {message}")
        except ShellError:
            pass
        self.emit(f"SKIP: {message}\n")
        self.result.skipped = message
        if self._step is not None:
            self._step.message = f"SKIP: {message}"
        raise _Stop

    def produce(self, text: str, per_line: bool = False) -> None:
        """A command's standard output: to the scenario's output, or to the
        `> PATH` it was redirected to."""
        target = self.redirect
        if target is None:
            self.emit(text)
        elif target == "/dev/null" or not text:
            return
        else:
            chunks = text.rstrip("\n").split("\n") if per_line else [text]
            for chunk in chunks:
                try:
                    self.machine.write_file(target, chunk)
                except ShellError as exc:
                    self.fail(f"write error: {target}: {os.strerror(exc.errno)}")
                    return

    def echo_to(self, path: str, value: str) -> None:
        """`echo VALUE > PATH`: a refused write is a failed step."""
        try:
            self.machine.write_file(path, value)
        except ShellError as exc:
            self.fail(f"echo: write error: {path}: {os.strerror(exc.errno)}")

    # ------------------------------------------------------------ running
    def run_text(self, text: str, first_line: int = 1) -> ScenarioResult:
        """Parse the whole script (usage errors come out before anything runs),
        then run it."""
        statements = parse_script(text, first_line)
        try:
            self.run_statements(statements)
        except _Stop:
            pass
        finally:
            self._step = None
        return self.result

    def run_statements(self, statements: list[Statement]) -> None:
        for st in statements:
            if isinstance(st, IfCommand):
                self.run_if(st)
            elif isinstance(st, ForCommand):
                self.run_for(st)
            elif isinstance(st, OrList):
                self.run_or(st)
            else:
                self.run_command(st)

    def run_for(self, node: ForCommand) -> None:
        values: list[str] = []
        for w in node.words:
            assert not isinstance(w, str)
            values.extend(self.expand(w, node.lineno))
        for value in values:
            self.variables[node.name] = value
            self.run_statements(node.body)

    def run_or(self, node: OrList) -> None:
        """`A || B`: B runs only if A failed, and then A's failure does not
        count (its message stays in the output, as a shell's stderr would)."""
        for k, cmd in enumerate(node.commands):
            before = len(self.result.failures)
            self.run_command(cmd)
            if len(self.result.failures) == before:
                return
            if k + 1 < len(node.commands):
                del self.result.failures[before:]

    def run_if(self, node: IfCommand) -> None:
        """The first branch whose condition holds now (its `$(…)` read the guest
        as it is), else the `else` branch."""
        for cond, body in node.branches:
            if self.condition(cond):
                self.run_statements(body)
                return
        if node.orelse is not None:
            self.run_statements(node.orelse)

    def run_command(self, cmd: RawCommand) -> None:
        lineno = cmd.lineno
        if PIPE in cmd.words:
            raise ScenarioError(lineno, "pipes are only supported inside $(…)")
        redirect: str | None = None
        raw = list(cmd.words)
        background = raw[-1] == BACKGROUND
        if background:
            raw.pop()
        if REDIRECT in raw:
            k = raw.index(REDIRECT)
            target = raw[k + 1:]
            if len(target) != 1 or isinstance(target[0], str) or raw.count(REDIRECT) > 1:
                raise ScenarioError(lineno, "a redirection must be the end of the command: CMD > PATH")
            redirect_words = self.expand(target[0], lineno, split=False)
            redirect = redirect_words[0]
            raw = raw[:k]
            if not raw:
                raise ScenarioError(lineno, "a redirection needs a command")
        if self._is_assignment(raw, lineno):
            if redirect is not None:
                raise ScenarioError(lineno, "an assignment cannot be redirected")
            self._assign(raw, lineno)
            return
        no_split = RawCommand(lineno, raw).literal_head() == "[["
        words: list[str] = []
        for w in raw:
            assert not isinstance(w, str)
            words.extend(self.expand(w, lineno, split=not no_split))
        if not words:
            return
        name = words[0]
        check_background(name, background, lineno)
        handler = VERBS.get(name) if not background else _start_program
        if handler is None:
            raise ScenarioError(lineno, f"unknown command {name!r}")
        if background:
            words = [name, program_name(name) or name, *words[1:]]
        if redirect is not None and name not in REDIRECTABLE:
            raise ScenarioError(lineno, f"{name} cannot be redirected (only {', '.join(sorted(REDIRECTABLE))})")
        step = Step(name, lineno)
        self.result.steps.append(step)
        self._step, self.redirect = step, redirect
        try:
            handler(self, words[1:], lineno)
        finally:
            self._step, self.redirect = None, None

    @staticmethod
    def _is_assignment(raw: list[list[Part] | str], lineno: int) -> bool:
        """`VAR=value …`, `NAME[INDEX]=value …` (or `export VAR=value …`):
        every word an assignment."""
        words = raw[1:] if RawCommand(lineno, raw).literal_head() == "export" else raw

        def assigns(w: list[Part] | str) -> bool:
            return (not isinstance(w, str) and w[0][1] == "lit" and not w[0][0]
                    and (_ASSIGN.match(w[0][2]) is not None or _array_assignment(w) is not None))
        if not words or not assigns(words[0]):
            return False
        if not all(assigns(w) for w in words):
            raise ScenarioError(lineno, "VAR=value before a command is not supported "
                                        "(assign on a line of its own)")
        return True

    def _assign(self, raw: list[list[Part] | str], lineno: int) -> None:
        if RawCommand(0, raw).literal_head() == "export":
            raw = raw[1:]
        for w in raw:
            assert not isinstance(w, str)
            target = _array_assignment(w)
            if target is not None and not _ASSIGN.match(w[0][2]):
                name, index, value = target
                slot = self.evaluate(self.expand(index, lineno, split=False)[0], lineno)
                if slot < 0:
                    raise ScenarioError(lineno, f"{name}[{slot}]: bad array subscript")
                self.arrays.setdefault(name, {})[slot] = self.expand(value, lineno, split=False)[0] if value else ""
                self.variables.pop(name, None)
                continue
            quoted, kind, text = w[0]
            m = _ASSIGN.match(text)
            assert m
            rest: list[Part] = ([(quoted, kind, text[m.end():])] if text[m.end():] else []) + list(w[1:])
            self.variables[m.group(1)] = self.expand(rest, lineno, split=False)[0] if rest else ""

    # ------------------------------------------------------------ expansion
    def expand(self, word: list[Part], lineno: int, split: bool = True) -> list[str]:
        """One word's fields after expansion (bash: unquoted expansions are split
        on blanks, and an unquoted empty expansion disappears)."""
        fields: list[str] = []
        cur, have = "", False
        for quoted, kind, value in word:
            if kind == "lit":
                cur += value
                have = have or quoted or bool(value)
                continue
            if kind == "var":
                text = self.variable(value, lineno)
            elif kind == "arith":
                text = str(self.arithmetic(value, lineno))
            elif kind == "count":
                text = str(len(self.array(value, lineno)))
            elif kind == "elem":
                name, index = value[:-1].split("[", 1)
                array = self.array(name, lineno)
                if index not in ("@", "*"):
                    text = array.get(self.arithmetic(index, lineno), "")
                elif quoted and index == "@" and split:
                    # "${NAME[@]}": one field per element
                    for k, element in enumerate(array[i] for i in sorted(array)):
                        if k:
                            fields.append(cur)
                            cur = ""
                        cur += element
                        have = True
                    continue
                else:
                    text = " ".join(array[i] for i in sorted(array))
            else:
                text = self.substitute(value, lineno)
            if quoted or not split:
                cur += text
                have = have or quoted or bool(text)
                continue
            for k, piece in enumerate(re.split(r"[ \t\n]+", text)):
                if k > 0:
                    if have:
                        fields.append(cur)
                    cur, have = "", False
                if piece:
                    cur += piece
                    have = True
        if not split:
            return [cur]
        if have:
            fields.append(cur)
        return fields

    def variable(self, name: str, lineno: int) -> str:
        """$NAME (an array's element 0, as in bash)."""
        if name in self.variables:
            return self.variables[name]
        if name in self.arrays:
            return self.arrays[name].get(0, "")
        if name == "!":
            raise ScenarioError(lineno, "$! is not set: no program was started with '&'")
        raise ScenarioError(lineno, f"undefined variable ${name}")

    def array(self, name: str, lineno: int) -> dict[int, str]:
        """NAME's elements by index (a plain variable is element 0)."""
        if name in self.arrays:
            return self.arrays[name]
        return {0: self.variable(name, lineno)}

    def arithmetic(self, text: str, lineno: int) -> int:
        """`$((TEXT))` or a subscript: TEXT expanded as in double quotes, then evaluated."""
        word = Lexer(f'"{text}"', lineno).commands()[0].words[0]
        assert not isinstance(word, str)
        return self.evaluate(self.expand(word, lineno, split=False)[0], lineno)

    def evaluate(self, expression: str, lineno: int) -> int:
        try:
            return arith.evaluate(expression, lambda name: self.variable(name, lineno))
        except arith.ArithError as exc:
            raise ScenarioError(lineno, f"arithmetic {expression.strip()!r}: {exc}") from None

    def substitute(self, inner: str, lineno: int) -> str:
        """`$(…)`: the output of a read-only command or pipeline, trailing
        newlines removed. A failing command gives an empty output, as in bash."""
        commands = Lexer(inner, lineno, allow_pipe=True).commands()
        if len(commands) != 1:
            raise ScenarioError(lineno, f"$({inner}) must hold one command")
        stages: list[list[str]] = [[]]
        for w in commands[0].words:
            if w == PIPE:
                stages.append([])
            elif w == REDIRECT:
                raise ScenarioError(lineno, "redirections are not supported inside $(…)")
            else:
                assert not isinstance(w, str)
                stages[-1].extend(self.expand(w, lineno))
        if any(not s for s in stages):
            raise ScenarioError(lineno, f"empty command in $({inner})")
        text = self._source(stages[0], lineno, inner)
        for stage in stages[1:]:
            if stage == ["wc", "-l"]:
                text = f"{text.count(chr(10))}\n"
            elif stage[0] == "grep":
                g = Grep.parse(stage[1:], lineno, need_file=False)
                if g.files:
                    raise ScenarioError(lineno, "a grep after | reads its input, not a file")
                text = "".join(f"{ln}\n" for ln in g.lines(text))
            elif stage[0] == "tr":
                text = translate(stage[1:], text, lineno)
            else:
                raise ScenarioError(lineno, f"$(… | {stage[0]}) is not supported (use grep, wc -l or tr)")
        return text.rstrip("\n")

    def _source(self, words: list[str], lineno: int, inner: str) -> str:
        name, args = words[0], words[1:]
        try:
            if name == "cat" and args:
                return "".join(self.machine.read_file(p) for p in args)
            if name == "ls":
                opts = [a for a in args if a.startswith("-")]
                dirs = [a for a in args if not a.startswith("-")]
                if any(o != "-1" for o in opts) or len(dirs) != 1:
                    raise ScenarioError(lineno, "ls in $(…) takes one directory (and -1)")
                if not self.machine.is_dir(dirs[0]):
                    return ""
                return "".join(f"{e}\n" for e in self.machine.listdir(dirs[0]))
            if name == "grep":
                g = Grep.parse(args, lineno)
                return "".join(f"{ln}\n" for path in g.files for ln in g.lines(self.machine.read_file(path)))
            if name == "dmesg" and not args:
                return self.machine.dmesg()
            if name == "echo":
                return echo_text(args)
            if name == "seq":
                return "".join(f"{n}\n" for n in sequence(args, lineno))
            if (name, args) in (("nproc", []), ("getconf", ["_NPROCESSORS_ONLN"])):
                return f"{cpulist_count(self.machine.read_file(CPU_ONLINE))}\n"
        except ShellError:
            return ""
        raise ScenarioError(lineno, f"$({inner}) is not supported: $(…) takes cat, ls, grep, dmesg, echo, "
                                    "seq, nproc or getconf _NPROCESSORS_ONLN")

    # ------------------------------------------------------------ conditions
    def parse_condition(self, text: str, lineno: int) -> RawCommand:
        """loop_until's quoted condition as a command (see check_condition)."""
        commands = Lexer(text, lineno).commands()
        if len(commands) != 1:
            raise ScenarioError(lineno, f"a condition must be one command, not {text!r}")
        check_condition(commands[0])
        return commands[0]

    def condition(self, cmd: RawCommand) -> bool:
        """A condition's value now (loop_until's and if's; see check_condition)."""
        lineno = cmd.lineno
        raw = list(cmd.words)
        negate = False
        if RawCommand(lineno, raw).literal_head() == "!":
            negate, raw = True, raw[1:]
        head = RawCommand(lineno, raw).literal_head()
        words: list[str] = []
        for w in raw:
            assert not isinstance(w, str)
            words.extend(self.expand(w, lineno, split=head != "[["))
        name, args = words[0], words[1:]
        if name == "true":
            value = True
        elif name == "false":
            value = False
        elif name == "ftrace_disable_supported":
            # functions.sh's probe; this kernel lets ftrace_enabled go to 0
            # whenever no PERMANENT ops (livepatch) holds it
            value = self.machine.exists(FTRACE_SYSCTL)
        elif name == "grep":
            g = Grep.parse(args, lineno)
            value = False
            for path in g.files:
                try:
                    value = value or bool(g.lines(self.machine.read_file(path)))
                except ShellError:
                    pass
        else:
            if name in ("[[", "["):
                close = "]]" if name == "[[" else "]"
                if not args or args[-1] != close:
                    raise ScenarioError(lineno, f"{name} without {close}")
                args = args[:-1]
            value = self.test_expression(args, lineno)
        return value != negate

    def test_expression(self, args: list[str], lineno: int) -> bool:
        if args and args[0] == "!":
            return not self.test_expression(args[1:], lineno)
        m = self.machine
        if len(args) == 1:
            return args[0] != ""
        if len(args) == 2:
            op, x = args
            if op == "-e":
                return m.exists(x.rstrip("/") or "/")
            if op == "-d":
                return m.is_dir(x.rstrip("/") or "/")
            if op == "-f":
                return m.exists(x) and not m.is_dir(x)
            if op == "-n":
                return x != ""
            if op == "-z":
                return x == ""
        if len(args) == 3:
            a, op, b = args
            if op in ("==", "="):
                return a == b
            if op == "!=":
                return a != b
            ops = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__,
                   "-le": int.__le__, "-gt": int.__gt__, "-ge": int.__ge__}
            if op in ops:
                try:
                    return ops[op](int(a), int(b))
                except ValueError:
                    return False
        raise ScenarioError(lineno, f"unsupported test expression: {' '.join(args)!r} "
                                    "(supported: -e -d -f -n -z X, A == B, A != B, A -eq|-ne|-lt|-le|-gt|-ge B)")

    def wait(self, predicate: Callable[[], bool]) -> bool:
        """functions.sh's loop_until: up to MAX_RETRIES+1 tries, RETRY_INTERVAL apart."""
        try:
            retries = int(self.variables.get("MAX_RETRIES", str(MAX_RETRIES)))
            interval = float(self.variables.get("RETRY_INTERVAL", str(RETRY_INTERVAL)))
        except ValueError:
            raise ScenarioError(self._step.line if self._step else 0,
                                "MAX_RETRIES and RETRY_INTERVAL must be numbers") from None
        for i in range(retries + 1):
            if predicate():
                return True
            if i == retries:
                break
            self.machine.run(interval)
        return False

    # ------------------------------------------------------------ modules
    def find_module(self, name: str) -> Path:
        stem = name[:-3] if name.endswith(".ko") else name
        dirs = [*self.module_dirs, FIXTURE_MODULES]
        for d in dirs:
            candidate = d / f"{stem}.ko"
            if candidate.is_file():
                return candidate
        self.die(f"module {stem}: no {stem}.ko in {', '.join(str(d) for d in dirs)}")
        raise AssertionError  # not reached

    def insmod(self, name: str, args: list[str]) -> str | None:
        """Load NAME's .ko; kmod's error line, or None."""
        path = self.find_module(name)
        try:
            self.machine.insmod(str(path), " ".join(args))
        except ShellError as exc:
            if not self.profile.insmod_log:
                return modprobe_error(name, exc.errno)
            return insmod_error(f"test_modules/{name}.ko", exc.errno)
        return None

    def load_message(self, name: str, args: list[str]) -> str:
        """__load_mod's log line: `% modprobe NAME ARGS` before 6.9."""
        command = f"% insmod test_modules/{name}.ko" if self.profile.insmod_log else f"% modprobe {name}"
        return " ".join([command, *args])

    def is_livepatch(self, name: str) -> bool | None:
        """modinfo's `livepatch: Y`; None when the .ko carries no .modinfo."""
        info = modinfo(self.find_module(name))
        if info is None:
            return None
        return info.get("livepatch", [""])[-1] == "Y"


def _start_program(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """`PROGRAM &` (args[0] is the program's name): a user task of the guest's
    user program, in PROGRAM's mode, named PROGRAM (the comm the guest keeps
    is its first 15 characters, as on Linux)."""
    name, args = args[0], args[1:]
    if args:
        raise ScenarioError(lineno, f"{name} takes no arguments")
    try:
        pid = r.machine.shell.spawn(PROGRAMS[name], name)
    except ShellError as exc:
        r.fail(f"{name}: {os.strerror(exc.errno)}")
        return
    r.variables["!"] = str(pid)
