"""Word expansion, in bash's order: tilde, parameter (${…} with its
operators), command substitution, arithmetic, process substitution; then
field splitting on IFS of what came unquoted from an expansion; then
pathname expansion of unquoted glob characters; then quote removal.

A word is first turned into segments (text, quoted, splittable), with
BREAK between the fields "$@" and "${NAME[@]}" make; splitting and
globbing work on those.
"""
from __future__ import annotations

import posixpath
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Union

from klpemu.scenario import patterns
from klpemu.scenario.arith import ArithError, evaluate
from klpemu.scenario.memo import ByNode
from klpemu.scenario.nodes import DQ, Arith, CmdSub, Lit, Param, Part, ProcSub, Quoted, Tilde, Word

if TYPE_CHECKING:
    from klpemu.scenario.process import ShellView

BREAK = None                    # a field boundary ("$@")
Segment = Union[tuple[str, bool, bool], None]
DEFAULT_IFS = " \t\n"


class ExpansionError(Exception):
    """bash's expansion errors (bad substitution, unbound variable …): the
    message is bash's; a non-interactive shell exits with `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- entry points
class ArithExpansionError(ExpansionError):
    """A malformed arithmetic expression: fatal in $(( )), not in (( )), let and [[ ]]."""


def expand_words(sh: "ShellView", words: tuple[Word, ...]) -> list[str]:
    """The fields of WORDS: expanded, split and globbed (a command's arguments)."""
    out: list[str] = []
    plans = _plan.entries
    for word in words:
        entry = plans.get(id(word))                   # (_plan(word), inline: the commonest call there is)
        plan = entry[1] if entry is not None and entry[0] is word else _plan(word)
        if plan.braced:
            for braced in brace_expand(word):
                out.extend(_expand_word(sh, braced))
        else:
            out.extend(plan.fields(sh))
    return out


_SEQUENCE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?")


def brace_expand(word: Word) -> list[Word]:
    """bash's brace expansion, first of all: x{a,b}y, {1..3}, {a..e..2};
    braces inside quotes or expansions do not count."""
    items: list[str | Part] = []
    for p in word:
        if type(p) is Lit:
            items.extend(p.text)                              # type: ignore[union-attr]
        else:
            items.append(p)
    out: list[Word] = []
    for expanded in _braces(items):
        parts: list[Part] = []
        for it in expanded:
            if isinstance(it, str):
                if parts and type(parts[-1]) is Lit:
                    parts[-1] = Lit(parts[-1].text + it)      # type: ignore[union-attr]
                else:
                    parts.append(Lit(it))
            else:
                parts.append(it)
        out.append(tuple(parts))
    return out


def _braces(items: list) -> list[list]:
    for i, it in enumerate(items):
        if it != "{":
            continue
        depth, commas, j = 0, [], i + 1
        while j < len(items):
            c = items[j]
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                commas.append(j)
            j += 1
        if j >= len(items):
            return [items]
        inner = items[i + 1:j]
        if commas:
            bounds = [i, *commas, j]
            alternatives = [items[a + 1:b] for a, b in zip(bounds, bounds[1:])]
        elif all(isinstance(c, str) for c in inner) and (seq := _sequence("".join(inner))) is not None:
            alternatives = [list(v) for v in seq]
        else:
            continue
        prefix, suffix = items[:i], items[j + 1:]
        return [prefix + tail for alt in alternatives for tail in _braces(alt + suffix)]
    return [items]


def _sequence(text: str) -> list[str] | None:
    m = _SEQUENCE.fullmatch(text)
    if m is None:
        return None
    if m.group(1) is not None:
        a, b = int(m.group(1)), int(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        width = max(len(m.group(1)), len(m.group(2))) if re.match(r"-?0\d", m.group(1) + " ") or \
            re.match(r"-?0\d", m.group(2) + " ") else 0
        values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        return [f"{v:0{width}d}" if width else str(v) for v in values]
    a, b = ord(m.group(4)), ord(m.group(5))
    step = abs(int(m.group(6) or 1)) or 1
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [chr(v) for v in values]




def words_expander(words: tuple[Word, ...]) -> Callable[["ShellView"], list[str]]:
    """expand_words(sh, WORDS) as a function of the shell alone, for a
    command's words, expanded each time it runs: words of nothing but
    literals are its list, one word its plan's fields."""
    plans = [_plan(word) for word in words]
    if any(plan.braced for plan in plans):
        return lambda sh: expand_words(sh, words)
    if all(plan.constant is not None for plan in plans):
        constant = [text for plan in plans for text in plan.constant]   # type: ignore[union-attr]
        return lambda sh: list(constant)
    if len(plans) == 1:
        return plans[0].fields
    steps = [(plan.constant, plan.fields) for plan in plans]

    def expand(sh: "ShellView") -> list[str]:
        out: list[str] = []
        for constant, fields in steps:
            out.extend(constant if constant is not None else fields(sh))
        return out
    return expand


def expand_word(sh: "ShellView", word: Word) -> list[str]:
    """The fields of WORD (no brace expansion: a redirection's target)."""
    return _plan(word).fields(sh)


def _expand_word(sh: "ShellView", word: Word) -> list[str]:
    segs: list[Segment] = []
    for part in word:
        _part(sh, part, segs, quoted=False)
    return _fields(sh, segs)


def _fields(sh: "ShellView", segs: list[Segment]) -> list[str]:
    """SEGS split on IFS and globbed."""
    out: list[str] = []
    for field in _split(segs, _ifs(sh)):
        if patterns.has_magic(field):
            out.extend(_glob(sh, field))
        else:
            out.append("".join(t for t, _ in field))
    return out


def expand_single(sh: "ShellView", word: Word) -> str:
    """WORD as one string: no splitting, no globbing ($@ joined by spaces),
    as assignments, [[ operands, case words and here-strings are."""
    entry = _plan.entries.get(id(word))
    return (entry[1] if entry is not None and entry[0] is word else _plan(word)).single(sh)


def expand_pattern(sh: "ShellView", word: Word) -> str:
    """WORD as a glob, in Python's regex syntax (quoted parts literal)."""
    segs: list[Segment] = []
    for part in word:
        _part(sh, part, segs, quoted=False)
    return patterns.glob_regex((t, q) for s in segs if s is not None for t, q, _ in (s,))


_PATTERN_CHAR = re.compile(r"[*?[\\]")     # what glob_regex reads in unquoted text


def match_pattern(sh: "ShellView", word: Word, subject: str) -> bool:
    """SUBJECT matches the glob WORD (case, [[ == ]]); a pattern with no
    unquoted * ? [ or \\ is its text, and matches only itself."""
    segs: list[Segment] = []
    for part in word:
        _part(sh, part, segs, quoted=False)
    if all(s is None or s[1] or _PATTERN_CHAR.search(s[0]) is None for s in segs):
        return subject == "".join(s[0] for s in segs if s is not None)
    regex = patterns.glob_regex((t, q) for s in segs if s is not None for t, q, _ in (s,))
    return patterns.compile_glob(regex).fullmatch(subject) is not None


def expand_regex(sh: "ShellView", word: Word) -> str:
    """The right side of [[ =~ ]]: an ERE whose quoted parts are literal."""
    segs: list[Segment] = []
    for part in word:
        _part(sh, part, segs, quoted=False)
    out = []
    for s in segs:
        if s is not None:
            out.append(re.escape(s[0]) if s[1] else patterns.ere_to_python(s[0]))
    return "".join(out)


def expand_template(sh: "ShellView", word: Word) -> str:
    """A here-document's body or an arithmetic text: everything as if quoted."""
    if len(word) == 1 and type(word[0]) in (Lit, Quoted):
        return word[0].text          # type: ignore[union-attr]
    segs: list[Segment] = []
    for part in word:
        _part(sh, part, segs, quoted=True)
    return _join(segs)


def arithmetic(sh: "ShellView", word: Word) -> int:
    """WORD (the text of $(( )), (( )) …) expanded, then evaluated."""
    return evaluate_text(sh, expand_template(sh, word))


def evaluate_text(sh: "ShellView", text: str) -> int:
    """TEXT's value; ArithExpansionError in bash's words when malformed."""
    try:
        return evaluate(text, sh.arith_vars)
    except ArithError as exc:
        raise ArithExpansionError(f"{exc.expression or text.lstrip()}: {exc}") from None


# ---------------------------------------------------------------- plans
# A word of the tree is planned once per process (memo.ByNode): what its
# expansion can skip is decided from its parts, not found out again each
# time it runs. A plan's `fields` gives expand_word's fields, `single`
# expand_single's string. Most words need no splitting and no globbing:
# a literal, a quoted text, "…" of literals and plain parameters ("$1",
# "$mod.ko"); their fields are their parts' texts joined. A lone unquoted
# $NAME is split (and globbed) only when its value has an IFS or glob
# character. Everything else takes the general way (segments, _split, _glob).
SPECIAL = frozenset("@*#?$!-_")       # the special parameters (Shell.SPECIAL)
Getter = Callable[["ShellView"], str]


class _Plan:
    __slots__ = ("braced", "fields", "single", "constant")

    def __init__(self, word: Word) -> None:
        self.braced = any(type(p) is Lit and "{" in p.text for p in word)    # type: ignore[union-attr]
        self.fields: Callable[["ShellView"], list[str]] = _plan_fields(word)
        self.single: Getter = _plan_single(word)
        # the fields of a word of literals alone (no glob or brace character)
        self.constant: tuple[str, ...] | None = None
        if all(type(p) is Lit and patterns.GLOB_CHAR.search(p.text) is None for p in word) and not self.braced:  # type: ignore[union-attr]
            text = "".join(p.text for p in word)                    # type: ignore[union-attr]
            self.constant = (text,) if text else ()


_plan: ByNode[Word, _Plan] = ByNode(_Plan)


def _plain_param(part: Part) -> bool:
    """$NAME / ${NAME}: no operator, no subscript, not $@ or $*."""
    return type(part) is Param and part.op == "" and part.index is None and part.name not in ("@", "*")  # type: ignore[union-attr]


def _one_string(part: Part) -> bool:
    """PART, quoted, expands to segments of one field (no $@ or ${A[@]}
    anywhere in it to make field breaks)."""
    kind = type(part)
    if kind is DQ:
        return all(_one_string(p) for p in part.parts)              # type: ignore[union-attr]
    if kind is Param:
        return part.name not in ("@", "*") and part.index is None and part.op not in ("!", "!@") and \
            all(_one_string(p) for p in part.arg or ())             # type: ignore[union-attr]
    return True


def _param_getter(name: str) -> Callable[["ShellView"], str | None]:
    """The value of $NAME (None when unset), as _value has it."""
    if name in SPECIAL:
        return lambda sh: sh.special(name)
    if name.isdigit():
        k = int(name)
        if k == 0:
            return lambda sh: sh.script_name
        return lambda sh: sh.positional[k - 1] if k <= len(sh.positional) else None
    return lambda sh: sh.variable(name)


def _plain_getter(name: str) -> Getter:
    """$NAME as text: "" when unset (an error under set -u)."""
    value_of = _param_getter(name)

    def get(sh: "ShellView") -> str:
        value = value_of(sh)
        if value is None:
            if "u" in sh.options:
                raise ExpansionError(f"{name}: unbound variable")
            return ""
        return value
    return get


def _part_getter(part: Part, quoted: bool) -> Getter:
    """PART's segments, joined (quoted: inside "…")."""
    kind = type(part)
    if kind is Lit or kind is Quoted:
        text = part.text                                            # type: ignore[union-attr]
        return lambda sh: text
    if _plain_param(part):
        return _plain_getter(part.name)                             # type: ignore[union-attr]
    if kind is CmdSub:                                              # (its output is one segment)
        body = part.body                                            # type: ignore[union-attr]
        return lambda sh: sh.command_substitution(body)

    def get(sh: "ShellView") -> str:
        segs: list[Segment] = []
        _part(sh, part, segs, quoted)
        return _join(segs)
    return get


def _joined(getters: list[Getter]) -> Getter:
    if len(getters) == 1:
        return getters[0]
    return lambda sh: "".join([get(sh) for get in getters])


def _plan_single(word: Word) -> Getter:
    if all(type(p) in (Lit, Quoted) for p in word):
        text = "".join(p.text for p in word)                        # type: ignore[union-attr]
        return lambda sh: text
    getters: list[Getter] = []
    for part in word:
        if type(part) is DQ and _one_string(part):
            getters.extend(_part_getter(inner, True) for inner in part.parts)   # type: ignore[union-attr]
        else:
            getters.append(_part_getter(part, False))
    return _joined(getters)


def _plan_fields(word: Word) -> Callable[["ShellView"], list[str]]:
    if len(word) == 1 and _plain_param(word[0]):
        return _plain_fields(word[0].name)                          # type: ignore[union-attr]
    getters: list[Getter] = []
    for part in word:
        kind = type(part)
        if kind is Lit and patterns.GLOB_CHAR.search(part.text) is None:      # type: ignore[union-attr]
            getters.append(_part_getter(part, False))
        elif kind is Quoted or kind is Tilde:
            getters.append(_part_getter(part, False))
        elif kind is DQ and _one_string(part):
            getters.extend(_part_getter(inner, True) for inner in part.parts)   # type: ignore[union-attr]
        else:
            return lambda sh: _expand_word(sh, word)
    if all(type(p) is Lit for p in word):
        text = "".join(p.text for p in word)                        # type: ignore[union-attr]
        return (lambda sh: [text]) if text else (lambda sh: [])
    get = _joined(getters)
    return lambda sh: [get(sh)]


def _plain_fields(name: str) -> Callable[["ShellView"], list[str]]:
    """An unquoted $NAME: its value, split and globbed when it has to be."""
    value_of = _param_getter(name)

    def fields(sh: "ShellView") -> list[str]:
        value = value_of(sh)
        if value is None:
            if "u" in sh.options:
                raise ExpansionError(f"{name}: unbound variable")
            return []
        if not value:
            return []
        ifs = sh.vars.get("IFS")
        if ifs is None:
            ifs = DEFAULT_IFS
        if (ifs and any(c in value for c in ifs)) or patterns.GLOB_CHAR.search(value) is not None:
            return _fields(sh, [(value, False, True)])
        return [value]
    return fields


# ---------------------------------------------------------------- parts
def _ifs(sh: "ShellView") -> str:
    value = sh.vars.get("IFS")
    return DEFAULT_IFS if value is None else value


def _join(segs: list[Segment]) -> str:
    return "".join(" " if s is None else s[0] for s in segs)


def _emit(segs: list[Segment], value: str | list[str], quoted: bool, split_ok: bool = True) -> None:
    if isinstance(value, list):
        for k, item in enumerate(value):
            if k:
                segs.append(BREAK)
            segs.append((item, quoted, not quoted and split_ok))
        return
    segs.append((value, quoted, not quoted and split_ok))


def _part(sh: "ShellView", part: Part, segs: list[Segment], quoted: bool) -> None:
    kind = type(part)
    if kind is Lit:
        segs.append((part.text, quoted, False))                   # type: ignore[union-attr]
    elif kind is Quoted:
        segs.append((part.text, True, False))                     # type: ignore[union-attr]
    elif kind is DQ:
        before = len(segs)
        only_at = True
        for inner in part.parts:                                  # type: ignore[union-attr]
            only_at = only_at and type(inner) is Param and _is_at(sh, inner)   # type: ignore[arg-type]
            _part(sh, inner, segs, quoted=True)
        if len(segs) == before and not (only_at and part.parts):  # type: ignore[union-attr]
            segs.append(("", True, False))
    elif kind is Param:
        _param(sh, part, segs, quoted)                            # type: ignore[arg-type]
    elif kind is CmdSub:
        _emit(segs, sh.command_substitution(part.body), quoted)   # type: ignore[union-attr]
    elif kind is Arith:
        _emit(segs, str(arithmetic(sh, part.expr)), quoted)       # type: ignore[union-attr]
    elif kind is ProcSub:
        segs.append((sh.process_substitution(part.body), True, False))  # type: ignore[union-attr]
    elif kind is Tilde:
        user = part.user                                          # type: ignore[union-attr]
        home = (sh.vars.get("HOME") or "/root") if not user else "/root" if user == "root" else None
        segs.append((home if home is not None else "~" + user, True, False))


def _is_at(sh: "ShellView", p: Param) -> bool:
    """$@ or ${NAME[@]} (which make one field per element, even quoted)."""
    return p.op in ("", "##", "#", "%", "%%", "/", "//", "/#", "/%", "^", "^^", ",", ",,", ":") and \
        _which(p) == "@"


# ---------------------------------------------------------------- parameters
def _subscript(sh: "ShellView", p: Param) -> str | int | None:
    """'@', '*', an integer index, or None (no subscript)."""
    if p.index is None:
        return None
    text = expand_template(sh, p.index).strip()
    if text in ("@", "*"):
        return text
    return evaluate_text(sh, text)


def _value(sh: "ShellView", p: Param, quoted: bool) -> str | list[str] | None:
    """The parameter's value before its operator: a string, a list (of the
    fields $@ / ${A[@]} make), or None when unset."""
    name = p.name
    if name in sh.SPECIAL:
        if name in "@*":
            return list(sh.positional)
        return sh.special(name)
    if name.isdigit():
        k = int(name)
        if k == 0:
            return sh.script_name
        return sh.positional[k - 1] if k <= len(sh.positional) else None
    sub = _subscript(sh, p)
    if sub is None:
        return sh.variable(name)
    elements = sh.vars.array(name)
    if sub in ("@", "*"):
        values = [elements[k] for k in sorted(elements)]
        if not values and sh.vars.lookup(name) is None:
            return None
        return values
    assert isinstance(sub, int)
    if sub < 0:
        sub += (max(elements) + 1) if elements else 0
    return elements.get(sub)


def _all(sh: "ShellView", values: list[str], which: str, quoted: bool) -> str | list[str]:
    """"$@" (one field each), "$*" (joined by IFS's first character) and,
    unquoted, both: joined by IFS's first character, then split again."""
    if quoted and which == "@":
        return values
    ifs = _ifs(sh)
    if not quoted and not ifs:
        return [v for v in values if v]
    return (ifs[:1] if ifs or quoted else " ").join(values)


def _which(p: Param) -> str:
    """'@' or '*' for $@ $* ${A[@]} ${A[*]}, else ''."""
    if p.name in "@*" and p.index is None:
        return p.name
    if p.index is not None and len(p.index) == 1 and type(p.index[0]) is Quoted and p.index[0].text in "@*":
        return p.index[0].text
    return ""


def _emit_value(sh: "ShellView", p: Param, segs: list[Segment], value: str | list[str], quoted: bool) -> None:
    if isinstance(value, list):
        value = _all(sh, value, _which(p) or "@", quoted)
    _emit(segs, value, quoted)


def _param(sh: "ShellView", p: Param, segs: list[Segment], quoted: bool) -> None:
    op = p.op
    if op == "length":
        value = _value(sh, p, quoted)
        if isinstance(value, list):
            _emit(segs, str(len(value)), quoted)
            return
        if value is None:
            _check_set(sh, p)
        _emit(segs, str(len(value or "")), quoted)
        return
    if op == "!":
        target = _value(sh, p, quoted)
        if not isinstance(target, str) or not target:
            raise ExpansionError(f"{p.name}: invalid indirect expansion")
        inner = _indirect(target)
        if inner is None:
            raise ExpansionError(f"{target}: invalid variable name")
        _param(sh, inner, segs, quoted)
        return
    if op == "!@":
        keys = sorted(sh.vars.array(p.name))
        _emit(segs, [str(k) for k in keys], quoted)
        return
    value = _value(sh, p, quoted)
    if op in ("-", ":-", "=", ":=", "+", ":+", "?", ":?"):
        unset = value is None or (op.startswith(":") and (value == "" or value == []))
        base = op[-1]
        if base == "+":
            if not unset:
                _word_parts(sh, p.arg, segs, quoted)
            return
        if not unset:
            _emit_value(sh, p, segs, value, quoted)            # type: ignore[arg-type]
            return
        if base == "-":
            _word_parts(sh, p.arg, segs, quoted)
            return
        if base == "=":
            if p.name in sh.SPECIAL or p.name.isdigit():
                raise ExpansionError(f"${p.name}: cannot assign in this way")
            new = expand_single(sh, p.arg or ())
            sub = _subscript(sh, p)
            sh.assign(p.name, new, sub if isinstance(sub, int) else None)
            _emit(segs, new, quoted)
            return
        message = expand_single(sh, p.arg or ()) if p.arg else "parameter null or not set"
        raise ExpansionError(f"{p.name}: {message}")
    if value is None:
        _check_set(sh, p)
        return
    if op == "":
        _emit_value(sh, p, segs, value, quoted)
        return
    if op == ":":
        _emit_value(sh, p, segs, _substring(sh, p, value), quoted)
        return
    if isinstance(value, list):
        _emit_value(sh, p, segs, [_operate(sh, p, v) for v in value], quoted)
    else:
        _emit(segs, _operate(sh, p, value), quoted)


def _indirect(target: str) -> Param | None:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])(?:\[(.*)\])?", target)
    if m is None:
        return None
    index = (Quoted(m.group(2)),) if m.group(2) is not None else None
    return Param(m.group(1), index, text=f"${{{target}}}")


