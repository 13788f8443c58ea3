"""The shell's syntax tree compiled once per process: a Sequence, its
and-or lists, pipelines and commands become closures `run(sh, fds) ->
status` (kept per node by memo.ByNode), so that a loop's or a function's
body, run many times, decides once what kind each of its parts is and
which of its words need expanding. Shell.run_sequence and run_command
run these; what they call back (expansion, redirections, subshells,
for/case, builtins) is the Shell's.

What a pipeline does around its command is bash's: its status is $?,
`!` inverts it, `set -e` stops the script on a failure not exempted (a
condition, all of an && || list but its last, a negated pipeline), and at
the script's top level a pipeline that starts with a simple command is a
Step of the result.
"""
from __future__ import annotations

from typing import Any, Callable

from klpemu.scenario.expand import ArithExpansionError, ExpansionError, arithmetic, words_expander
from klpemu.scenario.killed import CommandKilled
from klpemu.scenario.memo import ByNode
from klpemu.scenario.nodes import (AndOr, ArithCmd, ArithFor, Case, Command, Cond, For, FunctionDef, Group, If, Item,
                                   Loop, Pipeline, Sequence, Simple, Subshell, literal)
from klpemu.scenario.process import ExitSignal, Fds, LoopSignal
from klpemu.scenario.result import Step

# The shell is interp.Shell, which imports this module: here it is Any,
# as an import of interp would make a cycle of the layers (tests/test_layers.py).
Shell = Any
Run = Callable[[Shell, Fds], int]
DECLARATION_BUILTINS = frozenset(("local", "declare", "typeset", "export", "readonly"))


def _sequence(seq: Sequence) -> Run:
    runs = tuple(_item(item) for item in seq.items)
    if len(runs) == 1:
        return runs[0]

    def sequence(sh: Shell, fds: Fds) -> int:
        status = 0
        for run in runs:
            status = run(sh, fds)
        return status
    return sequence


compiled_sequence: ByNode[Sequence, Run] = ByNode(_sequence)


def _item(item: Item) -> Run:
    node = item.command
    if item.background:
        return lambda sh, fds: sh.run_background(node, fds)
    return _and_or(node)


def _and_or(node: AndOr) -> Run:
    """first (&& or ||) next …: each pipeline but the last is exempt from set -e."""
    if not node.rest:
        return _pipeline(node.first, last=True)
    first = _pipeline(node.first, last=False)
    n = len(node.rest)
    rest = tuple((op == "&&", k == n - 1, _pipeline(pipe, last=k == n - 1)) for k, (op, pipe) in enumerate(node.rest))

    def and_or(sh: Shell, fds: Fds) -> int:
        sh.ignore_errexit += 1
        try:
            status = first(sh, fds)
        finally:
            sh.ignore_errexit -= 1
        for on_success, is_last, run in rest:
            if on_success != (status == 0):
                continue
            if is_last:
                status = run(sh, fds)
            else:
                sh.ignore_errexit += 1
                try:
                    status = run(sh, fds)
                finally:
                    sh.ignore_errexit -= 1
        return status
    return and_or


def _pipeline(pipe: Pipeline, last: bool) -> Run:
    """A pipeline, its step (at the script's top level) and `set -e`."""
    commands = pipe.commands
    first = commands[0]
    single = compiled_command(first) if len(commands) == 1 else None
    negate = pipe.negate
    steps = type(first) is Simple
    stops = len(commands) > 1 or isinstance(first, (Simple, Subshell))   # what set -e stops on
    line = pipe.line

    def pipeline(sh: Shell, fds: Fds) -> int:
        if single is not None and not negate and not (steps and sh.depth == 0 and sh.subshells == 0):
            # (the commonest: one command, not negated, no step to record)
            status = single(sh, fds)
            sh.last_status = status
            if status and last and sh.ignore_errexit <= 0 and stops and "e" in sh.options:
                raise ExitSignal(status)
            return status
        exempt = not last or negate or sh.ignore_errexit > 0
        if negate:
            sh.ignore_errexit += 1
        step: Step | None = None
        mark = len(sh.result.streams)
        if steps and sh.depth == 0 and sh.subshells == 0:
            step = Step("", line)
            sh._step_verb = None
        try:
            if single is not None:
                status = single(sh, fds)
            else:
                status = sh._run_stages(pipe, fds)
        except ExitSignal as sig:
            if step is not None:
                sh._record(step, pipe, sig.status, exempt=False, mark=mark, exiting=True)
            raise
        finally:
            if negate:
                sh.ignore_errexit -= 1
        if negate:
            status = int(status == 0)
        sh.last_status = status
        if step is not None:
            sh._record(step, pipe, status, exempt, mark)
        if status and not exempt and stops and "e" in sh.options:
            raise ExitSignal(status)
        return status
    return pipeline


