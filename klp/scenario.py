r"""Scenario scripts: the body of a kernel livepatch selftest, run on the emulator.

A scenario is a bash subset that would also run on a real kernel with the
selftests' `functions.sh` sourced. Commands print to the scenario's output as
a shell would, and log into the kernel log exactly as the selftests do
(`% insmod test_modules/X.ko`, `===== TEST: … =====`, …).

Syntax (read as a whole, so that a quoted argument may span lines):
- one simple command per line; `\` + newline continues a line;
- `# comments`, blank lines;
- quoting: '…' (literal), "…" (with `$` expansion; inside it a backslash
  escapes only $, backquote, " and backslash), `\c` outside quotes;
- `VAR=value`, `VAR="multi word"`, `export VAR=value`; `$VAR`, `${VAR}`
  (an undefined variable is an error, to catch typos); unquoted expansions
  are split into words as bash does; `$'…'` (ANSI-C quoting);
- indexed arrays: `NAME[INDEX]=value`, `${NAME[INDEX]}`, `${NAME[@]}` and
  `${NAME[*]}` (the elements in index order), `${#NAME[@]}` (their count);
- `$((EXPR))`: integer arithmetic, C's operators and `?:` without
  assignments (klp/arith.py); array subscripts are arithmetic too;
- `$(…)` for a few read-only commands: `cat PATH…`, `ls [-1] DIR`, `grep …`,
  `dmesg`, `echo …`, `seq [FIRST [INCR]] LAST`, `nproc` and
  `getconf _NPROCESSORS_ONLN` (both count the CPUs in
  /sys/devices/system/cpu/online, as glibc does), optionally piped into
  `grep …`, `wc -l` or `tr SET1 SET2`;
- `CMD > PATH` (also `>>`) for echo, cat and grep (`> /dev/null` discards);
- `if COND; then` (or `then` on the next line), optional `elif COND; then`
  and `else`, closing `fi`, nested at will; COND is a condition as for
  loop_until below, evaluated when the `if` runs; `then`, `else` and `fi`
  stand alone on their lines, and a branch may not be empty (as in bash).
- `for NAME in WORDS; do` (or `do` on the next line) … `done`: WORDS are
  expanded and split when the loop starts; `do` and `done` stand alone.
- `CMD1 || CMD2 …`: a command runs only if the one before it failed, whose
  failure then does not count (`kill $pid || true`); a line ending in `||`
  goes on on the next one.
- `PROGRAM &` starts one of the guest's user programs (PROGRAMS, e.g.
  `./test_klp-call_getpid`, the selftests' helper that calls getpid in a
  loop) as a user task, in the background; `$!` is its pid. A program runs
  until a signal ends it (`kill [-SIGNAL] PID…`), so it only runs with `&`.
- Not supported, and reported with the line number: `;` (but before `then`
  and `do`), `&&`, `|` (outside `$(…)`), `<`, `&` (but after a program),
  `( )`, backquotes, `${VAR%…}` forms, `NAME=(…)` array literals,
  `while`/`until`/`case`/functions.

Verbs: see VERBS (shell: cat, echo, grep, sleep, dmesg, insmod, rmmod, kill,
true, false, exit;
functions.sh: log, start_test, check_result, load_mod, load_lp,
load_lp_nowait, load_failing_mod, unload_mod, unload_lp, disable_lp,
set_pre_patch_ret, loop_until, check_sysfs_rights, check_sysfs_value,
set_ftrace_enabled, setup_config, skip, die, cleanup_tracing, trace_function,
check_traced_functions).

`loop_until 'CONDITION'` evaluates CONDITION up to MAX_RETRIES+1 times (601),
RETRY_INTERVAL (0.1 s) of virtual time apart, as functions.sh does. A condition
(loop_until's, if's, elif's) is one command, optionally negated with `!`:
- `grep [-q] [-v] [-E|-F] [-i] [-x] PATTERN PATH` (true when a line matches);
- `[[ EXPR ]]`, `[ EXPR ]` or `test EXPR`, where EXPR is `-e|-d|-f|-n|-z X`,
  `A ==|=|!= B` (exact strings) or `A -eq|-ne|-lt|-le|-gt|-ge B`, possibly
  after `!`; operands may use `$(…)`, e.g.
  `[[ $(ls -1 /sys/kernel/livepatch | wc -l) -eq 1 ]]` or
  `[[ $(cat /sys/module/X/refcnt) == "0" ]]`;
- `true`, `false`;
- `ftrace_disable_supported` (newer functions.sh: can kernel.ftrace_enabled be 0).
A loop that runs out of retries is a failed step (the script goes on).

Helpers that `die` in functions.sh (a failed check_result, a module that does
not load, a wait that times out …) log `ERROR: …` to /dev/kmsg, print it, and
stop the script with a failure; `skip` stops it with SKIP (exit 4 in
kselftest terms, see ScenarioResult.exit_code). Plain shell commands that fail
(cat of a missing file, a refused write) are failed steps and the script goes on.
"""
from __future__ import annotations

import datetime
import difflib
import errno as _errno
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from emu import EmuError, Machine, ShellError
from emu.shell import MODE_GETPID_LOOP

from . import arith
from .core import Livepatch

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODULES = ROOT / "fixtures" / "build" / "modules"
SYSFS_KLP_DIR = "/sys/kernel/livepatch"
SYSFS_TRACING_DIR = "/sys/kernel/debug/tracing"
FTRACE_SYSCTL = "/proc/sys/kernel/ftrace_enabled"
MAX_RETRIES = 600
RETRY_INTERVAL = 0.1
KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4
CPU_ONLINE = "/sys/devices/system/cpu/online"
SYS_KILL = 62

# The guest's user programs a scenario can start with `PROGRAM &`: the
# mode of the user program (fixtures/user/user.c) each one runs.
PROGRAMS = {
    "test_klp-call_getpid": MODE_GETPID_LOOP,   # getpid in a loop, until a signal ends it
}
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15}

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

CONDITIONS = ("grep", "[[", "[", "test", "true", "false", "ftrace_disable_supported")

# kmod's insmod: its own text for a few errnos, strerror for the rest.
KMOD_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module",
    _errno.EINVAL: "Invalid parameters",
}
# kmod's modprobe (the selftests before 6.9 loaded with it): strerror but for these.
MODPROBE_ERRORS = {
    _errno.ENOEXEC: "Invalid module format",
    _errno.ENOENT: "Unknown symbol in module, or unknown parameter (see dmesg)",
}