def _check_set(sh: "ShellView", p: Param) -> None:
    if "u" in sh.options and p.name not in ("@", "*"):
        raise ExpansionError(f"{p.name}: unbound variable")


def _word_parts(sh: "ShellView", word: Word | None, segs: list[Segment], quoted: bool) -> None:
    if not word:
        if quoted:
            segs.append(("", True, False))
        return
    for part in word:
        _part(sh, part, segs, quoted)


def _operate(sh: "ShellView", p: Param, value: str) -> str:
    op = p.op
    if op in ("^", "^^", ",", ",,"):
        if p.arg:
            raise sh.unsupported(f"{p.text}: case modification of a pattern is not supported")
        if op == "^^":
            return value.upper()
        if op == ",,":
            return value.lower()
        return (value[:1].upper() if op == "^" else value[:1].lower()) + value[1:]
    regex = expand_pattern(sh, p.arg or ())
    rx = patterns.compile_glob(regex)
    if op in ("#", "##"):
        lengths = range(len(value) + 1) if op == "#" else range(len(value), -1, -1)
        for n in lengths:
            if rx.fullmatch(value, 0, n):
                return value[n:]
        return value
    if op in ("%", "%%"):
        starts = range(len(value), -1, -1) if op == "%" else range(len(value) + 1)
        for n in starts:
            if rx.fullmatch(value, n):
                return value[:n]
        return value
    replacement = expand_single(sh, p.arg2) if p.arg2 else ""
    if op == "/#":
        for n in range(len(value), -1, -1):
            if rx.fullmatch(value, 0, n) and (n or regex == ""):
                return replacement + value[n:]
        return value
    if op == "/%":
        for n in range(len(value) + 1):
            if rx.fullmatch(value, n) and (n < len(value) or regex == ""):
                return value[:n] + replacement
        return value
    if not regex:
        return value
    out: list[str] = []
    i = 0
    while i <= len(value):
        m = None
        for end in range(len(value), i, -1):       # the longest match at i
            if rx.fullmatch(value, i, end):
                m = end
                break
        if m is None:
            if i < len(value):
                out.append(value[i])
            i += 1
            continue
        out.append(replacement)
        i = m
        if op == "/":
            out.append(value[i:])
            return "".join(out)
    return "".join(out)