def _simple(cmd: Simple) -> Run:
    """A simple command: its words expanded (to nothing: its assignments
    alone), then what the first names, run with the command's
    redirections; $_ is its last argument."""
    line = cmd.line
    plain = not cmd.redirs and not cmd.assigns
    if not cmd.words:
        arguments: Callable[[Shell], list[str]] = lambda sh: []          # noqa: E731
    elif literal(cmd.words[0]) in DECLARATION_BUILTINS:
        words = cmd.words
        arguments = lambda sh: sh.declaration_arguments(words)           # noqa: E731
    else:
        arguments = words_expander(cmd.words)

    def simple(sh: Shell, fds: Fds) -> int:
        sh.line = line
        sh._cmdsub_status = None
        saved_fds = sh.current_fds
        sh.current_fds = fds
        procsubs = len(sh.ns.fds)
        try:
            try:
                argv = arguments(sh)
            except ExpansionError as exc:
                return sh._expansion_failed(exc, fds)
            if not argv:
                return sh._assignments_only(cmd, fds)
            if sh.depth == 0 and sh.subshells == 0:
                sh._step_verb = argv[0]
            if "x" in sh.options:
                sh.shell_trace(argv, fds)
            try:
                if plain:
                    status = sh.call(argv, fds, line)
                else:
                    redirected = sh.call_redirected(cmd, argv, fds)
                    if redirected is None:
                        return 1
                    status = redirected
            except CommandKilled as killed:           # an oops killed the task running it
                sh.shell_error(killed.notice(argv))
                return killed.status
            sh.last_arg = argv[-1]
            return status
        finally:
            sh.current_fds = saved_fds
            nsfds = sh.ns.fds
            if len(nsfds) > procsubs:          # this command's <(…) are read: gone
                for fd in list(nsfds)[procsubs:]:
                    del nsfds[fd]
    return simple


def _command(cmd: Command) -> Run:
    """A command: a simple one, or a compound one with its redirections."""
    if type(cmd) is Simple:
        return _simple(cmd)                          # type: ignore[arg-type]
    body = _compound(cmd)
    line = cmd.line
    redirs = getattr(cmd, "redirs", ())
    if not redirs:
        def command(sh: Shell, fds: Fds) -> int:
            sh.line = line
            return body(sh, fds)
        return command

    def redirected(sh: Shell, fds: Fds) -> int:
        sh.line = line
        try:
            opened = sh.redirect(redirs, fds)
            if opened is None or not sh.open_redirections(opened, fds):
                return 1
        except CommandKilled as killed:               # reading or opening a redirection's file oopsed
            sh.shell_error(killed.notice([]))
            return killed.status
        return body(sh, opened)
    return redirected


compiled_command: ByNode[Command, Run] = ByNode(_command)


def _compound(cmd: Command) -> Run:
    kind = type(cmd)
    if kind is If:
        return _if(cmd)                              # type: ignore[arg-type]
    if kind is Loop:
        return _loop(cmd)                            # type: ignore[arg-type]
    if kind is Group:
        return compiled_sequence(cmd.body)           # type: ignore[union-attr]
    if kind is Subshell:
        body = compiled_sequence(cmd.body)           # type: ignore[union-attr]
        return lambda sh, fds: sh.subshell(lambda: body(sh, fds))
    if kind is Cond:
        return _cond(cmd)                            # type: ignore[arg-type]
    if kind is ArithCmd:
        return _arith_cmd(cmd)                       # type: ignore[arg-type]
    if kind is For:
        return lambda sh, fds: sh._for(cmd, fds)     # type: ignore[arg-type]
    if kind is Case:
        return lambda sh, fds: sh._case(cmd, fds)    # type: ignore[arg-type]
    if kind is FunctionDef:
        name = cmd.name                              # type: ignore[union-attr]

        def define(sh: Shell, fds: Fds) -> int:
            sh.functions[name] = cmd                 # type: ignore[assignment]
            return 0
        return define
    if kind is ArithFor:
        return lambda sh, fds: sh._arith_for(cmd, fds)   # type: ignore[arg-type]

    def unsupported(sh: Shell, fds: Fds) -> int:
        raise sh.unsupported(f"{kind.__name__} is not supported")
    return unsupported


def _condition(seq: Sequence) -> Run:
    """A condition's list: exempt from set -e."""
    run = compiled_sequence(seq)

    def condition(sh: Shell, fds: Fds) -> int:
        sh.ignore_errexit += 1
        try:
            return run(sh, fds)
        finally:
            sh.ignore_errexit -= 1
    return condition


def _if(cmd: If) -> Run:
    clauses = tuple((_condition(cond), compiled_sequence(body)) for cond, body in cmd.clauses)
    orelse = compiled_sequence(cmd.orelse) if cmd.orelse is not None else None

    def if_(sh: Shell, fds: Fds) -> int:
        for cond, body in clauses:
            if cond(sh, fds) == 0:
                return body(sh, fds)
        return orelse(sh, fds) if orelse is not None else 0
    return if_


def _loop(cmd: Loop) -> Run:
    """while/until: the body's last status; break and continue (N levels)."""
    cond = _condition(cmd.cond)
    body = compiled_sequence(cmd.body)
    until = cmd.until

    def loop(sh: Shell, fds: Fds) -> int:
        status = 0
        sh.loops += 1
        try:
            while True:
                if (cond(sh, fds) == 0) == until:
                    return status
                try:
                    status = body(sh, fds)
                except LoopSignal as sig:
                    if sig.levels > 1:
                        sig.levels -= 1
                        raise
                    status = 0
                    if sig.kind != "continue":
                        return status
        finally:
            sh.loops -= 1
    return loop


def _test_status(name: str, test: Callable[[Shell, Fds], object]) -> Run:
    """0 when TEST holds: a malformed arithmetic operand is an error of the
    command NAME, another expansion error ends the shell."""
    def status(sh: Shell, fds: Fds) -> int:
        try:
            return 0 if test(sh, fds) else 1
        except ArithExpansionError as exc:
            sh.shell_error(f"{name}: {exc}", fds)
            return 1
        except ExpansionError as exc:
            return sh._expansion_failed(exc, fds)
    return status


def _cond(cmd: Cond) -> Run:
    """[[ … ]]."""
    expr = cmd.expr
    return _test_status("[[", lambda sh, fds: sh.test_cond(expr, fds))


def _arith_cmd(cmd: ArithCmd) -> Run:
    """(( … )): true when the value is not 0."""
    expr = cmd.expr
    return _test_status("((", lambda sh, fds: arithmetic(sh, expr))