class ScenarioError(Exception):
    """A script line that cannot be run (a usage error, not a failed check)."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


@dataclass
class Step:
    """One command of the script and how it went."""
    verb: str
    line: int
    ok: bool = True
    message: str = ""

    def to_json(self) -> dict[str, object]:
        return {"verb": self.verb, "line": self.line, "ok": self.ok, "message": self.message}


@dataclass
class ScenarioResult:
    output: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    skipped: str | None = None        # the skip message, when the script skipped
    exit_status: int | None = None    # set by `exit N`

    @property
    def ok(self) -> bool:
        return not self.failures and not self.exit_status

    @property
    def exit_code(self) -> int:
        """kselftest's code: 0 pass, 1 fail, 4 skip."""
        if not self.ok:
            return KSFT_FAIL
        return KSFT_SKIP if self.skipped is not None else KSFT_PASS

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "exit_code": self.exit_code, "skipped": self.skipped,
                "failures": list(self.failures), "steps": [s.to_json() for s in self.steps]}


# ---------------------------------------------------------------------- parsing
# A word is a list of parts: (quoted, kind, value), kind "lit", "var" or "cmd".
Part = tuple[bool, str, str]
REDIRECT = ">"
PIPE = "|"
OR = "||"
BACKGROUND = "&"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_ARRAY_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[")
_BRACED = re.compile(r"(#?)([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]+)\])?")
_THEN = re.compile(r"[ \t]*then(?=[ \t\r\n]|$)")
_DO = re.compile(r"[ \t]*do(?=[ \t\r\n]|$)")
_ANSI_C = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "v": "\v",
           "\\": "\\", "'": "'", '"': '"'}
KEYWORDS = ("if", "then", "elif", "else", "fi", "for", "do", "done")


def _word_keyword(word: list[Part] | str) -> str | None:
    """The reserved word WORD is, when written unquoted (a quoted "if" is a plain word)."""
    if isinstance(word, str) or not word or any(q or kind != "lit" for q, kind, _ in word):
        return None
    text = "".join(v for _, _, v in word)
    return text if text in KEYWORDS else None


@dataclass
class RawCommand:
    lineno: int
    words: list[list[Part] | str]       # a word, or an operator: REDIRECT, PIPE, OR, BACKGROUND

    def literal_head(self) -> str | None:
        """The command name when it is written literally (no expansion)."""
        first = self.words[0]
        if isinstance(first, str) or any(kind != "lit" for _, kind, _ in first):
            return None
        return "".join(v for _, _, v in first)


class Lexer:
    """Splits a whole script into simple commands, keeping the quoting structure
    so that expansion can happen when each command runs."""

    def __init__(self, text: str, first_line: int = 1, allow_pipe: bool = False) -> None:
        self.text = text
        self.i = 0
        self.line = first_line
        self.allow_pipe = allow_pipe

    def error(self, message: str, line: int | None = None) -> ScenarioError:
        return ScenarioError(self.line if line is None else line, message)

    def commands(self) -> list[RawCommand]:
        out: list[RawCommand] = []
        words: list[list[Part] | str] = []
        word: list[Part] | None = None
        start = self.line
        text, n = self.text, len(self.text)

        def end_word() -> None:
            nonlocal word
            if word is not None:
                words.append(word)
                word = None

        def add(part: Part) -> None:
            nonlocal word, start
            if word is None:
                if not words:
                    start = self.line
                word = []
            word.append(part)

        while self.i < n:
            c = text[self.i]
            if c == "\n":
                end_word()
                # as in bash, a command ending in `||` goes on on the next line
                if words and words[-1] != OR:
                    out.append(RawCommand(start, words))
                    words = []
                self.line += 1
                self.i += 1
            elif c in " \t\r":
                end_word()
                self.i += 1
            elif c == "#" and word is None:
                while self.i < n and text[self.i] != "\n":
                    self.i += 1
            elif c == "\\":
                if self.i + 1 < n and text[self.i + 1] == "\n":
                    self.line += 1
                elif self.i + 1 < n:
                    add((True, "lit", text[self.i + 1]))
                self.i += 2
            elif c == "'":
                line = self.line
                end = text.find("'", self.i + 1)
                if end < 0:
                    raise self.error("unterminated single quote", line)
                value = text[self.i + 1:end]
                add((True, "lit", value))
                self.line += value.count("\n")
                self.i = end + 1
            elif c == '"':
                self._double_quoted(add)
            elif c == "$":
                add(self._dollar(quoted=False))
            elif c == ">":
                if word is not None and all(not q and k == "lit" and v.isdigit() for q, k, v in word):
                    raise self.error("redirections of file descriptors (2>, 1>) are not supported")
                end_word()
                if not words:
                    start = self.line
                self.i += 2 if text[self.i + 1:self.i + 2] == ">" else 1
                if text[self.i:self.i + 1] == "&":
                    raise self.error("redirections to file descriptors (>&) are not supported")
                words.append(REDIRECT)
            elif c == "|" and self.allow_pipe and text[self.i + 1:self.i + 2] != "|":
                end_word()
                words.append(PIPE)
                self.i += 1
            elif c == ";":
                # Only `if COND; then`, `elif COND; then` and `for … ; do`: the
                # `;` ends the head and `then` or `do` starts the next command.
                end_word()
                head = _word_keyword(words[0]) if words else None
                follows = _THEN if head in ("if", "elif") else _DO if head == "for" else None
                if follows is None or not follows.match(text, self.i + 1):
                    raise self.error("';' (one command per line) is not supported in scenarios, "
                                     "except in 'if COND; then' and 'for NAME in WORDS; do'")
                out.append(RawCommand(start, words))
                words = []
                self.i += 1
            elif not self.allow_pipe and (text.startswith("||", self.i)
                                          or c == "&" and not text.startswith("&&", self.i)):
                end_word()
                if not words:
                    start = self.line
                words.append(BACKGROUND if c == "&" else OR)
                self.i += len(words[-1])
            elif c in "&|<()`":
                what = { "&": "'&&' (and '&' inside $(…))", "|": "pipes outside $(…) (and '||' inside it)",
                        "<": "input redirection", "(": "subshells and '( )'", ")": "')'",
                        "`": "backquotes (use $(…))"}[c]
                raise self.error(f"{what} is not supported in scenarios")
            else:
                add((False, "lit", c))
                self.i += 1
        end_word()
        if words:
            out.append(RawCommand(start, words))
        return [self._merge(cmd) for cmd in out]

    @staticmethod
    def _merge(cmd: RawCommand) -> RawCommand:
        """Join adjacent literal parts of the same quoting (tidier, same meaning)."""
        words: list[list[Part] | str] = []
        for w in cmd.words:
            if isinstance(w, str):
                words.append(w)
                continue
            merged: list[Part] = []
            for part in w:
                if merged and part[1] == "lit" and merged[-1][1] == "lit" and merged[-1][0] == part[0]:
                    merged[-1] = (part[0], "lit", merged[-1][2] + part[2])
                else:
                    merged.append(part)
            words.append(merged)
        return RawCommand(cmd.lineno, words)

    def _double_quoted(self, add: Callable[[Part], None]) -> None:
        text, n = self.text, len(self.text)
        line = self.line
        self.i += 1
        buf = []
        saw_part = False
        while True:
            if self.i >= n:
                raise self.error("unterminated double quote", line)
            c = text[self.i]
            if c == '"':
                self.i += 1
                break
            if c == "\\" and self.i + 1 < n and text[self.i + 1] in '$`"\\\n':
                if text[self.i + 1] == "\n":
                    self.line += 1
                else:
                    buf.append(text[self.i + 1])
                self.i += 2
            elif c == "$":
                part = self._dollar(quoted=True)
                if part[1] == "lit":
                    buf.append(part[2])
                else:
                    add((True, "lit", "".join(buf)))
                    buf = []
                    add(part)
                    saw_part = True
            elif c == "`":
                raise self.error("backquotes are not supported in scenarios (use $(…))")
            else:
                if c == "\n":
                    self.line += 1
                buf.append(c)
                self.i += 1
        if buf or not saw_part:
            add((True, "lit", "".join(buf)))

    def _dollar(self, quoted: bool) -> Part:
        text = self.text
        i = self.i + 1
        if text.startswith("'", i) and not quoted:
            return self._ansi_c(i + 1)
        if text.startswith("((", i):
            end = self._arith_end(i + 2)
            inner = text[i + 2:end]
            if any(q in inner for q in "'\"`"):
                raise self.error("quotes are not supported inside $((…))")
            self.line += inner.count("\n")
            self.i = end + 2
            return (quoted, "arith", inner)
        if text.startswith("(", i):
            depth, j, quote = 1, i + 1, None
            while j < len(text):
                ch = text[j]
                if quote:
                    if ch == quote:
                        quote = None
                elif ch in "'\"":
                    quote = ch
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            else:
                raise self.error("unterminated $(")
            inner = text[i + 1:j]
            self.line += inner.count("\n")
            self.i = j + 1
            return (quoted, "cmd", inner)
        if text.startswith("{", i):
            end = text.find("}", i)
            inner = text[i + 1:end] if end > 0 else ""
            m = _BRACED.fullmatch(inner)
            if not m or (m.group(1) and m.group(3) not in ("@", "*")) or '"' in (m.group(3) or ""):
                raise self.error(f"unsupported expansion ${{{inner if end > 0 else '…'}}} (supported: "
                                 "${VAR}, ${NAME[INDEX]}, ${NAME[@]}, ${NAME[*]}, ${#NAME[@]})")
            self.i = end + 1
            count, name, index = m.groups()
            if count:
                return (quoted, "count", name)
            return (quoted, "var", name) if index is None else (quoted, "elem", f"{name}[{index}]")
        m = _NAME.match(text, i)
        if m:
            self.i = m.end()
            return (quoted, "var", m.group())
        if text.startswith("!", i):
            self.i = i + 1
            return (quoted, "var", "!")
        if i < len(text) and (text[i].isdigit() or text[i] in "@*#?!$-"):
            raise self.error(f"special parameter ${text[i]} is not supported in scenarios")
        self.i = i
        return (quoted, "lit", "$")

    def _ansi_c(self, start: int) -> Part:
        """`$'…'` from just after its quote: a literal with backslash escapes."""
        text, j, out = self.text, start, []
        while j < len(text) and text[j] != "'":
            if text[j] == "\\" and j + 1 < len(text):
                out.append(_ANSI_C.get(text[j + 1], "\\" + text[j + 1]))
                j += 2
                continue
            self.line += text[j] == "\n"
            out.append(text[j])
            j += 1
        if j == len(text):
            raise self.error("unterminated $'")
        self.i = j + 1
        return (True, "lit", "".join(out))

    def _arith_end(self, start: int) -> int:
        """Where the `))` closing a `$((` that opened before START is."""
        text, depth = self.text, 0
        for j in range(start, len(text)):
            if text[j] == "(":
                depth += 1
            elif text[j] == ")" and depth:
                depth -= 1
            elif text[j] == ")":
                if text.startswith("))", j):
                    return j
                break
        raise self.error("unterminated $((")


