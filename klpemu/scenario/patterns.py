"""Patterns, in Python's `re` syntax: the shell's globs (case, [[ == ]],
${VAR%…}, pathname expansion), with quoted parts literal, and POSIX
regular expressions, basic (grep, sed) and extended (grep -E, sed -E, awk,
[[ =~ ]]), GNU flavour.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

_POSIX_CLASSES = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
                  "lower": "a-z", "space": r" \t\n\r\f\v", "blank": r" \t", "xdigit": "0-9A-Fa-f",
                  "punct": r"!-/:-@\[-`{-~", "print": r" -~", "graph": r"!-~", "cntrl": r"\x00-\x1f\x7f",
                  "word": r"\w"}


class PatternError(ValueError):
    """A malformed regular expression (the message says why)."""


def _bracket(p: str, i: int, negate_chars: str = "^") -> tuple[str, int] | None:
    """A bracket expression starting at p[i] == '[' as a Python class and the
    index after it; None when it does not close (then `[` is literal)."""
    j, out = i + 1, ["["]
    if j < len(p) and p[j] in negate_chars:
        out.append("^")
        j += 1
    first = True
    while j < len(p) and (first or p[j] != "]"):
        if p.startswith("[:", j):
            end = p.find(":]", j + 2)
            name = p[j + 2:end] if end > 0 else ""
            if name not in _POSIX_CLASSES:
                raise PatternError(f"invalid character class [:{name}:]")
            out.append(_POSIX_CLASSES[name])
            j = end + 2
        else:
            out.append("\\" + p[j] if p[j] in "\\[]^&~|" else p[j])
            j += 1
        first = False
    if j >= len(p):
        return None
    return "".join(out) + "]", j + 1


def glob_regex(segments: Iterable[tuple[str, bool]]) -> str:
    """A glob (text, quoted) segment by segment: * ? [..] in unquoted text."""
    out: list[str] = []
    for text, quoted in segments:
        if quoted:
            out.append(re.escape(text))
            continue
        i = 0
        while i < len(text):
            c = text[i]
            if c == "*":
                out.append(".*")
            elif c == "?":
                out.append(".")
            elif c == "[":
                cls = _bracket(text, i, "!^")
                if cls is not None:
                    out.append(cls[0])
                    i = cls[1]
                    continue
                out.append(r"\[")
            elif c == "\\" and i + 1 < len(text):
                out.append(re.escape(text[i + 1]))
                i += 1
            else:
                out.append(re.escape(c))
            i += 1
    return "".join(out)


GLOB_CHAR = re.compile(r"[*?[]")


def has_magic(segments: Iterable[tuple[str, bool]]) -> bool:
    search = GLOB_CHAR.search
    return any(not quoted and search(text) is not None for text, quoted in segments)


@lru_cache(maxsize=512)
def compile_glob(regex: str) -> re.Pattern[str]:
    return re.compile(regex, re.S)


def bre_to_python(p: str) -> str:
    """A POSIX basic regular expression (GNU flavour) in Python's syntax."""
    out: list[str] = []
    i = 0
    at_start = True          # where `*` is literal and `^` anchors
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            n = p[i + 1]
            i += 2
            if n in "(|":
                out.append(n if n == "|" else "(")
                at_start = True
                continue
            if n in "){}+?":
                out.append(n)
            elif n in "<>":
                out.append(r"\b")
            elif n.isdigit() or n in "wWsSbB":
                out.append("\\" + n)
            elif n == "n":
                out.append(r"\n")
            elif n == "t":
                out.append(r"\t")
            else:
                out.append(re.escape(n))
            at_start = False
            continue
        if c == "[":
            cls = _bracket(p, i)
            if cls is None:
                raise PatternError("unmatched [, [^, [:, [., or [=")
            out.append(cls[0])
            i = cls[1]
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


def ere_to_python(p: str) -> str:
    """A POSIX extended regular expression (GNU flavour) in Python's syntax."""
    out: list[str] = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            n = p[i + 1]
            i += 2
            if n in "<>":
                out.append(r"\b")
            elif n.isdigit() or n in "wWsSbB":
                out.append("\\" + n)
            elif n == "n":
                out.append(r"\n")
            elif n == "t":
                out.append(r"\t")
            else:
                out.append(re.escape(n))
            continue
        if c == "[":
            cls = _bracket(p, i)
            if cls is None:
                raise PatternError("unmatched [, [^, [:, [., or [=")
            out.append(cls[0])
            i = cls[1]
            continue
        if c == "{" and not re.match(r"\{\d*(,\d*)?\}", p[i:]):
            out.append(r"\{")
        elif c in "}" and not out:
            out.append(r"\}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def compile_regex(pattern: str, extended: bool, ignore_case: bool = False) -> re.Pattern[str]:
    """A POSIX regular expression compiled (PatternError when malformed)."""
    try:
        py = ere_to_python(pattern) if extended else bre_to_python(pattern)
        return re.compile(py, re.I if ignore_case else 0)
    except re.error as exc:
        raise PatternError(str(exc)) from None
