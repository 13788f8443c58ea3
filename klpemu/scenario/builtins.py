"""The shell's builtins, with bash's options, messages and exit statuses:
: true false echo printf test [ local declare typeset export readonly unset
shift set return exit break continue eval . source trap wait kill cd pwd
read command type let exec hash. BUILTINS maps each name to its function;
UNSUPPORTED names the bash builtins this shell does not have (a run that
calls one stops with a ScenarioError).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from klpemu.scenario import expand, formats
from klpemu.scenario.fs import FsError
from klpemu.scenario.process import ExitSignal, LoopSignal, ReturnSignal
from klpemu.scenario.programs import kill_builtin, wait_builtin
from klpemu.scenario.testexpr import test_command
from klpemu.scenario.variables import VariableError

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([^]]*)\])?(\+?=)(.*)", re.S)
_ECHO_OPTIONS = re.compile(r"-[neE]+")
_OPTION_LETTERS = re.compile(r"[-+][A-Za-z]+")
TRAP_SIGNALS = {"0": "EXIT", "1": "HUP", "2": "INT", "3": "QUIT", "15": "TERM", "10": "USR1", "12": "USR2",
                "13": "PIPE", "14": "ALRM", "17": "CHLD"}
UNSUPPORTED = ("getopts", "jobs", "fg", "bg", "disown", "suspend", "ulimit", "umask", "alias", "unalias",
               "enable", "mapfile", "readarray", "history", "fc", "bind", "complete", "compgen", "caller",
               "dirs", "pushd", "popd", "times", "logout", "shopt", "builtin", "coproc")


def _true(proc: "Proc") -> int:
    return 0


def _false(proc: "Proc") -> int:
    return 1


def echo(proc: "Proc") -> int:
    """bash's echo: -n, -e, -E (leading option words of those letters only)."""
    args = proc.args
    newline, escapes = True, False
    k = 0
    while k < len(args) and _ECHO_OPTIONS.fullmatch(args[k]):
        for letter in args[k][1:]:
            if letter == "n":
                newline = False
            else:
                escapes = letter == "e"
        k += 1
    text = " ".join(args[k:])
    if escapes:
        text, stop = formats.backslash_escapes(text, echo=True)
        if stop:
            proc.out(text)
            return 0
    proc.out(text + ("\n" if newline else ""))
    return 0


def printf(proc: "Proc") -> int:
    args = list(proc.args)
    target: str | None = None
    if args[:1] == ["-v"]:
        if len(args) < 2:
            return proc.builtin_error("-v: option requires an argument", 2)
        target, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        return proc.builtin_error("usage: printf [-v var] format [arguments]", 2)
    status = 0

    def complain(message: str) -> None:
        nonlocal status
        status = 1
        proc.builtin_error(message)
    text = formats.printf(args[0], args[1:], complain)
    if target is not None:
        proc.sh.assign(target, text)
    else:
        proc.out(text)
    return status


# ---------------------------------------------------------------- variables
def _declare_one(proc: "Proc", arg: str, *, local: bool, flags: set[str], off: set[str]) -> int:
    sh = proc.sh
    m = _ASSIGNMENT.fullmatch(arg)
    name = m.group(1) if m else arg
    if not m and not _NAME.fullmatch(name):           # (_ASSIGNMENT's NAME is one)
        return proc.builtin_error(f"`{arg}': not a valid identifier")
    var = sh.vars.declare_local(name) if local else sh.vars.lookup(name)
    if var is None:
        var = sh.vars.new_global(name)
    if "i" in flags:
        var.integer = True
    if "i" in off:
        var.integer = False
    if "x" in flags:
        var.exported = True
    if "x" in off:
        var.exported = False
    if "a" in flags and not isinstance(var.value, dict):
        var.value = {} if var.value is None else {0: var.value}
    try:
        if m:
            _, index, op, value = m.groups()
            slot = None
            if index is not None:
                slot = expand.evaluate_text(sh, index) if index.strip() else 0
            sh.assign(name, value, slot, op == "+=")
    except expand.ExpansionError as exc:
        return proc.builtin_error(str(exc))
    if "r" in flags:
        var.readonly = True
    return 0