def _substring(sh: "ShellView", p: Param, value: str | list[str]) -> str | list[str]:
    def number(word: Word | None) -> int:
        text = expand_template(sh, word or ()).strip()
        return evaluate_text(sh, text) if text else 0
    offset = number(p.arg)
    length = number(p.arg2) if p.arg2 is not None else None
    seq = value
    if p.name in "@*" and p.index is None and isinstance(seq, list):
        seq = [sh.script_name, *seq]        # ${@:N}: N counts from $0
    if offset < 0:
        offset = max(len(seq) + offset, 0) if isinstance(seq, str) else len(seq) + offset
        if offset < 0:
            return "" if isinstance(seq, str) else []
    if length is None:
        return seq[offset:]
    if length < 0:
        end = len(seq) + length
        if end < offset:
            raise ExpansionError(f"{length}: substring expression < 0")
        return seq[offset:end]
    return seq[offset:offset + length]


# ---------------------------------------------------------------- splitting, globbing
@lru_cache(maxsize=64)
def _ifs_classes(ifs: str) -> tuple[str, str]:
    """IFS's blanks (runs of them are one delimiter) and its other characters."""
    return "".join(c for c in ifs if c in " \t\n"), "".join(c for c in ifs if c not in " \t\n")


def _split(segs: list[Segment], ifs: str) -> list[list[tuple[str, bool]]]:
    ws, hard = _ifs_classes(ifs)
    fields: list[list[tuple[str, bool]]] = []
    cur: list[tuple[str, bool]] = []
    exists = False
    soft = False                  # a blank delimiter just ended a field

    def emit() -> None:
        nonlocal cur, exists
        fields.append(cur)
        cur, exists = [], False

    for seg in segs:
        if seg is None:
            if exists:
                emit()
            cur, exists, soft = [], False, False
            continue
        text, quoted, splittable = seg
        if not splittable or not ifs or (text and not any(c in text for c in ifs)):
            if text or quoted:
                cur.append((text, quoted))
                exists = True
                soft = False
            continue
        chunk: list[str] = []
        for ch in text:
            if ch in ws:
                if chunk:
                    cur.append(("".join(chunk), False))
                    chunk = []
                    exists = True
                if exists:
                    emit()
                    soft = True
            elif ch in hard:
                if chunk:
                    cur.append(("".join(chunk), False))
                    chunk = []
                    exists = True
                if exists or not soft:
                    emit()
                soft = False
            else:
                chunk.append(ch)
                soft = False
        if chunk:
            cur.append(("".join(chunk), False))
            exists = True
    if exists:
        fields.append(cur)
    return fields


