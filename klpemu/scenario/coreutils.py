"""The text work of the small coreutils a scenario runs: echo's output, seq's
numbers, tr's translation and nproc's CPU count (of a cpulist). Functions
over strings, for the runner's `$(…)` and the echo verb.
"""
from __future__ import annotations

import re

from klpemu.scenario.result import ScenarioError


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