@dataclass
class IfCommand:
    """`if COND; then … [elif COND; then …] [else …] fi`: the branches in
    order, each a condition (one command, run by ScenarioRunner.condition) and
    its body."""
    lineno: int
    branches: list[tuple[RawCommand, list[Statement]]]
    orelse: list[Statement] | None = None


@dataclass
class ForCommand:
    """`for NAME in WORDS; do … done`: WORDS are expanded when the loop starts."""
    lineno: int
    name: str
    words: list[list[Part] | str]
    body: list[Statement]


@dataclass
class OrList:
    """`CMD1 || CMD2 || …`: each command runs only if the one before it failed."""
    lineno: int
    commands: list[RawCommand]


Statement = RawCommand | IfCommand | ForCommand | OrList


def describe(words: list[list[Part] | str]) -> str:
    """Words as they were written, near enough for an error message."""
    out = []
    for w in words:
        if isinstance(w, str):
            out.append(w)
            continue
        out.append("".join(v if kind == "lit" else f"${{{v}}}" if kind == "var" else f"$({v})"
                           for _, kind, v in w))
    return " ".join(out)


def check_condition(cmd: RawCommand) -> None:
    """What loop_until and `if` accept as a condition: grep, [[ … ]], [ … ],
    test, true or false, possibly after `!`."""
    lineno, text = cmd.lineno, describe(cmd.words)
    if REDIRECT in cmd.words or PIPE in cmd.words:
        raise ScenarioError(lineno, "a condition cannot be redirected or piped")
    if OR in cmd.words or BACKGROUND in cmd.words:
        raise ScenarioError(lineno, "a condition is one command, without '||' or '&'")
    words = cmd.words
    head = cmd.literal_head()
    if head == "!" and len(words) > 1:
        words = words[1:]
        head = RawCommand(lineno, words).literal_head()
    if head not in CONDITIONS:
        raise ScenarioError(lineno, f"unsupported condition {text!r}: use grep, [[ … ]], [ … ], "
                                    "test, true, false or ftrace_disable_supported")
    if head in ("[[", "["):
        close = "]]" if head == "[[" else "]"
        if len(words) < 2 or RawCommand(lineno, words[-1:]).literal_head() != close:
            raise ScenarioError(lineno, f"{head} without {close}")


