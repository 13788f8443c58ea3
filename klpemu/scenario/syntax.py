"""The scenario language's syntax: the Lexer, which splits a script into simple
commands whose words keep their quoting (expansion happens when a command
runs), the statements (RawCommand, IfCommand, ForCommand, OrList) and
parse_script, which builds them and reports every usage error that can be
told before running: syntax, unknown commands, misplaced operators,
unsupported conditions. Nothing here expands or runs: see runner.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from klpemu.scenario.registry import REDIRECTABLE, VERBS, check_background
from klpemu.scenario.result import ScenarioError

# A word is a list of parts: (quoted, kind, value), kind "lit" (text), "var" ($NAME),
# "cmd" ($(…)), "arith" ($((…))), "elem" (${NAME[INDEX]}) or "count" (${#NAME[@]}).
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
CONDITIONS = ("grep", "[[", "[", "test", "true", "false", "ftrace_disable_supported")


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
