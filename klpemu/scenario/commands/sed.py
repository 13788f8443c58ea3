"""sed (GNU), the stream editor, for the programs scripts write: commands
s (flags g, p, I, a number), d, p, q and =, each with an optional address
(a line number, $, /regex/, a range A,B, negated with !), separated by ;
or newlines; options -n, -e, -E/-r. Anything else is an error naming it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from klpemu.scenario.fs import FsError
from klpemu.scenario.patterns import PatternError, compile_regex

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc


class SedError(Exception):
    """A program sed cannot run (the message is sed's `-e expression #1, char N: …`)."""


@dataclass
class _Address:
    kind: str                  # line, last, regex
    line: int = 0
    regex: re.Pattern[str] | None = None

    def hits(self, n: int, last: bool, text: str) -> bool:
        if self.kind == "line":
            return n == self.line
        if self.kind == "last":
            return last
        assert self.regex is not None
        return self.regex.search(text) is not None


@dataclass
class _Command:
    name: str
    first: _Address | None = None
    second: _Address | None = None
    negate: bool = False
    regex: re.Pattern[str] | None = None
    replacement: str = ""
    count: int = 1             # s: which match (0: all)
    print_: bool = False


def _regex(text: str, extended: bool, ignore_case: bool = False) -> re.Pattern[str]:
    try:
        return compile_regex(text, extended, ignore_case)
    except PatternError as exc:
        raise SedError(str(exc)) from None


def _delimited(script: str, i: int, delim: str) -> tuple[str, int]:
    """The text up to the next unescaped DELIM (an escaped DELIM becomes DELIM)."""
    out: list[str] = []
    while i < len(script):
        c = script[i]
        if c == "\\" and i + 1 < len(script):
            nxt = script[i + 1]
            out.append(nxt if nxt == delim else c + nxt)
            i += 2
            continue
        if c == delim:
            return "".join(out), i + 1
        if c == "\n":
            break
        out.append(c)
        i += 1
    raise SedError("unterminated `s' command")


@lru_cache(maxsize=256)
def parse(script: str, extended: bool) -> tuple[_Command, ...]:
    """SCRIPT's commands, parsed once per process (they keep no state of a run)."""
    commands: list[_Command] = []
    i = 0
    n = len(script)

    def address() -> _Address | None:
        nonlocal i
        if i < n and script[i].isdigit():
            m = re.compile(r"\d+").match(script, i)
            assert m
            i = m.end()
            return _Address("line", int(m.group()))
        if i < n and script[i] == "$":
            i += 1
            return _Address("last")
        if i < n and (script[i] == "/" or script[i] == "\\"):
            delim = "/"
            if script[i] == "\\":
                delim = script[i + 1]
                i += 1
            text, i = _delimited(script, i + 1, delim)
            ignore = i < n and script[i] == "I"
            if ignore:
                i += 1
            return _Address("regex", regex=_regex(text, extended, ignore))
        return None

    while i < n:
        while i < n and script[i] in " \t\n;":
            i += 1
        if i >= n:
            break
        cmd = _Command("")
        cmd.first = address()
        if cmd.first is not None and i < n and script[i] == ",":
            i += 1
            cmd.second = address()
            if cmd.second is None:
                raise SedError(f"-e expression #1, char {i + 1}: unexpected `,'")
        while i < n and script[i] in " \t":
            i += 1
        if i < n and script[i] == "!":
            cmd.negate = True
            i += 1
        if i >= n:
            raise SedError(f"-e expression #1, char {i}: missing command")
        name = script[i]
        i += 1
        cmd.name = name
        if name == "s":
            if i >= n:
                raise SedError(f"-e expression #1, char {i}: unterminated `s' command")
            delim = script[i]
            pattern, i = _delimited(script, i + 1, delim)
            cmd.replacement, i = _delimited(script, i, delim)
            ignore = False
            cmd.count = 1
            while i < n and script[i] not in ";\n}":
                f = script[i]
                if f == "g":
                    cmd.count = 0
                elif f == "p":
                    cmd.print_ = True
                elif f in "Ii":
                    ignore = True
                elif f.isdigit():
                    m = re.compile(r"\d+").match(script, i)
                    assert m
                    cmd.count = int(m.group())
                    i = m.end()
                    continue
                elif f in " \t":
                    pass
                else:
                    raise SedError(f"-e expression #1, char {i + 1}: unknown option to `s'")
                i += 1
            cmd.regex = _regex(pattern, extended, ignore)
        elif name in "dpq=":
            pass
        else:
            raise SedError(f"-e expression #1, char {i}: the `{name}' command is not supported "
                           "(supported: s, d, p, q, =)")
        commands.append(cmd)
    return tuple(commands)


def _applies(cmd: _Command, n: int, last: bool, text: str, in_range: list[bool], k: int) -> bool:
    """CMD (the K-th) applies to line N; IN_RANGE: each command's range state."""
    if cmd.first is None:
        hit = True
    elif cmd.second is None:
        hit = cmd.first.hits(n, last, text)
    elif in_range[k]:
        hit = True
        if cmd.second.hits(n, last, text) or (cmd.second.kind == "line" and n >= cmd.second.line):
            in_range[k] = False
    else:
        hit = cmd.first.hits(n, last, text)
        if hit:
            in_range[k] = not (cmd.second.kind == "line" and cmd.second.line <= n)
    return hit != cmd.negate


def _replacement(template: str, m: re.Match[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c == "\\" and i + 1 < len(template):
            nxt = template[i + 1]
            if nxt.isdigit():
                out.append(m.group(int(nxt)) or "")
            elif nxt == "n":
                out.append("\n")
            elif nxt == "t":
                out.append("\t")
            else:
                out.append(nxt)
            i += 2
            continue
        out.append(m.group(0) if c == "&" else c)
        i += 1
    return "".join(out)


def _substitute(cmd: _Command, text: str) -> tuple[str, bool]:
    assert cmd.regex is not None
    k = 0
    done = False

    def repl(m: re.Match[str]) -> str:
        nonlocal k, done
        k += 1
        if cmd.count == 0 or k == cmd.count:
            done = True
            return _replacement(cmd.replacement, m)
        return m.group(0)
    result = cmd.regex.sub(repl, text, count=0 if cmd.count == 0 or cmd.count > 1 else 1)
    return result, done


def run(commands: tuple[_Command, ...], text: str, quiet: bool) -> str:
    lines = text.split("\n")
    trailing = lines and lines[-1] == ""
    if trailing:
        lines.pop()
    out: list[str] = []
    in_range = [False] * len(commands)     # each command's: between its two addresses
    for n, line in enumerate(lines, 1):
        last = n == len(lines)
        deleted = False
        stop = False
        for k, cmd in enumerate(commands):
            if not _applies(cmd, n, last, line, in_range, k):
                continue
            if cmd.name == "s":
                line, done = _substitute(cmd, line)
                if done and cmd.print_:
                    out.append(line + "\n")
            elif cmd.name == "d":
                deleted = True
                break
            elif cmd.name == "p":
                out.append(line + "\n")
            elif cmd.name == "=":
                out.append(f"{n}\n")
            elif cmd.name == "q":
                stop = True
                break
        if not deleted and not quiet:
            out.append(line + ("\n" if trailing or not last else ""))
        if stop:
            break
    return "".join(out)


def sed(proc: "Proc") -> int:
    args = list(proc.args)
    quiet = extended = False
    scripts: list[str] = []
    files: list[str] = []
    while args:
        a = args.pop(0)
        if a in ("-n", "--quiet", "--silent"):
            quiet = True
        elif a in ("-E", "-r", "--regexp-extended"):
            extended = True
        elif a == "-e" or a.startswith("-e"):
            value = a[2:] or (args.pop(0) if args else None)
            if value is None:
                return proc.error("option requires an argument -- 'e'", 1)
            scripts.append(value)
        elif a.startswith("-") and len(a) > 1:
            return proc.error(f"option {a} is not supported (supported: -n, -e SCRIPT, -E, -r)", 1)
        elif not scripts:
            scripts.append(a)
        else:
            files.append(a)
    if not scripts:
        proc.err("Usage: sed [OPTION]... {script-only-if-no-other-script} [input-file]...\n")
        return 1
    try:
        commands = parse("\n".join(scripts), extended)
    except SedError as exc:
        return proc.error(str(exc), 1)
    text = []
    status = 0
    for name in files or ["-"]:
        try:
            text.append(proc.stdin() if name == "-" else proc.sh.ns.read(name))
        except FsError as exc:
            proc.error(f"can't read {name}: {exc.reason}", 2)
            status = 2
    output = run(commands, "".join(text), quiet)
    if output:
        proc.out(output)
    return status