def _flags(proc: "Proc", allowed: str) -> tuple[set[str], set[str], list[str]] | int:
    flags: set[str] = set()
    off: set[str] = set()
    args = proc.args                                  # (a new list)
    while args and _OPTION_LETTERS.fullmatch(args[0]):
        opt = args.pop(0)
        for letter in opt[1:]:
            if letter not in allowed:
                return proc.builtin_error(f"{opt}: invalid option" if letter not in "AnlutfF"
                                          else f"-{letter}: the option is not supported", 2)
            (flags if opt[0] == "-" else off).add(letter)
    if args[:1] == ["--"]:
        args = args[1:]
    return flags, off, args


def local(proc: "Proc") -> int:
    sh = proc.sh
    if not sh.vars.scopes or sh.function_depth == 0:
        return proc.builtin_error("can only be used in a function")
    parsed = _flags(proc, "airx")
    if isinstance(parsed, int):
        return parsed
    flags, off, args = parsed
    status = 0
    for arg in args:
        status = _declare_one(proc, arg, local=True, flags=flags, off=off) or status
    return status


def declare(proc: "Proc") -> int:
    sh = proc.sh
    parsed = _flags(proc, "airxgp")
    if isinstance(parsed, int):
        return parsed
    flags, off, args = parsed
    if "p" in flags or not args:
        for name in args or sh.vars.names():
            value = sh.variable(name)
            if value is None and not sh.vars.array(name):
                proc.builtin_error(f"{name}: not found")
                continue
            proc.out(_describe(sh, name) + "\n")
        return 0
    in_function = sh.function_depth > 0 and "g" not in flags
    status = 0
    for arg in args:
        status = _declare_one(proc, arg, local=in_function, flags=flags, off=off) or status
    return status


def _describe(sh, name: str) -> str:
    var = sh.vars.lookup(name)
    attrs = "".join(a for a, on in (("a", isinstance(var.value, dict)), ("i", var.integer),
                                    ("r", var.readonly), ("x", var.exported)) if on) if var else ""
    if var is not None and isinstance(var.value, dict):
        items = " ".join(f'[{k}]="{v}"' for k, v in sorted(var.value.items()))
        return f"declare -{attrs or '-'} {name}=({items})"
    value = sh.variable(name)
    return f"declare -{attrs or '-'} {name}" + (f'="{value}"' if value is not None else "")


def export(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    unexport = False
    if args and args[0] in ("-n", "-p", "-f"):
        opt = args.pop(0)
        if opt == "-f":
            raise sh.unsupported("export -f (exporting functions) is not supported")
        unexport = opt == "-n"
        if opt == "-p":
            for name in sh.vars.names():
                var = sh.vars.lookup(name)
                if var is not None and var.exported:
                    proc.out(_describe(sh, name).replace("declare -", "declare -x", 1)
                             .replace("-xx", "-x") + "\n")
            return 0
    status = 0
    for arg in args:
        m = _ASSIGNMENT.fullmatch(arg)
        name = m.group(1) if m else arg
        if not _NAME.fullmatch(name):
            status = proc.builtin_error(f"`{arg}': not a valid identifier")
            continue
        if m:
            try:
                sh.assign(name, m.group(4), None, m.group(3) == "+=")
            except expand.ExpansionError as exc:
                status = proc.builtin_error(str(exc))
                continue
        var = sh.vars.lookup(name)
        if var is None:
            var = sh.vars.new_global(name)
        var.exported = not unexport
    return status


def readonly(proc: "Proc") -> int:
    status = 0
    for arg in proc.args:
        if arg.startswith("-"):
            return proc.builtin_error(f"{arg}: invalid option", 2)
        status = _declare_one(proc, arg, local=False, flags={"r"}, off=set()) or status
    return status


def unset(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    functions = False
    if args and args[0] in ("-v", "-f"):
        functions = args.pop(0) == "-f"
    status = 0
    for arg in args:
        if functions:
            sh.functions.pop(arg, None)
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(.*)\])?", arg)
        if m is None:
            status = proc.builtin_error(f"`{arg}': not a valid identifier")
            continue
        try:
            index = expand.evaluate_text(sh, m.group(2)) if m.group(2) is not None else None
            if sh.vars.lookup(m.group(1)) is None and index is None and m.group(1) in sh.functions:
                sh.functions.pop(m.group(1))
            sh.vars.unset(m.group(1), index)
        except (VariableError, expand.ExpansionError) as exc:
            status = proc.builtin_error(str(exc))
    return status