def parse_script(text: str, first_line: int = 1) -> list[Statement]:
    """A whole script as statements, `if` blocks nested. Every usage error
    that can be told without running comes out here: syntax, unknown
    commands, misplaced operators, unsupported conditions."""
    commands = Lexer(text, first_line).commands()
    pos = 0

    def keyword(cmd: RawCommand) -> str | None:
        return _word_keyword(cmd.words[0])

    def alone(cmd: RawCommand, kw: str) -> None:
        if len(cmd.words) > 1:
            raise ScenarioError(cmd.lineno, f"'{kw}' must be alone on its line "
                                            "(put the commands that follow it on the next lines)")

    def block(ends: tuple[str, ...], after_else: bool = False) -> tuple[list[Statement], RawCommand | None]:
        """Statements up to one of ENDS (returned, not consumed) or the end."""
        nonlocal pos
        body: list[Statement] = []
        while pos < len(commands):
            cmd = commands[pos]
            kw = keyword(cmd)
            if kw in ends:
                return body, cmd
            if kw == "if":
                body.append(parse_if())
                continue
            if kw == "for":
                body.append(parse_for())
                continue
            if kw is not None:
                if after_else and kw in ("elif", "else"):
                    raise ScenarioError(cmd.lineno, f"'{kw}' after 'else'")
                what = {"then": "'if … ; then'", "do": "'for'", "done": "'for'"}.get(kw, "'if'")
                raise ScenarioError(cmd.lineno, f"'{kw}' without a matching {what}")
            body.append(or_list(cmd))
            pos += 1
        return body, None

    def parse_for() -> ForCommand:
        nonlocal pos
        head = commands[pos]
        words = head.words
        name = RawCommand(head.lineno, words[1:2]).literal_head() if len(words) > 1 else None
        if name is None or not _NAME.fullmatch(name):
            raise ScenarioError(head.lineno, "'for' needs a variable name: for NAME in WORDS; do")
        if len(words) < 3 or RawCommand(head.lineno, words[2:3]).literal_head() != "in":
            raise ScenarioError(head.lineno, "only 'for NAME in WORDS; do' loops are supported")
        if any(isinstance(w, str) for w in words[3:]):
            raise ScenarioError(head.lineno, "the words of a 'for' loop cannot hold operators (>, |, ||, &)")
        pos += 1
        if pos == len(commands) or keyword(commands[pos]) != "do":
            raise ScenarioError(head.lineno, "'for' without 'do'")
        alone(commands[pos], "do")
        pos += 1
        body, end = block(("done",))
        if end is None:
            raise ScenarioError(head.lineno, "'for' without 'done'")
        if not body:
            raise ScenarioError(end.lineno, "'done' after an empty loop body")
        alone(end, "done")
        pos += 1
        return ForCommand(head.lineno, name, words[3:], body)

    def parse_if() -> IfCommand:
        nonlocal pos
        start = head = commands[pos]
        node = IfCommand(start.lineno, [])
        while True:                         # HEAD: the `if` or an `elif`
            kw = keyword(head)
            if len(head.words) == 1:
                raise ScenarioError(head.lineno, f"'{kw}' needs a condition")
            cond = RawCommand(head.lineno, head.words[1:])
            check_condition(cond)
            pos += 1
            if pos == len(commands) or keyword(commands[pos]) != "then":
                raise ScenarioError(head.lineno, f"'{kw}' without 'then' "
                                                 "(the condition must be one command)")
            alone(commands[pos], "then")
            pos += 1
            body, end = block(("elif", "else", "fi"))
            if end is None:
                raise ScenarioError(start.lineno, "'if' without 'fi'")
            if not body:
                raise ScenarioError(end.lineno, f"'{keyword(end)}' after an empty 'then' branch")
            node.branches.append((cond, body))
            if keyword(end) != "elif":
                break
            head = end
        if keyword(end) == "else":
            alone(end, "else")
            pos += 1
            orelse, end = block(("fi",), after_else=True)
            if end is None:
                raise ScenarioError(start.lineno, "'if' without 'fi'")
            if not orelse:
                raise ScenarioError(end.lineno, "'fi' after an empty 'else' branch")
            node.orelse = orelse
        alone(end, "fi")
        pos += 1
        return node

    statements, _ = block(())
    return statements


# ---------------------------------------------------------------------- grep
_POSIX_CLASSES = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
                  "lower": "a-z", "space": r"\s", "blank": r" \t", "xdigit": "0-9A-Fa-f",
                  "punct": r"!-/:-@\[-`{-~", "print": r" -~", "graph": r"!-~", "cntrl": r"\x00-\x1f\x7f"}


