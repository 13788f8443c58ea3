"""The shell: runs the syntax tree of parser.py with bash's semantics
(each list and command compiled once per process by compiler.py).

Shell holds what a bash process holds (variables with local scopes,
functions, positional parameters, options, traps, the working directory,
$?, background jobs) and runs commands with their file descriptors
(streams.py). A subshell, $(…), <(…) and each command of a pipeline run on
a copy of that state, one after the other (each stage's output feeding the
next's input). Commands are looked up as bash does: functions, builtins
(builtins.py), the selftests' built-in helpers when the script has sourced
no functions.sh (helpers.py), then the commands of commands/.

Exit statuses, `set -e` (with bash's exemptions: conditions, all of an
&&/|| list but its last, `!`), `trap … EXIT`, `return`, `exit`, `break`
and `continue` are bash's. A construct this shell does not have stops the
run with a ScenarioError naming it and the line; bash's own run-time
errors print bash's message and do what bash does.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from klpemu.scenario import expand, patterns
from klpemu.scenario.arith import ArithError
from klpemu.scenario.compiler import compiled_command, compiled_sequence
from klpemu.scenario.fs import FsError, Namespace
from klpemu.scenario.memo import ByNode
from klpemu.scenario.nodes import (AndOr, ArithFor, Case, Command, CondAnd, CondBinary, CondExpr, CondNot, CondOr,
                                   CondUnary, CondWord, For, FunctionDef, HereDoc, Pipeline, Program, Redir, Sequence,
                                   Simple, Word, literal)
from klpemu.scenario.parser import Parser, assignment_parts
from klpemu.scenario.process import CommandFn, ExitSignal, Fds, LoopSignal, Proc, ReturnSignal
from klpemu.scenario.programs import Job, is_program, start_program
from klpemu.scenario.result import ScenarioError, ScenarioResult, Step
from klpemu.scenario.streams import STDERR, STDOUT, Capture, FileOut, In, Null, Out, Terminal, TerminalOut
from klpemu.scenario.testexpr import unary_test
from klpemu.scenario.variables import Variables, VariableError
from klpemu.selftest.procps import Syslog

if TYPE_CHECKING:
    from emu import Machine

PRINTING_BUILTINS = frozenset({"echo", "printf", ":", "true", "false"})
MAX_NESTING = 1000               # bash's FUNCNEST default is unlimited; a runaway recursion stops here


@lru_cache(maxsize=2048)
def parse_program(text: str, source: str, line: int = 1) -> Program:
    """TEXT's tree, parsed once per process: trees are immutable, so every
    shell (and every run forked from a warmed zygote) shares them."""
    return Parser(text, source, line).parse_program()


class _TimedOut(Exception):
    """A `timeout` deadline passed while a command waited."""

    def __init__(self, deadline_ns: int) -> None:
        self.deadline_ns = deadline_ns


class _ArithVars:
    """The shell's variables as arithmetic sees them."""

    def __init__(self, sh: "Shell") -> None:
        self.sh = sh

    def get(self, name: str, index: int | None) -> str:
        if index is None:
            value = self.sh.variable(name)
        else:
            elements = self.sh.vars.array(name)
            if index < 0:
                index += (max(elements) + 1) if elements else 0
            value = elements.get(index)
        if value is None and "u" in self.sh.options:
            raise ArithError(f"{name}: unbound variable")
        return value or ""

    def set(self, name: str, index: int | None, value: int) -> None:
        self.sh.assign(name, str(value), index)


@dataclass
class _State:
    """What a subshell copies and gives back untouched."""
    vars: Variables
    functions: dict[str, FunctionDef]
    positional: list[str]
    options: set[str]
    traps: dict[str, str]
    cwd: str
    last_status: int
    last_bg: str | None
    depth: int
    sourced_functions_sh: bool
    jobs: dict[int, Job] = field(default_factory=dict)