def shift(proc: "Proc") -> int:
    sh = proc.sh
    args = proc.args
    try:
        n = int(args[0]) if args else 1
    except ValueError:
        return proc.builtin_error(f"{args[0]}: numeric argument required")
    if n < 0 or n > len(sh.positional):
        if n < 0:
            return proc.builtin_error(f"{n}: shift count out of range")
        return 1
    sh.positional = sh.positional[n:]
    return 0


_LONG_OPTIONS = {"errexit": "e", "nounset": "u", "xtrace": "x", "pipefail": "pipefail", "noglob": "f",
                 "verbose": "v", "noclobber": "C", "allexport": "a", "hashall": "h", "braceexpand": "B"}


def set_builtin(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    if not args:
        for name in sh.vars.names():
            value = sh.variable(name)
            if value is not None:
                proc.out(f"{name}={formats.shell_quote(value)}\n")
        return 0
    while args:
        a = args[0]
        if a in ("--", "-"):
            args.pop(0)
            sh.positional = args
            return 0
        if a in ("-o", "+o"):
            args.pop(0)
            if not args:
                for long, short in _LONG_OPTIONS.items():
                    proc.out(f"{long:<15}\t{'on' if short in sh.options else 'off'}\n")
                return 0
            name = args.pop(0)
            if name not in _LONG_OPTIONS:
                return proc.builtin_error(f"{name}: invalid option name", 2)
            _set_option(sh, _LONG_OPTIONS[name], a == "-o")
            continue
        if _OPTION_LETTERS.fullmatch(a):
            args.pop(0)
            for letter in a[1:]:
                if letter not in "euxfvCahB":
                    return proc.builtin_error(f"{a[0]}{letter}: invalid option", 2)
                _set_option(sh, letter, a[0] == "-")
            continue
        sh.positional = args
        return 0
    return 0


def _set_option(sh, option: str, on: bool) -> None:
    if option in ("f", "C", "v", "a"):
        raise sh.unsupported(f"set -{option} is not supported")
    if on:
        sh.options.add(option)
    else:
        sh.options.discard(option)


# ---------------------------------------------------------------- control
def return_builtin(proc: "Proc") -> int:
    sh = proc.sh
    if sh.function_depth == 0 and sh.source_depth == 0:
        return proc.builtin_error("can only `return' from a function or sourced script", 2)
    status = _status_arg(proc, sh.last_status)
    if status is None:
        return 2
    raise ReturnSignal(status)


def _status_arg(proc: "Proc", default: int) -> int | None:
    if not proc.args:
        return default
    try:
        return int(proc.args[0]) & 0xFF
    except ValueError:
        proc.builtin_error(f"{proc.args[0]}: numeric argument required")
        return None


def exit_builtin(proc: "Proc") -> int:
    status = _status_arg(proc, proc.sh.last_status)
    raise ExitSignal(2 if status is None else status)


def _loop_control(proc: "Proc") -> int:
    sh = proc.sh
    if sh.loops == 0:
        return proc.builtin_error("only meaningful in a `for', `while', or `until' loop", 0)
    try:
        levels = int(proc.args[0]) if proc.args else 1
    except ValueError:
        return proc.builtin_error(f"{proc.args[0]}: numeric argument required")
    if levels < 1:
        return proc.builtin_error(f"{levels}: loop count out of range")
    raise LoopSignal(proc.name, min(levels, sh.loops))


def eval_builtin(proc: "Proc") -> int:
    text = " ".join(proc.args)
    if not text.strip():
        return 0
    sh = proc.sh
    sh.depth += 1
    try:
        return sh.eval_text(text, proc.fds)
    finally:
        sh.depth -= 1


def source(proc: "Proc") -> int:
    sh = proc.sh
    if not proc.args:
        return proc.builtin_error("filename argument required", 2)
    name = proc.args[0]
    path = sh.ns.resolve(name)
    if "/" not in name and not sh.ns.is_file(path):
        return proc.builtin_error(f"{name}: file not found")
    try:
        return sh.source_file(path, name, proc.args[1:] or None, proc.fds)
    except FsError as exc:
        proc.err(f"{sh.where(proc.line)}{name}: {exc.reason}\n")
        return 1


def trap(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or args == ["-p"]:
        for sig, action in sh.traps.items():
            proc.out(f"trap -- {formats.shell_quote(action)} {sig}\n")
        return 0
    if args[0] == "-l":
        proc.out(" ".join(f"{n}) SIG{s}" for n, s in TRAP_SIGNALS.items() if n != "0") + "\n")
        return 0
    if len(args) == 1:
        action, signals = "-", args
    else:
        action, signals = args[0], args[1:]
    status = 0
    for spec in signals:
        sig = TRAP_SIGNALS.get(spec, spec.upper().removeprefix("SIG"))
        if sig in ("ERR", "DEBUG", "RETURN"):
            raise sh.unsupported(f"trap on {sig} is not supported")
        if sig not in TRAP_SIGNALS.values():
            status = proc.builtin_error(f"{spec}: invalid signal specification")
            continue
        if action == "-":
            sh.traps.pop(sig, None)
        else:
            sh.traps[sig] = action       # only EXIT ever fires: nothing signals the script's shell
    return status


def cd(proc: "Proc") -> int:
    sh = proc.sh
    args = [a for a in proc.args if a not in ("-L", "-P")]
    target = args[0] if args else (sh.variable("HOME") or "/root")
    if target == "-":
        target = sh.variable("OLDPWD") or sh.ns.cwd
    path = sh.ns.resolve(target)
    if not sh.ns.exists(path):
        return proc.builtin_error(f"{target}: No such file or directory")
    if not sh.ns.is_dir(path):
        return proc.builtin_error(f"{target}: Not a directory")
    sh.assign("OLDPWD", sh.ns.cwd)
    sh.ns.cwd = path
    sh.assign("PWD", path)
    return 0


def pwd(proc: "Proc") -> int:
    proc.out(proc.sh.ns.cwd + "\n")
    return 0


def read(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    raw, array = False, None
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0)
        for k, letter in enumerate(opt[1:], 1):
            if letter == "r":
                raw = True
            elif letter in "ap":
                value = opt[k + 1:] or (args.pop(0) if args else None)
                if value is None:
                    return proc.builtin_error(f"-{letter}: option requires an argument", 2)
                if letter == "a":
                    array = value
                break                          # (-p's prompt shows only on a terminal)
            else:
                raise sh.unsupported(f"read -{letter} is not supported (only -r, -a NAME, -p PROMPT)")
    stream = proc.stdin_stream()
    line = stream.readline() if stream is not None else None
    if line is None:
        for name in args or ["REPLY"]:
            sh.assign(name, "")
        return 1
    eof = not line.endswith("\n")
    line = line.rstrip("\n")
    if not raw:
        while line.endswith("\\") and stream is not None:
            more = stream.readline()
            if more is None:
                line = line[:-1]
                break
            line = line[:-1] + more.rstrip("\n")
        line = re.sub(r"\\(.)", r"\1", line)
    ifs = sh.variable("IFS")
    ifs = " \t\n" if ifs is None else ifs
    names = args or ["REPLY"]
    if array is not None:
        sh.vars.set_array(array, _ifs_fields(line, ifs, None))
        return 1 if eof else 0
    if names == ["REPLY"] and not args:
        sh.assign("REPLY", line)
        return 1 if eof else 0
    fields = _ifs_fields(line, ifs, len(names))
    for k, name in enumerate(names):
        sh.assign(name, fields[k] if k < len(fields) else "")
    return 1 if eof else 0


def _ifs_fields(line: str, ifs: str, count: int | None) -> list[str]:
    """read's splitting: the last name takes the rest of the line."""
    ws = "".join(c for c in ifs if c in " \t\n")
    line = line.strip(ws) if ws else line
    if not ifs:
        return [line]
    pattern = f"[{re.escape(ws)}]*[{re.escape(ifs)}][{re.escape(ws)}]*" if ws else f"[{re.escape(ifs)}]"
    if not line:
        return []
    if count == 1:
        return [line]
    return re.split(pattern, line, maxsplit=count - 1 if count else 0)


def command_builtin(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    if args and args[0] in ("-v", "-V"):
        verbose = args.pop(0) == "-V"
        status = 0
        for name in args:
            found = sh.lookup(name)
            if found is None:
                status = 1
                if verbose:
                    proc.builtin_error(f"{name}: not found")
                continue
            kind = found[0]
            if kind == "command":
                shown = name if "/" in name else f"/usr/bin/{name}"
                proc.out(f"{name} is {shown}\n" if verbose else shown + "\n")
            else:
                proc.out(f"{name} is a shell {kind}\n" if verbose else name + "\n")
        return status
    if args and args[0] == "-p":
        args.pop(0)
    if not args:
        return 0
    found = sh.lookup(args[0])
    if found is not None and found[0] == "function":
        saved = sh.functions
        sh.functions = {}
        try:
            return sh.call(args, proc.fds, proc.line)
        finally:
            sh.functions = saved
    return sh.call(args, proc.fds, proc.line)


def type_builtin(proc: "Proc") -> int:
    sh = proc.sh
    args = list(proc.args)
    terse = bool(args) and args[0] == "-t"
    if terse:
        args.pop(0)
    status = 0
    for name in args:
        found = sh.lookup(name)
        if found is None:
            status = 1
            if not terse:
                proc.builtin_error(f"{name}: not found")
            continue
        kind = {"command": "file", "helper": "function"}.get(found[0], found[0])
        if terse:
            proc.out(kind + "\n")
        elif kind == "file":
            proc.out(f"{name} is /usr/bin/{name}\n")
        else:
            proc.out(f"{name} is a {'shell builtin' if kind == 'builtin' else 'function'}\n")
    return status


def let(proc: "Proc") -> int:
    sh = proc.sh
    if not proc.args:
        return proc.builtin_error("expression expected")
    value = 0
    for expr in proc.args:
        try:
            value = expand.evaluate_text(sh, expr)
        except expand.ExpansionError as exc:
            return proc.builtin_error(str(exc))
    return 0 if value else 1


def exec_builtin(proc: "Proc") -> int:
    sh = proc.sh
    if proc.args:
        raise sh.unsupported("exec COMMAND (replacing the shell) is not supported; exec with "
                             "redirections only changes the script's descriptors")
    if sh.function_depth or sh.subshells:
        raise sh.unsupported("exec with redirections inside a function or subshell is not supported")
    fds = dict(proc.fds)
    sh.stdio.clear()
    sh.stdio.update(fds)
    return 0


def _unsupported(proc: "Proc") -> int:
    raise proc.sh.unsupported(f"the {proc.name} builtin is not supported")


BUILTINS: dict[str, Callable[["Proc"], int]] = {
    ":": _true, "true": _true, "false": _false, "echo": echo, "printf": printf,
    "test": test_command, "[": test_command,
    "local": local, "declare": declare, "typeset": declare, "export": export, "readonly": readonly,
    "unset": unset, "shift": shift, "set": set_builtin,
    "return": return_builtin, "exit": exit_builtin, "break": _loop_control, "continue": _loop_control,
    "eval": eval_builtin, ".": source, "source": source, "trap": trap,
    "wait": wait_builtin, "kill": kill_builtin, "cd": cd, "pwd": pwd, "read": read,
    "command": command_builtin, "type": type_builtin, "let": let, "exec": exec_builtin, "hash": _true,
    **{name: _unsupported for name in UNSUPPORTED},
}
