"""Where the function definitions of a C file are, by line: enough of C to
say which functions a patch edits (for the build report), not a parser.

A definition is a `{` at file scope that follows `NAME(…)` with nothing but
attributes in between; comments, strings, character literals and
preprocessor lines are skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CFunction", "c_functions", "functions_at"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\(.*\)\)$", re.S)


@dataclass(frozen=True)
class CFunction:
    name: str
    first_line: int           # 1-based, the line of the name
    last_line: int            # the line of the closing brace


def _blank(text: str) -> str:
    """The text with comments, literals and preprocessor lines replaced by
    spaces (newlines kept, so that offsets and line numbers stay)."""
    out = list(text)
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                j += 1
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
            continue
        if c == "\n":
            at_line_start = True
            i += 1
            continue
        if not c.isspace():
            at_line_start = False
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def _definition(code: str, start: int, brace: int) -> tuple[str, int] | None:
    """(name, offset of the name) when the file-scope text code[start:brace]
    before a `{` is a function's head: `… NAME(…)`, then attributes."""
    head = code[start:brace].rstrip()
    while head.endswith("))") and _ATTRIBUTE.search(head):
        head = head[:_ATTRIBUTE.search(head).start()].rstrip()
    if not head.endswith(")") or "=" in head:
        return None
    depth = 0
    for i in range(len(head) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(head[i], 0)
        if depth == 0:
            m = _IDENT.search(head[:i].rstrip())
            return (m.group(0), start + m.start()) if m else None
    return None


def c_functions(text: str) -> list[CFunction]:
    """The function definitions of C source `text`, in order."""
    code = _blank(text)
    found: list[CFunction] = []
    depth, start, pending = 0, 0, None
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                pending = _definition(code, start, i)
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                if pending is not None:
                    name, at = pending
                    found.append(CFunction(name, code.count("\n", 0, at) + 1, code.count("\n", 0, i) + 1))
                pending, start = None, i + 1
        elif c == ";" and depth == 0:
            start = i + 1
    return found


def functions_at(text: str, lines: set[int]) -> list[str]:
    """The functions of `text` that contain one of the 1-based `lines`."""
    return [f.name for f in c_functions(text)
            if any(f.first_line <= n <= f.last_line for n in lines)]