def _glob(sh: "ShellView", field: list[tuple[str, bool]]) -> list[str]:
    """Pathname expansion of one field; the field itself when nothing matches."""
    text = "".join(t for t, _ in field)
    mask = [q for t, q in field for _ in t]
    components: list[list[tuple[str, bool]]] = [[]]
    for ch, q in zip(text, mask):
        if ch == "/":
            components.append([])
        elif components[-1] and components[-1][-1][1] == q:
            components[-1][-1] = (components[-1][-1][0] + ch, q)
        else:
            components[-1].append((ch, q))
    absolute = text.startswith("/")
    if absolute:
        components = components[1:]
    found = ["/" if absolute else ""]
    ns = sh.ns
    for k, comp in enumerate(components):
        last = k == len(components) - 1
        name = "".join(t for t, _ in comp)
        nxt: list[str] = []
        for base in found:
            if not patterns.has_magic(comp):
                path = base + name if base in ("/", "") else f"{base}/{name}"
                nxt.append(path)
                continue
            where = base or "."
            if not ns.is_dir(where):
                continue
            try:
                entries = ns.listdir(where)
            except Exception:        # an unreadable directory matches nothing, as in bash
                continue
            rx = patterns.compile_glob(patterns.glob_regex(comp))
            for entry in entries:
                if entry.startswith(".") and not name.startswith("."):
                    continue
                if rx.fullmatch(entry):
                    nxt.append(base + entry if base in ("/", "") else f"{base}/{entry}")
        found = [p for p in nxt if last or ns.is_dir(p or ".")]
        if not found:
            break
    matches = sorted(p for p in found if p and ns.exists(p))
    if not matches:
        return [text]
    return [posixpath.normpath(m) if "//" in m else m for m in matches]