class Shell:
    SPECIAL = expand.SPECIAL

    def __init__(self, machine: "Machine", terminal: Terminal, ns: Namespace, *, script_name: str,
                 source_name: str, commands: dict[str, CommandFn], builtins: dict[str, CommandFn],
                 helpers: dict[str, CommandFn], seed: int = 0) -> None:
        self.machine = machine
        self.terminal = terminal
        self.ns = ns
        self.result: ScenarioResult = terminal.result
        self.commands = commands
        self.builtins = builtins
        self.helpers = helpers
        self.vars = Variables()
        self.functions: dict[str, FunctionDef] = {}
        self.positional: list[str] = []
        self.script_name = script_name
        self.source = source_name          # the file the running code came from (for messages)
        self.options: set[str] = {"h", "B"}
        self.traps: dict[str, str] = {}
        self.last_status = 0
        self.last_bg: str | None = None
        self.last_arg = ""
        self.depth = 0                     # functions, sourced files, eval, traps: not the script's steps
        self.function_depth = 0
        self.source_depth = 0
        self.subshells = 0
        self.ignore_errexit = 0
        self.loops = 0
        self.line = 0
        self.jobs: dict[int, Job] = {}
        self.sourced_functions_sh = False   # then the built-in helpers are gone
        self.random = random.Random(seed)
        self.arith_vars = _ArithVars(self)
        self.extensions: dict[str, object] = {}  # per-run state of helpers and commands
        self.syslog = Syslog(machine)
        self.deadline_ns: int | None = None      # `timeout`'s, while its command runs
        self._step_verb: str | None = None
        self._cmdsub_status: int | None = None
        self.stdio: Fds = {0: In(""), 1: TerminalOut(terminal, STDOUT), 2: TerminalOut(terminal, STDERR)}
        self.current_fds: Fds = self.stdio      # of the command being expanded ($(…) inherits them)
        self._exiting = False

    # ------------------------------------------------------------ messages
    def where(self, line: int | None = None) -> str:
        """bash's prefix of an error message: `./test.sh: line 3: `."""
        return f"{self.source}: line {self.line if line is None else line}: "

    def unsupported(self, message: str) -> ScenarioError:
        return ScenarioError(self.line, message, source=self.source)

    def shell_error(self, message: str, fds: Fds | None = None) -> None:
        stream = (fds or self.stdio).get(2)
        if isinstance(stream, Out):
            try:
                stream.write(f"{self.where()}{message}\n")
            except FsError:
                pass

    # ------------------------------------------------------------ variables
    def special(self, name: str) -> str | None:
        if name == "?":
            return str(self.last_status)
        if name == "#":
            return str(len(self.positional))
        if name == "$":
            return str(self.machine.shell.pid)
        if name == "!":
            return self.last_bg
        if name == "-":
            return "".join(sorted(o for o in self.options if len(o) == 1))
        if name == "_":
            return self.last_arg
        return None

    def variable(self, name: str) -> str | None:
        value = self.vars.get(name)
        if value is not None:
            return value
        if name == "LINENO":
            return str(self.line)
        if name == "RANDOM":
            return str(self.random.randrange(32768))
        if name == "SECONDS":
            return str(self.machine.clock_ns // 1_000_000_000)
        if name == "PWD":
            return self.ns.cwd
        return None

    def assign(self, name: str, value: str, index: int | None = None, append: bool = False) -> None:
        var = self.vars.lookup(name)
        if var is not None and var.integer:
            base = expand.evaluate_text(self, self.variable(name) or "0") if append else 0
            value = str(base + expand.evaluate_text(self, value))
            append = False
        try:
            self.vars.set(name, value, index, append)
        except VariableError as exc:
            raise expand.ExpansionError(str(exc)) from None
        if name == "PWD":
            self.ns.cwd = self.ns.resolve(value)

    # ------------------------------------------------------------ time
    def sleep(self, seconds: float) -> int:
        """Let SECONDS of virtual time pass (up to a `timeout` deadline)."""
        end = self.machine.clock_ns + int(seconds * 1e9)
        if self.deadline_ns is not None and end > self.deadline_ns:
            self.machine.run(max(self.deadline_ns - self.machine.clock_ns, 0) / 1e9)
            raise _TimedOut(self.deadline_ns)
        self.machine.run(seconds)
        return 0

    def with_deadline(self, seconds: float, body: Callable[[], int]) -> int:
        """BODY's status, or 124 when it was still waiting after SECONDS."""
        deadline = self.machine.clock_ns + int(seconds * 1e9)
        saved = self.deadline_ns
        self.deadline_ns = deadline if saved is None else min(saved, deadline)
        try:
            return body()
        except _TimedOut as t:
            if t.deadline_ns != deadline:
                raise
            return 124
        finally:
            self.deadline_ns = saved

    # ------------------------------------------------------------ running a program
    def parse(self, text: str, source: str, line: int = 1) -> Program:
        """TEXT's tree (functions.sh and each eval'd string alike)."""
        return parse_program(text, source, line)

    def run_script(self, program: Program) -> int:
        """The whole script: its exit status once the EXIT trap has run."""
        try:
            status = self.run_sequence(program.body, self.stdio)
        except ExitSignal as sig:
            status = sig.status
        except ReturnSignal as sig:
            status = sig.status
        except LoopSignal:
            status = 0
        return self.run_exit_trap(status)

    def run_exit_trap(self, status: int) -> int:
        action = self.traps.pop("EXIT", None)
        if not action or self._exiting:
            return status
        self._exiting = True
        self.last_status = status
        self.depth += 1
        try:
            self.eval_text(action, self.stdio)
        except ExitSignal as sig:
            status = sig.status
        except (ReturnSignal, LoopSignal):
            pass
        finally:
            self.depth -= 1
            self._exiting = False
        return status

    def eval_text(self, text: str, fds: Fds) -> int:
        """`eval TEXT` (and a trap's action): parsed once, run in this shell."""
        program = self.parse(text, self.source, self.line)
        return self.run_sequence(program.body, fds)

    # ------------------------------------------------------------ lists
    def run_sequence(self, seq: Sequence, fds: Fds) -> int:
        """SEQ's commands (compiler.py), its last one's status."""
        entry = compiled_sequence.entries.get(id(seq))     # (compiled_sequence(seq), inline)
        return (entry[1] if entry is not None and entry[0] is seq else compiled_sequence(seq))(self, fds)

    def _record(self, step: Step, pipe: Pipeline, status: int, exempt: bool, mark: int,
                exiting: bool = False) -> None:
        verb = self._step_verb
        if verb is None:
            first = pipe.commands[0]
            if not isinstance(first, Simple) or not first.words:
                return                       # an assignment is no step
            verb = literal(first.words[0]) or "?"
        step.verb = verb
        step.output = "".join(t for _, t in self.result.streams[mark:])
        said = [t for s, t in self.result.streams[mark:] if s == STDERR]
        last_line = "".join(said).rstrip("\n").rsplit("\n", 1)[-1] if said else ""
        if exiting:
            step.ok = status in (0, 4)
            step.message = last_line or (f"exit {status}" if status else "")
        else:
            step.ok = status == 0 or exempt
            step.message = last_line if status else ""
            if not step.ok and not step.message:
                step.message = f"{verb}: exit status {status}"
        self.result.steps.append(step)

    def _run_stages(self, pipe: Pipeline, fds: Fds) -> int:
        statuses: list[int] = []
        data = fds.get(0)
        n = len(pipe.commands)
        for k, cmd in enumerate(pipe.commands):
            stage_fds = dict(fds)
            stage_fds[0] = data if data is not None else In("")
            capture: Capture | None = None
            if k < n - 1:
                capture = Capture()
                stage_fds[1] = capture
                if pipe.stderr_too[k]:
                    stage_fds[2] = capture
            if self._stateless(cmd):
                self.subshells += 1          # (a stage is not a step of its own)
                try:
                    statuses.append(self.run_command(cmd, stage_fds))
                finally:
                    self.subshells -= 1
            else:
                statuses.append(self.subshell(lambda c=cmd, f=stage_fds: self.run_command(c, f)))
            if capture is not None:
                data = In(capture.text())
        self.vars.set_array("PIPESTATUS", [str(s) for s in statuses])
        if "pipefail" in self.options:
            return next((s for s in reversed(statuses) if s), 0)
        return statuses[-1]

    def subshell(self, body: Callable[[], int]) -> int:
        """BODY on a copy of the shell's state (a fork); exit ends only it."""
        saved = _State(self.vars, self.functions, self.positional, self.options, self.traps, self.ns.cwd,
                       self.last_status, self.last_bg, self.depth, self.sourced_functions_sh, self.jobs)
        self.vars = self.vars.snapshot()
        self.functions = dict(self.functions)
        self.positional = list(self.positional)
        self.options = set(self.options)
        self.traps = {}
        self.jobs = {}
        self.subshells += 1
        exiting = self._exiting
        self._exiting = False
        loops = self.loops
        self.loops = 0
        try:
            try:
                status = body()
            except ExitSignal as sig:
                status = sig.status
            except (ReturnSignal, LoopSignal) as sig:
                status = getattr(sig, "status", 0)
            return self.run_exit_trap(status)
        finally:
            self.subshells -= 1
            self.loops = loops
            self._exiting = exiting
            (self.vars, self.functions, self.positional, self.options, self.traps, self.ns.cwd,
             self.last_status, self.last_bg, self.depth, self.sourced_functions_sh, self.jobs) = (
                saved.vars, saved.functions, saved.positional, saved.options, saved.traps, saved.cwd,
                saved.last_status, saved.last_bg, saved.depth, saved.sourced_functions_sh, saved.jobs)

    def _stateless(self, cmd: Command) -> bool:
        """CMD is one of the commands (not a function, builtin or helper) with
        no assignments: running it cannot change the shell, so a subshell for
        it would be a copy for nothing."""
        if type(cmd) is not Simple or cmd.assigns or not cmd.words:
            return False
        name = literal(cmd.words[0])
        return name is not None and name in self.commands and name not in self.functions \
            and name not in self.builtins and (self.sourced_functions_sh or name not in self.helpers)

    def _capture(self, body: Program) -> tuple[int, str]:
        """BODY run in a subshell with its stdout captured."""
        capture = Capture()
        fds = dict(self.current_fds)
        fds[1] = capture
        saved = self.current_fds
        items = body.body.items
        try:
            if len(items) == 1 and not items[0].background and not items[0].command.rest \
                    and not items[0].command.first.negate and len(items[0].command.first.commands) == 1 \
                    and self._stateless(items[0].command.first.commands[0]):
                self.subshells += 1          # (not the script's steps)
                try:
                    status = self.run_command(items[0].command.first.commands[0], fds)
                finally:
                    self.subshells -= 1
            else:
                status = self.subshell(lambda: self.run_sequence(body.body, fds))
        finally:
            self.current_fds = saved
        return status, capture.text()

    def command_substitution(self, body: Program) -> str:
        """$(…): its output without the trailing newlines; its status is $?."""
        status, text = self._capture(body)
        self.last_status = self._cmdsub_status = status
        return text.rstrip("\n")

    def process_substitution(self, body: Program) -> str:
        """<(…): its output, readable as /dev/fd/N while the command runs."""
        _, text = self._capture(body)
        fd = 63 - len(self.ns.fds)
        self.ns.fds[fd] = text
        return f"/dev/fd/{fd}"

    # ------------------------------------------------------------ commands
    def run_command(self, cmd: Command, fds: Fds) -> int:
        """CMD (compiler.py compiles it once)."""
        entry = compiled_command.entries.get(id(cmd))      # (compiled_command(cmd), inline)
        return (entry[1] if entry is not None and entry[0] is cmd else compiled_command(cmd))(self, fds)

    def _loop_body(self, body: Sequence, fds: Fds) -> tuple[int, bool]:
        """(status, go on) of one pass of a loop body."""
        try:
            return self.run_sequence(body, fds), True
        except LoopSignal as sig:
            if sig.levels > 1:
                sig.levels -= 1
                raise
            return 0, sig.kind == "continue"

    def _for(self, cmd: For, fds: Fds) -> int:
        self.line = cmd.line
        try:
            values = list(self.positional) if cmd.words is None else expand.expand_words(self, cmd.words)
        except expand.ExpansionError as exc:
            return self._expansion_failed(exc, fds)
        status = 0
        self.loops += 1
        try:
            for value in values:
                self.assign(cmd.name, value)
                status, go_on = self._loop_body(cmd.body, fds)
                if not go_on:
                    break
        finally:
            self.loops -= 1
        return status

    def _arith_for(self, cmd: ArithFor, fds: Fds) -> int:
        status = 0
        self.loops += 1
        try:
            if cmd.init:
                expand.arithmetic(self, cmd.init)
            while not cmd.cond or expand.arithmetic(self, cmd.cond):
                status, go_on = self._loop_body(cmd.body, fds)
                if not go_on:
                    break
                if cmd.step:
                    expand.arithmetic(self, cmd.step)
        except expand.ArithExpansionError as exc:
            self.shell_error(f"((: {exc}", fds)
            return 1
        finally:
            self.loops -= 1
        return status

    def _case(self, cmd: Case, fds: Fds) -> int:
        try:
            word = expand.expand_single(self, cmd.word)
            fall = False
            status = 0
            for item in cmd.items:
                if not fall and not any(expand.match_pattern(self, p, word) for p in item.patterns):
                    continue
                status = self.run_sequence(item.body, fds)
                if item.terminator == ";;":
                    return status
                fall = item.terminator == ";&"
            return status
        except expand.ExpansionError as exc:
            return self._expansion_failed(exc, fds)

    def _expansion_failed(self, exc: expand.ExpansionError, fds: Fds) -> int:
        """bash's expansion error: its message, then a non-interactive shell exits."""
        self.shell_error(str(exc), fds)
        raise ExitSignal(exc.status)

    # ------------------------------------------------------------ simple commands
    def call_redirected(self, cmd: Simple, argv: list[str], fds: Fds) -> int | None:
        """ARGV run with CMD's redirections and prefix assignments; None when
        a redirection failed (its message printed)."""
        run_fds = fds
        if cmd.redirs:
            opened = self.redirect(cmd.redirs, fds)
            # a builtin that only prints its arguments reads nothing first:
            # its first write can make the open (one round trip, not two)
            if opened is None or (not self._prints_only(argv[0]) and not self.open_redirections(opened, fds)):
                return None
            run_fds = opened
        status = self._with_prefix(cmd, argv, run_fds) if cmd.assigns else self.call(argv, run_fds, cmd.line)
        if run_fds is not fds and not self.open_redirections(run_fds, fds):
            status = 1
        return status

    def _prints_only(self, name: str) -> bool:
        """NAME runs a builtin that writes what it was given and touches no file."""
        return name in PRINTING_BUILTINS and name not in self.functions and name in self.builtins

    def declaration_arguments(self, words: tuple[Word, ...]) -> list[str]:
        """The words of local, declare, export …: their NAME=VALUE arguments
        are not split (bash's declaration builtins)."""
        argv = [literal(words[0]) or ""]
        for word, target in _declaration_arguments(words):
            if target is None:
                argv.extend(expand.expand_word(self, word))
                continue
            name, index, append, value = target
            shown = name
            if index is not None:
                shown += "[" + expand.expand_template(self, index) + "]"
            argv.append(f"{shown}{'+=' if append else '='}{expand.expand_single(self, value)}")
        return argv

    def shell_trace(self, argv: list[str], fds: Fds) -> None:
        stream = fds.get(2)
        if isinstance(stream, Out):
            stream.write("+ " + " ".join(_shell_quote(a) for a in argv) + "\n")

    def _assignments_only(self, cmd: Simple, fds: Fds) -> int:
        try:
            for a in cmd.assigns:
                self.do_assign(a)
        except expand.ExpansionError as exc:
            return self._expansion_failed(exc, fds)
        if cmd.redirs:
            opened = self.redirect(cmd.redirs, fds)
            if opened is None or not self.open_redirections(opened, fds):
                return 1
        return self._cmdsub_status or 0

    def do_assign(self, a) -> None:         # a: nodes.Assign
        if a.items is not None:
            values = expand.expand_words(self, a.items)
            try:
                self.vars.set_array(a.name, values, a.append)
            except VariableError as exc:
                raise expand.ExpansionError(str(exc)) from None
            return
        value = expand.expand_single(self, a.value) if a.value else ""
        index = None
        if a.index is not None:
            index = expand.evaluate_text(self, expand.expand_template(self, a.index).strip())
        self.assign(a.name, value, index, a.append)

    def _with_prefix(self, cmd: Simple, argv: list[str], fds: Fds) -> int:
        """VAR=value CMD: the assignments hold for CMD only."""
        self.vars.push_scope()
        try:
            try:
                for a in cmd.assigns:
                    self.vars.declare_local(a.name).exported = True
                    self.do_assign(a)
            except expand.ExpansionError as exc:
                return self._expansion_failed(exc, fds)
            return self.call(argv, fds, cmd.line)
        finally:
            self.vars.pop_scope()

    def lookup(self, name: str) -> tuple[str, object] | None:
        """What NAME runs: ('function', def), ('builtin'|'helper'|'command', fn), or None."""
        if name in self.functions:
            return "function", self.functions[name]
        fn = self.builtins.get(name)
        if fn is not None:
            return "builtin", fn
        if not self.sourced_functions_sh:
            fn = self.helpers.get(name)
            if fn is not None:
                return "helper", fn
        if "/" in name:
            base = name.rsplit("/", 1)[1]
            directory = self.ns.resolve(name.rsplit("/", 1)[0] or "/")
            if directory in ("/bin", "/usr/bin", "/sbin", "/usr/sbin") and base in self.commands:
                return "command", self.commands[base]
            return None
        fn = self.commands.get(name)
        if fn is not None:
            return "command", fn
        return None

    def call(self, argv: list[str], fds: Fds, line: int) -> int:
        """Run the command ARGV names (a function, a builtin, a helper, a command)."""
        name = argv[0]
        fdef = self.functions.get(name)
        if fdef is not None:
            return self.call_function(fdef, argv, fds)
        what = self.builtins.get(name)              # (lookup()'s order, the commonest first)
        if what is not None:
            kind = "builtin"
        else:
            found = self.lookup(name)
            if found is None:
                return self._not_found(argv, fds, line)
            kind, what = found                      # type: ignore[assignment]
        proc = Proc(self, argv, fds, line)
        status = what(proc)                             # type: ignore[operator]
        if proc.write_error is not None and status == 0:
            reason = proc.write_error.reason
            if kind == "builtin":
                proc.builtin_error(f"write error: {reason}")
            else:
                proc.err(f"{name}: write error: {reason}\n")
            status = 1
        return status

    def _not_found(self, argv: list[str], fds: Fds, line: int) -> int:
        name = argv[0]
        if is_program(name):
            raise self.unsupported(f"{name} runs until a signal ends it: start it in the background "
                                   f"({name} &) and end it with kill")
        if "/" in name:
            path = self.ns.resolve(name)
            if self.ns.is_file(path):
                return self.run_script_file(path, argv, fds)
            self.shell_error(f"{name}: No such file or directory", fds)
            return 127
        self.shell_error(f"{name}: command not found", fds)
        return 127

    def run_script_file(self, path: str, argv: list[str], fds: Fds) -> int:
        """./other.sh: a script of the namespace, in a subshell with its own $0 and arguments."""
        try:
            text = self.ns.read(path)
        except FsError as exc:
            self.shell_error(f"{argv[0]}: {exc.reason}", fds)
            return 126
        program = self.parse(text, argv[0])

        def body() -> int:
            self.positional = argv[1:]
            self.functions = {}
            saved_name, saved_source = self.script_name, self.source
            self.script_name, self.source = argv[0], argv[0]
            try:
                return self.run_sequence(program.body, fds)
            finally:
                self.script_name, self.source = saved_name, saved_source
        return self.subshell(body)

    def call_function(self, fdef: FunctionDef, argv: list[str], fds: Fds) -> int:
        if self.depth >= MAX_NESTING:
            raise self.unsupported(f"{fdef.name}: maximum function nesting level exceeded ({MAX_NESTING})")
        saved = self.positional, self.source, self.line
        self.positional = argv[1:]
        self.source = fdef.source or self.source
        self.vars.push_scope()
        self.depth += 1
        self.function_depth += 1
        funcname = self.vars.array("FUNCNAME")
        callers = [funcname[k] for k in sorted(funcname)] if funcname else ["main"]
        self.vars.set_array("FUNCNAME", [fdef.name, *callers])
        try:
            return self.run_command(fdef.body, fds)
        except ReturnSignal as sig:
            return sig.status
        finally:
            self.depth -= 1
            self.function_depth -= 1
            self.vars.pop_scope()
            if funcname:
                self.vars.set_array("FUNCNAME", callers)
            else:
                self.vars.unset("FUNCNAME")
            self.positional, self.source, self.line = saved

    def source_file(self, path: str, shown: str, args: list[str] | None, fds: Fds) -> int:
        """`. FILE [ARGS]`: FILE's commands in this shell."""
        text = self.ns.read(path)
        program = self.parse(text, shown)
        if path.rsplit("/", 1)[-1] == "functions.sh":
            self.sourced_functions_sh = True
        saved = self.positional, self.source, self.line
        if args:
            self.positional = args
        self.source = shown
        self.depth += 1
        self.source_depth += 1
        try:
            return self.run_sequence(program.body, fds)
        except ReturnSignal as sig:
            return sig.status
        finally:
            self.depth -= 1
            self.source_depth -= 1
            if args:
                self.positional = saved[0]
            self.source, self.line = saved[1], saved[2]

    # ------------------------------------------------------------ background jobs
    def run_background(self, node: AndOr, fds: Fds) -> int:
        self.line = node.line
        pipe = node.first
        cmd = pipe.commands[0]
        if node.rest or len(pipe.commands) > 1 or pipe.negate or not isinstance(cmd, Simple) or not cmd.words:
            raise self.unsupported("only the guest's programs can run in the background with '&' "
                                   "(a pipeline, list or compound command cannot)")
        argv = expand.expand_words(self, cmd.words)
        status = start_program(self, argv, fds, cmd.line)
        self.last_status = status
        return status

    # ------------------------------------------------------------ redirections
    def redirect(self, redirs: tuple[Redir, ...], fds: Fds) -> Fds | None:
        """FDS with REDIRS applied, or None (the message printed) when one fails."""
        new = dict(fds)
        for r in redirs:
            self.line = r.line
            try:
                if not self._redirect_one(r, new):
                    return None
            except expand.ExpansionError as exc:
                self.shell_error(str(exc), new)
                return None
        return new

    def _target(self, r: Redir) -> str | None:
        assert not isinstance(r.target, HereDoc)
        fields = expand.expand_word(self, r.target)
        if len(fields) != 1:
            self.shell_error(f"{expand.expand_single(self, r.target)}: ambiguous redirect")
            return None
        return fields[0]

    def _redirect_one(self, r: Redir, fds: Fds) -> bool:
        op = r.op
        if op == "<<":
            assert isinstance(r.target, HereDoc)
            doc = r.target
            text = doc.body[0].text if doc.quoted and doc.body else expand.expand_template(self, doc.body)  # type: ignore[union-attr]
            fds[0 if r.fd is None else r.fd] = In(text)
            return True
        target = self._target(r)
        if target is None:
            return False
        if op == "<<<":
            fds[0 if r.fd is None else r.fd] = In(target + "\n")
            return True
        if op in ("<&", ">&") and (target.isdigit() or target == "-"):
            fd = r.fd if r.fd is not None else (0 if op == "<&" else 1)
            if target == "-":
                fds.pop(fd, None)
                return True
            source = fds.get(int(target))
            if source is None:
                self.shell_error(f"{target}: Bad file descriptor", fds)
                return False
            fds[fd] = source
            return True
        if op == "<" or op == "<&":
            try:
                content = self._read_target(target, fds)
            except FsError as exc:
                self.shell_error(f"{target}: {exc.reason}", fds)
                return False
            fds[0 if r.fd is None else r.fd] = In(content)
            return True
        both = op in ("&>", "&>>", ">&")
        append = op in (">>", "&>>")
        stream = self._open_out(target, append, fds)
        if stream is None:
            return False
        if both:
            fds[1] = fds[2] = stream
        else:
            fds[1 if r.fd is None else r.fd] = stream
        return True

    def _read_target(self, target: str, fds: Fds) -> str:
        path = self.ns.resolve(target)
        if path == "/dev/stdin":
            stream = fds.get(0)
            return stream.read() if isinstance(stream, In) else ""
        return self.ns.read(path)

    def _open_out(self, target: str, append: bool, fds: Fds) -> Out | None:
        path = self.ns.resolve(target)
        if path == "/dev/null":
            return Null()
        if path in ("/dev/stdout", "/dev/stderr"):
            stream = fds.get(1 if path == "/dev/stdout" else 2)
            return stream if isinstance(stream, Out) else Null()
        if path.startswith("/dev/fd/") and path[8:].isdigit() and int(path[8:]) in fds:
            stream = fds[int(path[8:])]
            return stream if isinstance(stream, Out) else None
        try:
            self.ns.check_writable(path)
        except FsError as exc:
            self.shell_error(f"{target}: {exc.reason}", fds)
            return None
        return FileOut(self.ns, path, append)

    def open_redirections(self, opened: Fds, fds: Fds) -> bool:
        """Make the opens REDIRECT left to the first write (FileOut): False,
        the message printed, when one is refused."""
        for stream in opened.values():
            if isinstance(stream, FileOut):
                try:
                    stream.open_now()
                except FsError as exc:
                    self.shell_error(f"{stream.path}: {exc.reason}", fds)
                    return False
        return True

    # ------------------------------------------------------------ [[ … ]]
    def test_cond(self, expr: CondExpr, fds: Fds) -> bool:
        kind = type(expr)
        if kind is CondAnd:
            return self.test_cond(expr.left, fds) and self.test_cond(expr.right, fds)   # type: ignore[union-attr]
        if kind is CondOr:
            return self.test_cond(expr.left, fds) or self.test_cond(expr.right, fds)    # type: ignore[union-attr]
        if kind is CondNot:
            return not self.test_cond(expr.expr, fds)                                # type: ignore[union-attr]
        if kind is CondWord:
            return expand.expand_single(self, expr.word) != ""                       # type: ignore[union-attr]
        if kind is CondUnary:
            operand = expand.expand_single(self, expr.operand)                      # type: ignore[union-attr]
            return unary_test(self, expr.op, operand, fds)                          # type: ignore[union-attr]
        assert isinstance(expr, CondBinary)
        op = expr.op
        left = expand.expand_single(self, expr.left)
        if op in ("==", "=", "!="):
            return expand.match_pattern(self, expr.right, left) != (op == "!=")
        if op == "=~":
            try:
                rx = re.compile(expand.expand_regex(self, expr.right))
            except (re.error, patterns.PatternError):
                return False
            m = rx.search(left)
            self.vars.set_array("BASH_REMATCH", [m.group(0), *[g or "" for g in m.groups()]] if m else [])
            return m is not None
        right = expand.expand_single(self, expr.right)
        if op in ("<", ">"):
            return left < right if op == "<" else left > right
        if op in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
            a, b = self._integer(left), self._integer(right)
            return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b, "-ge": a >= b}[op]
        raise self.unsupported(f"[[ {op} ]] (file time and identity tests) is not supported")

    def _integer(self, text: str) -> int:
        """An operand of [[ -eq … ]]: an arithmetic expression."""
        return expand.evaluate_text(self, text)


def _assignments_of(words: tuple[Word, ...]) -> tuple[tuple[Word, tuple | None], ...]:
    """The arguments of a declaration builtin, each with its NAME=VALUE parts (or None)."""
    return tuple((word, assignment_parts(word)) for word in words[1:])


_declaration_arguments: ByNode[tuple[Word, ...], tuple[tuple[Word, tuple | None], ...]] = ByNode(_assignments_of)


def _shell_quote(text: str) -> str:
    if text and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"