def _bracket(p: str, i: int) -> tuple[str, int]:
    """A POSIX bracket expression starting at p[i] == '[' as a Python class."""
    j, out = i + 1, ["["]
    if j < len(p) and p[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < len(p) and (first or p[j] != "]"):
        if p.startswith("[:", j):
            end = p.find(":]", j + 2)
            name = p[j + 2:end] if end > 0 else ""
            if name not in _POSIX_CLASSES:
                raise ValueError(f"unknown character class [:{name}:]")
            out.append(_POSIX_CLASSES[name])
            j = end + 2
        else:
            out.append("\\" + p[j] if p[j] in "\\[]^" else p[j])
            j += 1
        first = False
    if j >= len(p):
        raise ValueError("unmatched [")
    return "".join(out) + "]", j + 1


def bre_to_python(p: str) -> str:
    """A POSIX basic regular expression (GNU flavour, grep's default) in Python's syntax."""
    out: list[str] = []
    i = 0
    at_start = True          # where `*` is literal and `^` anchors
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            n = p[i + 1]
            i += 2
            if n in "(|":
                out.append(n)
                at_start = True
                continue
            if n in "){}+?":
                out.append(n)
            elif n in "<>":
                out.append(r"\b")
            elif n.isdigit() or n in "wWsSbB":
                out.append("\\" + n)
            else:
                out.append(re.escape(n))
            at_start = False
            continue
        if c == "[":
            cls, i = _bracket(p, i)
            out.append(cls)
        elif c == "^":
            out.append("^" if at_start else r"\^")
            i += 1
            continue                       # `^*` keeps * literal
        elif c == "$":
            end = i + 1 == len(p) or p.startswith("\\)", i + 1) or p.startswith("\\|", i + 1)
            out.append("$" if end else r"\$")
            i += 1
        elif c == "*":
            out.append(r"\*" if at_start else "*")
            i += 1
        elif c == ".":
            out.append(".")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
        at_start = False
    return "".join(out)


@dataclass
class Grep:
    patterns: list[re.Pattern[str]]
    invert: bool = False
    quiet: bool = False
    files: tuple[str, ...] = ()
    whole: bool = False

    @classmethod
    def parse(cls, args: list[str], lineno: int, need_file: bool = True) -> "Grep":
        flags, mode, whole, invert, quiet = 0, "G", False, False, False
        raw: list[str] = []
        rest = list(args)
        while rest and rest[0].startswith("-") and len(rest[0]) > 1:
            opt = rest.pop(0)
            if opt == "--":
                break
            if opt == "-e":
                if not rest:
                    raise ScenarioError(lineno, "grep: -e needs a pattern")
                raw.append(rest.pop(0))
                continue
            for letter in opt[1:]:
                if letter == "q":
                    quiet = True
                elif letter == "v":
                    invert = True
                elif letter == "i":
                    flags |= re.IGNORECASE
                elif letter == "x":
                    whole = True
                elif letter in "EFG":
                    mode = letter
                else:
                    raise ScenarioError(lineno, f"grep: option -{letter} is not supported "
                                                "(supported: -q -v -i -x -E -F -G -e)")
        if not raw:
            if not rest:
                raise ScenarioError(lineno, "grep needs a pattern")
            raw.append(rest.pop(0))
        if need_file and not rest:
            raise ScenarioError(lineno, "grep needs a file (scenarios have no stdin)")
        compiled = []
        for pattern in raw:
            try:
                py = (re.escape(pattern) if mode == "F" else pattern if mode == "E"
                      else bre_to_python(pattern))
                compiled.append(re.compile(py, flags))
            except (re.error, ValueError) as exc:
                raise ScenarioError(lineno, f"grep: bad pattern {pattern!r}: {exc}") from None
        return cls(compiled, invert, quiet, tuple(rest), whole)

    def lines(self, text: str) -> list[str]:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        def hit(ln: str) -> bool:
            return any((p.fullmatch(ln) if self.whole else p.search(ln)) for p in self.patterns)
        return [ln for ln in lines if hit(ln) != self.invert]


# ---------------------------------------------------------------------- modules
def modinfo(path: Path) -> dict[str, list[str]] | None:
    """The .modinfo tags of an ELF .ko, or None if it has none (or is no ELF64)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or len(data) < 64:
        return None
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

        def section(k: int) -> tuple[int, int, int]:
            name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + k * shentsize)
            return name, off, size
        _, stroff, _ = section(shstrndx)
        for k in range(shnum):
            name, off, size = section(k)
            end = data.index(b"\0", stroff + name)
            if data[stroff + name:end] == b".modinfo":
                tags: dict[str, list[str]] = {}
                for entry in data[off:off + size].split(b"\0"):
                    key, sep, value = entry.decode("utf-8", "replace").partition("=")
                    if sep:
                        tags.setdefault(key, []).append(value)
                return tags
    except (struct.error, ValueError):
        return None
    return None


def insmod_error(display: str, err: int) -> str:
    """kmod insmod's message for a failed init_module."""
    return f"insmod: ERROR: could not insert module {display}: {KMOD_ERRORS.get(err, os.strerror(err))}"


def modprobe_error(name: str, err: int) -> str:
    """kmod modprobe's message for a failed init_module."""
    return f"modprobe: ERROR: could not insert '{name}': {MODPROBE_ERRORS.get(err, os.strerror(err))}"


def rmmod_error(name: str, err: int) -> str:
    if err == _errno.ENOENT:
        return f"rmmod: ERROR: Module {name} is not currently loaded"
    return f"rmmod: ERROR: could not remove module {name}: {os.strerror(err)}"


def rights_string(mode: int, is_dir: bool) -> str:
    """`stat -c %A`: drwxr-xr-x, -rw-r--r-- …"""
    bits = "".join(ch if mode & (1 << (8 - k)) else "-" for k, ch in enumerate("rwxrwxrwx"))
    return ("d" if is_dir else "-") + bits


# ---------------------------------------------------------------------- running
class _Stop(Exception):
    """End of the script: die, skip or exit."""


Verb = Callable[["ScenarioRunner", list[str], int], None]
VERBS: dict[str, Verb] = {}
REDIRECTABLE = {"echo", "cat", "grep", "dmesg"}


def verb(name: str) -> Callable[[Verb], Verb]:
    def register(fn: Verb) -> Verb:
        VERBS[name] = fn
        return fn
    return register


def program_name(path: str) -> str | None:
    """The guest program PATH names (`./test_klp-call_getpid`), if any."""
    name = path.rsplit("/", 1)[-1]
    return name if name in PROGRAMS else None


def check_background(head: str | None, background: bool, lineno: int) -> None:
    """Programs run with `&`, and only programs do."""
    if background and (head is None or program_name(head) is None):
        raise ScenarioError(lineno, f"only the guest's programs ({', '.join(PROGRAMS)}) can run "
                                    f"in the background with '&'{f', not {head!r}' if head else ''}")
    if not background and head is not None and program_name(head) is not None:
        raise ScenarioError(lineno, f"{head} runs until a signal ends it: start it in the background "
                                    f"({head} &) and end it with kill")


def or_list(cmd: RawCommand) -> Statement:
    """CMD checked, as an OrList when it holds `||`."""
    if OR not in cmd.words:
        check_simple_command(cmd)
        return cmd
    parts: list[list[list[Part] | str]] = [[]]
    for w in cmd.words:
        if w == OR:
            parts.append([])
        else:
            parts[-1].append(w)
    if not all(parts):
        raise ScenarioError(cmd.lineno, "'||' needs a command on each side")
    commands = [RawCommand(cmd.lineno, p) for p in parts]
    for c in commands:
        check_simple_command(c)
    return OrList(cmd.lineno, commands)


def check_simple_command(cmd: RawCommand) -> None:
    """What can be told before running: unknown verbs, misplaced operators."""
    lineno, words = cmd.lineno, cmd.words
    if PIPE in words:
        raise ScenarioError(lineno, "pipes are only supported inside $(…)")
    background = BACKGROUND in words
    if background:
        if words.index(BACKGROUND) != len(words) - 1 or len(words) == 1:
            raise ScenarioError(lineno, "'&' must end a command (one command per line)")
        if REDIRECT in words:
            raise ScenarioError(lineno, "a program started with '&' cannot be redirected")
        words = words[:-1]
    if REDIRECT in words:
        k = words.index(REDIRECT)
        if k == 0:
            raise ScenarioError(lineno, "a redirection needs a command")
        if len(words) != k + 2 or isinstance(words[k + 1], str):
            raise ScenarioError(lineno, "a redirection must be the end of the command: CMD > PATH")
    head = RawCommand(lineno, words).literal_head()
    if head is not None and (head == "export" or _ASSIGN.match(head) or _ARRAY_ASSIGN.match(head)):
        check_background(None, background, lineno)       # an assignment is no program
        return
    if head is None:                                      # told when it runs
        return
    check_background(head, background, lineno)
    if background:
        return
    if head not in VERBS:
        raise ScenarioError(lineno, f"unknown command {head!r}")
    if REDIRECT in words and head not in REDIRECTABLE:
        raise ScenarioError(lineno, f"{head} cannot be redirected (only {', '.join(sorted(REDIRECTABLE))})")


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

    def run_line(self, line: str, lineno: int) -> None:
        self.run_text(line, lineno)

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


def _array_assignment(word: list[Part]) -> tuple[str, list[Part], list[Part]] | None:
    """`NAME[INDEX]=VALUE` as NAME and the parts of INDEX and VALUE."""
    quoted, kind, text = word[0]
    m = _ARRAY_ASSIGN.match(text) if not quoted and kind == "lit" else None
    if m is None:
        return None
    parts: list[Part] = [(False, "lit", text[m.end():]), *word[1:]]
    for k, (q, kd, value) in enumerate(parts):
        if not q and kd == "lit" and "]=" in value:
            j = value.index("]=")
            index = [*parts[:k], (False, "lit", value[:j])]
            rest = [(False, "lit", value[j + 2:]), *parts[k + 1:]]
            keep = lambda p: p[0] or p[1] != "lit" or p[2]   # noqa: E731  (drop empty unquoted text)
            return m.group(1), [p for p in index if keep(p)], [p for p in rest if keep(p)]
    return None


def cpulist_count(text: str) -> int:
    """The number of CPUs in a cpulist such as `0-3,6`."""
    count = 0
    for item in text.strip().split(","):
        first, _, last = item.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def sequence(args: list[str], lineno: int) -> range:
    """seq [FIRST [INCREMENT]] LAST, integers."""
    try:
        numbers = [int(a) for a in args]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 3 or (len(numbers) == 3 and numbers[1] == 0):
        raise ScenarioError(lineno, "usage: seq [FIRST [INCREMENT]] LAST (integers, INCREMENT not 0)")
    first, step, last = ([1, 1] + numbers if len(numbers) == 1 else
                         [numbers[0], 1, numbers[1]] if len(numbers) == 2 else numbers)
    return range(first, last + (1 if step > 0 else -1), step)


def _tr_set(spec: str) -> str:
    """A tr SET: characters, \\n \\t \\\\ escapes and ranges such as a-z."""
    out: list[str] = []
    i = 0
    while i < len(spec):
        c = spec[i]
        if c == "\\" and i + 1 < len(spec):
            c = {"n": "\n", "t": "\t"}.get(spec[i + 1], spec[i + 1])
            i += 1
        i += 1
        if spec[i:i + 1] == "-" and i + 1 < len(spec):
            out.extend(chr(x) for x in range(ord(c), ord(spec[i + 1]) + 1))
            i += 2
        else:
            out.append(c)
    return "".join(out)


def translate(args: list[str], text: str, lineno: int) -> str:
    """`… | tr SET1 SET2`: each character of SET1 becomes the one at its place
    in SET2 (SET2's last one when SET2 is shorter, as GNU tr does)."""
    if len(args) != 2 or any(a.startswith("-") and len(a) > 1 for a in args):
        raise ScenarioError(lineno, "usage: tr SET1 SET2 (no options)")
    source, target = _tr_set(args[0]), _tr_set(args[1])
    if not target:
        raise ScenarioError(lineno, "tr: when not truncating set1, string2 must be non-empty")
    target = target.ljust(len(source), target[-1])
    return text.translate({ord(a): b for a, b in zip(source, target)})


def echo_text(args: list[str]) -> str:
    """echo's output: -n (no newline), -e/-E (backslash escapes or not)."""
    args = list(args)
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        opts = args.pop(0)
        newline = newline and "n" not in opts
        escapes = ("e" in opts) or (escapes and "E" not in opts)
    text = " ".join(args)
    if escapes:
        text = (text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t")
                .replace("\0", "\\"))
    return text + ("\n" if newline else "")


def _need(args: list[str], lineno: int, usage: str, at_least: int, at_most: int | None = None) -> None:
    if len(args) < at_least or (at_most is not None and len(args) > at_most):
        raise ScenarioError(lineno, f"usage: {usage}")


# ---------------------------------------------------------------------- shell verbs
@verb("cat")
def _cat(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    if not args:
        raise ScenarioError(lineno, "cat needs a path")
    for path in args:
        try:
            r.produce(r.machine.read_file(path))
        except ShellError as exc:
            r.fail(f"cat: {path}: {os.strerror(exc.errno)}")


@verb("echo")
def _echo(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    text = echo_text(args)
    if r.redirect is None or r.redirect == "/dev/null":
        r.produce(text)
        return
    try:
        r.machine.write_file(r.redirect, text)
    except ShellError as exc:
        r.fail(f"echo: write error: {r.redirect}: {os.strerror(exc.errno)}")


@verb("grep")
def _grep(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    g = Grep.parse(args, lineno)
    prefix = len(g.files) > 1
    for path in g.files:
        try:
            text = r.machine.read_file(path)
        except ShellError as exc:
            r.fail(f"grep: {path}: {os.strerror(exc.errno)}")
            continue
        lines = g.lines(text)
        if not g.quiet and lines:
            r.produce("".join(f"{path}:{ln}\n" if prefix else f"{ln}\n" for ln in lines), per_line=True)


@verb("sleep")
def _sleep(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    try:
        seconds = float(args[0])
    except (IndexError, ValueError):
        raise ScenarioError(lineno, "sleep needs a number of seconds") from None
    if seconds < 0:
        raise ScenarioError(lineno, "sleep needs a non-negative number of seconds")
    r.machine.run(seconds)


@verb("dmesg")
def _dmesg(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """`dmesg` prints the log; `dmesg -C` forgets it for check_result (as the
    5.x selftests did before start_test had a canary)."""
    if args == ["-C"] or args == ["-c"]:
        if args == ["-c"]:
            r.produce(r.machine.dmesg())
        r.mark = len(r.machine.dmesg_lines())
        r.canary = None
    elif not args:
        r.produce(r.machine.dmesg(), per_line=True)
    else:
        raise ScenarioError(lineno, "dmesg takes no option but -C or -c")


@verb("insmod")
def _insmod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "insmod MODULE.ko [PARAM=VALUE …]", 1)
    target = args[0]
    path = Path(target)
    if not path.is_file():
        path = r.find_module(Path(target).name)
    try:
        r.machine.insmod(str(path), " ".join(args[1:]))
    except ShellError as exc:
        r.fail(insmod_error(target, exc.errno))


@verb("rmmod")
def _rmmod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "rmmod MODULE", 1, 1)
    try:
        r.machine.rmmod(args[0])
    except ShellError as exc:
        r.fail(rmmod_error(args[0], exc.errno))


@verb("true")
def _true(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    pass


@verb("false")
def _false(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.fail("false", show=False)


def _signal(spec: str, lineno: int) -> int:
    name = spec.upper().removeprefix("SIG")
    if spec.isdigit() and 0 < int(spec) < 64:
        return int(spec)
    if name in SIGNALS:
        return SIGNALS[name]
    raise ScenarioError(lineno, f"kill: {spec}: invalid signal specification "
                                f"(use 1-63 or {', '.join(SIGNALS)})")


@verb("kill")
def _kill(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """kill [-s SIGNAL | -SIGNAL] PID…: kill(2) from the shell, SIGTERM by default."""
    usage = "kill [-s SIGNAL | -SIGNAL] PID…"
    sig = SIGNALS["TERM"]
    if args[:1] == ["-s"]:
        _need(args, lineno, usage, 3)
        sig, args = _signal(args[1], lineno), args[2:]
    elif args and args[0].startswith("-") and args[0] != "--" and not args[0][1:].startswith("-"):
        sig, args = _signal(args[0][1:], lineno), args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    _need(args, lineno, usage, 1)
    shells = {shell.pid for shell in r.machine.shells}
    for arg in args:
        if not arg.isdigit():
            r.fail(f"kill: {arg}: arguments must be process or job IDs")
        elif int(arg) in shells:
            r.fail(f"kill: ({arg}) - the scenario's own shell cannot be killed")
        else:
            err = r.machine.shell.syscall(SYS_KILL, int(arg), sig)
            if err < 0:
                r.fail(f"kill: ({arg}) - {os.strerror(-err)}")


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


@verb("exit")
def _exit(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "exit [N]", 0, 1)
    try:
        status = int(args[0]) if args else 0
    except ValueError:
        raise ScenarioError(lineno, f"exit needs a number, not {args[0]!r}") from None
    r.result.exit_status = status
    if status:
        r.fail(f"exit {status}", show=False)
    raise _Stop


# ---------------------------------------------------------------------- functions.sh
@verb("log")
def _log(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    try:
        r.log(args[0] if args else "")
    except ShellError as exc:
        r.fail(f"log: /dev/kmsg: {os.strerror(exc.errno)}")


@verb("die")
def _die(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.die(args[0] if args else "")


@verb("skip")
def _skip(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    r.skip(args[0] if args else "")


@verb("start_test")
def _start_test(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    name = args[0] if args else ""
    m = r.machine
    ns = max(m.clock_ns, r._last_canary_ns + 1)
    r._last_canary_ns = ns
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
    canary = f"livepatch kselftest timestamp: {stamp:%Y-%m-%d %H:%M:%S}.{frac:09d}+00:00"
    r.log(canary)
    if not r.wait(lambda: canary in m.dmesg_lines()[r.mark:]):
        r.die(f"buffer busy? can't find canary dmesg message: {canary}")
    r.canary = canary
    r.emit(f"TEST: {name} ... ")
    r.log(f"===== TEST: {name} =====")


_TIMESTAMP = re.compile(r"^\[[ 0-9.]*\] ")
_CALLER = re.compile(r"^\[ *[CT][0-9]*\] ")
_TAINT = re.compile(r"(tainting|taints) kernel")


def selftest_log(r: ScenarioRunner) -> tuple[list[str], str]:
    """check_result's view of dmesg: the lines after the canary that mention
    `livepatch:` or `test_klp`, without taint notes and timestamps. Also the
    canary's dmesg line (LAST_DMESG)."""
    records = r.machine.dmesg_log.records()[r.mark:]
    start, last = 0, ""
    if r.canary is not None:
        start = len(records)          # canary gone: nothing (the "buffer overrun" case)
        for k in range(len(records) - 1, -1, -1):
            if records[k].text == r.canary:
                start, last = k + 1, records[k].format()
                break
    lines = []
    for rec in records[start:]:
        line = rec.format()
        if ("livepatch:" not in line and "test_klp" not in line) or _TAINT.search(line):
            continue
        lines.append(_CALLER.sub("", _TIMESTAMP.sub("", line, count=1), count=1))
    return lines, last


@verb("check_result")
def _check_result(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    expect = " ".join(args)
    lines, last = selftest_log(r)
    result = "\n".join(lines).rstrip("\n")
    if expect == result:
        r.emit("ok\n")
        return
    if result == "":
        r.emit(f"not ok\n\nbuffer overrun? can't find canary dmesg entry: {last}\n\n")
        r.die("livepatch kselftest(s) failed")
    diff = "\n".join(difflib.unified_diff(expect.split("\n"), result.split("\n"),
                                          "expected", "result", lineterm=""))
    r.emit(f"not ok\n\n{diff}\n\n")
    if r._step is not None:
        r._step.message = diff
    r.die("livepatch kselftest(s) failed")


@verb("loop_until")
def _loop_until(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    text = " ".join(args)
    if not text.strip():
        raise ScenarioError(lineno, "loop_until needs a condition")
    cond = r.parse_condition(text, lineno)
    if not r.wait(lambda: r.condition(cond)):
        r.fail(f"loop_until: still false after {r.variables.get('MAX_RETRIES')} retries: {text}")


def _load(r: ScenarioRunner, name: str, args: list[str]) -> None:
    """functions.sh's __load_mod."""
    r.find_module(name)
    r.log(r.load_message(name, args))
    error = r.insmod(name, args)
    if error is not None:
        r.die(error)
    if not r.wait(lambda: r.machine.exists(f"/sys/module/{name}")):
        r.die(f"failed to load module {name}")


@verb("load_mod")
def _load_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_mod MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    if r.is_livepatch(name):
        r.die(f"use load_lp() to load the livepatch module {name}")
    _load(r, name, args[1:])


def _load_lp_nowait(r: ScenarioRunner, name: str, args: list[str]) -> None:
    if r.is_livepatch(name) is False:
        r.die(f"module {name} is not a livepatch")
    _load(r, name, args)
    if not r.wait(lambda: r.machine.exists(f"{SYSFS_KLP_DIR}/{name}")):
        r.die(f"failed to load module {name} (sysfs)")


@verb("load_lp_nowait")
def _load_lp_nowait_verb(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_lp_nowait MODULE [PARAM=VALUE …]", 1)
    _load_lp_nowait(r, args[0], args[1:])


def _reads(r: ScenarioRunner, path: str, value: str) -> bool:
    """`[[ $(cat PATH) == VALUE ]]`"""
    try:
        return r.machine.read_file(path).rstrip("\n") == value
    except ShellError:
        return False


@verb("load_lp")
def _load_lp(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_lp MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    _load_lp_nowait(r, name, args[1:])
    if not r.profile.consistency_model:
        return                        # 4.11: patched at once, no `transition`
    path = f"{SYSFS_KLP_DIR}/{name}/transition"
    if not r.wait(lambda: _reads(r, path, "0")):
        r.die("failed to complete transition")


@verb("load_failing_mod")
def _load_failing_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "load_failing_mod MODULE [PARAM=VALUE …]", 1)
    name = args[0]
    r.find_module(name)
    r.log(r.load_message(name, args[1:]))
    error = r.insmod(name, args[1:])
    if error is None:
        r.die(f"{name} unexpectedly loaded")
    r.log(error)


@verb("unload_mod")
@verb("unload_lp")
def _unload_mod(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "unload_mod MODULE", 1, 1)
    name = args[0]
    if not r.wait(lambda: _reads(r, f"/sys/module/{name}/refcnt", "0")):
        r.die(f"failed to unload module {name} (refcnt)")
    r.log(f"% rmmod {name}")
    try:
        r.machine.rmmod(name)
    except ShellError as exc:
        r.die(rmmod_error(name, exc.errno))
    if not r.wait(lambda: not r.machine.exists(f"/sys/module/{name}")):
        r.die(f"failed to unload module {name} (/sys/module)")


@verb("disable_lp")
def _disable_lp(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "disable_lp MODULE", 1, 1)
    name = args[0]
    path = f"{SYSFS_KLP_DIR}/{name}/enabled"
    r.log(f"% echo 0 > {path}")
    try:
        r.machine.write_file(path, "0")
    except ShellError as exc:
        r.fail(f"echo: write error: {path}: {os.strerror(exc.errno)}")
    if r.profile.register_api:
        # before 5.1 a disabled patch stays registered: wait for the transition
        done = (lambda: _reads(r, f"{SYSFS_KLP_DIR}/{name}/transition", "0")) \
            if r.profile.consistency_model else (lambda: _reads(r, path, "0"))
        if not r.wait(done):
            r.die(f"failed to disable livepatch {name}")
    elif not r.wait(lambda: not r.machine.exists(f"{SYSFS_KLP_DIR}/{name}")):
        r.die(f"failed to disable livepatch {name}")


@verb("set_pre_patch_ret")
def _set_pre_patch_ret(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "set_pre_patch_ret MODULE VALUE", 2, 2)
    name, value = args
    path = f"/sys/module/{name}/parameters/pre_patch_ret"
    r.log(f"% echo {value} > {path}")
    try:
        r.machine.write_file(path, value)
    except ShellError as exc:
        r.fail(f"echo: write error: {path}: {os.strerror(exc.errno)}")
    if not r.wait(lambda: _reads(r, path, value)):
        r.die(f"failed to set pre_patch_ret parameter for {name} module")


@verb("check_sysfs_rights")
def _check_sysfs_rights(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "check_sysfs_rights MODULE REL_PATH RIGHTS", 3, 3)
    name, rel, expected = args
    path = f"{SYSFS_KLP_DIR}/{name}/{rel}"
    target = path.rstrip("/")
    try:
        rights = rights_string(r.machine.file_mode(target), r.machine.is_dir(target))
    except EmuError:
        rights = ""
    if rights != expected:
        r.die(f"Unexpected access rights of {path}: {expected} vs. {rights}")


@verb("check_sysfs_value")
def _check_sysfs_value(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    _need(args, lineno, "check_sysfs_value MODULE REL_PATH VALUE", 3, 3)
    name, rel, expected = args
    path = f"{SYSFS_KLP_DIR}/{name}/{rel}"
    try:
        value = r.machine.read_file(path).rstrip("\n")
    except ShellError as exc:
        r.emit(f"cat: {path}: {os.strerror(exc.errno)}\n")
        value = ""
    if value != expected:
        r.die(f"Unexpected value in {path}: {expected} vs. {value}")


@verb("set_ftrace_enabled")
def _set_ftrace_enabled(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    can_fail = bool(args) and args[0] == "--fail"
    if can_fail:
        args = args[1:]
    _need(args, lineno, "set_ftrace_enabled [--fail] VALUE", 1, 1)
    value = args[0]
    err = ""
    try:
        r.machine.write_file(FTRACE_SYSCTL, value)
    except ShellError as exc:
        if exc.errno == _errno.ENOENT:
            err = f"sysctl: cannot stat {FTRACE_SYSCTL}: {os.strerror(exc.errno)}"
        else:
            err = f'sysctl: setting key "{FTRACE_SYSCTL}": {os.strerror(exc.errno)}'
    try:
        result = r.machine.read_file(FTRACE_SYSCTL).rstrip("\n")
    except ShellError:
        result = ""
    if result != value:
        if can_fail:
            r.log(f"livepatch: {err}".replace("/proc/sys/kernel/", "kernel."))
            return
        r.skip(f"failed to set kernel.ftrace_enabled = {value}")
    r.log(f"livepatch: kernel.ftrace_enabled = {result}")


@verb("setup_config")
def _setup_config(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh's setup_config: here only `set_ftrace_enabled 1` (the
    emulator has no dynamic debug to turn on: its livepatch messages are always on)."""
    _need(args, lineno, "setup_config", 0, 0)
    _set_ftrace_enabled(r, ["1"], lineno)


@verb("cleanup_tracing")
def _cleanup_tracing(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: stop the function tracer and empty its filter and buffer."""
    _need(args, lineno, "cleanup_tracing", 0, 0)
    for name, value in (("tracing_on", "0"), ("set_ftrace_filter", ""), ("current_tracer", "nop"),
                        ("trace", "")):
        _write_tracing(r, name, value)


@verb("trace_function")
def _trace_function(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: trace one function with the function tracer."""
    _need(args, lineno, "trace_function FUNCTION", 1, 1)
    _cleanup_tracing(r, [], lineno)
    for name, value in (("current_tracer", "function"), ("set_ftrace_filter", args[0]), ("tracing_on", "1")):
        _write_tracing(r, name, value)


@verb("check_traced_functions")
def _check_traced_functions(r: ScenarioRunner, args: list[str], lineno: int) -> None:
    """functions.sh: each function must appear (as a word) in the trace; then clean up."""
    trace = r.machine.read_file(f"{SYSFS_TRACING_DIR}/trace")
    for function in args:
        if not re.search(rf"(?<![\w]){re.escape(function)}(?![\w])", trace):
            r.die(f"Function ({function}) did not appear in the trace")
    _cleanup_tracing(r, [], lineno)


def _write_tracing(r: ScenarioRunner, name: str, value: str) -> None:
    """`echo VALUE > $SYSFS_TRACING_DIR/NAME`: a refused write is a failed step."""
    path = f"{SYSFS_TRACING_DIR}/{name}"
    try:
        r.machine.write_file(path, value)
    except ShellError as exc:
        r.fail(f"echo: write error: {path}: {os.strerror(exc.errno)}")
