"""grep for scenarios: POSIX basic regular expressions (GNU flavour, grep's
default) in Python's syntax, and Grep: grep's options and patterns, matched
against a text's lines (by the grep verb, conditions and `$(… | grep …)`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from klpemu.scenario.result import ScenarioError

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
