"""grep (GNU): basic, extended or fixed patterns over files or standard
input, with the options scripts use: -e -E -F -G -i -v -w -x -q -s -c -n
-h -H -l -o -m. Exit status 0 a line matched, 1 none, 2 an error.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from klpemu.scenario.fs import FsError
from klpemu.scenario.patterns import PatternError, compile_regex

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc

_FLAGS = "EFGivwxqscnhHlo"
USAGE = "Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n"
_LONG = {"--quiet": "q", "--silent": "q", "--invert-match": "v", "--ignore-case": "i", "--count": "c",
         "--word-regexp": "w", "--line-regexp": "x", "--fixed-strings": "F", "--extended-regexp": "E",
         "--basic-regexp": "G", "--no-messages": "s", "--line-number": "n", "--no-filename": "h",
         "--with-filename": "H", "--files-with-matches": "l", "--only-matching": "o"}


def grep(proc: "Proc") -> int:
    args = list(proc.args)
    flags: set[str] = set()
    mode = "G"
    raw: list[str] = []
    files: list[str] = []
    max_count: int | None = None
    while args:
        a = args.pop(0)
        if a == "--":
            files.extend(args)
            break
        if a in _LONG:
            letter = _LONG[a]
            if letter in "EFG":
                mode = letter
            else:
                flags.add(letter)
            continue
        if a.startswith("--regexp="):
            raw.append(a.split("=", 1)[1])
            continue
        if a.startswith("--"):
            proc.err(f"grep: unrecognized option '{a}'\n{USAGE}")
            return 2
        if a.startswith("-") and len(a) > 1:
            k = 1
            while k < len(a):
                letter = a[k]
                if letter in "em":
                    value = a[k + 1:] or (args.pop(0) if args else None)
                    if value is None:
                        proc.err(f"grep: option requires an argument -- '{letter}'\n{USAGE}")
                        return 2
                    if letter == "e":
                        raw.append(value)
                    else:
                        try:
                            max_count = int(value)
                        except ValueError:
                            proc.err("grep: invalid max count\n")
                            return 2
                    break
                if letter not in _FLAGS:
                    proc.err(f"grep: invalid option -- '{letter}'\n{USAGE}")
                    return 2
                if letter in "EFG":
                    mode = letter
                else:
                    flags.add(letter)
                k += 1
            continue
        files.append(a)
    if not raw:
        if not files:
            proc.err(USAGE)
            return 2
        raw.append(files.pop(0))
    only, invert = "o" in flags, "v" in flags
    if mode == "F" and not only and not flags & {"i", "w", "x"}:
        regexes = []                  # fixed strings, found as such (a canary is a new pattern each run)
        tests: list[Callable[[str], bool]] = [lambda line, p=p: p in line for p in raw]
    else:
        try:
            regexes = [_compile(p, mode, "i" in flags, "w" in flags, "x" in flags) for p in raw]
        except PatternError as exc:
            proc.err(f"grep: {exc}\n")
            return 2
        tests = [lambda line, search=rx.search: search(line) is not None for rx in regexes]
    one = tests[0] if len(tests) == 1 else None
    sources = files or ["-"]
    prefix = ("H" in flags or len(sources) > 1) and "h" not in flags
    out: list[str] = []
    matched = False
    error = False
    for name in sources:
        try:
            text = proc.stdin() if name == "-" else proc.sh.ns.read(name)
        except FsError as exc:
            if "s" not in flags:
                proc.err(f"grep: {name}: {exc.reason}\n")
            error = True
            continue
        shown = "(standard input)" if name == "-" else name
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        count = 0
        for n, line in enumerate(lines, 1):
            if max_count is not None and count >= max_count:
                break
            if only:
                hits = [m for rx in regexes for m in rx.finditer(line)]
                hit = bool(hits)
            elif one is not None:
                hit = one(line)
            else:
                hit = any(test(line) for test in tests)
            if hit == invert:
                continue
            count += 1
            matched = True
            if "q" in flags:
                return 0
            if "c" in flags or "l" in flags:
                continue
            lead = (f"{shown}:" if prefix else "") + (f"{n}:" if "n" in flags else "")
            if only and not invert:
                out.extend(f"{lead}{m.group()}\n" for m in sorted(hits, key=lambda m: m.start()) if m.group())
            else:
                out.append(f"{lead}{line}\n")
        if "c" in flags:
            out.append(f"{shown}:{count}\n" if prefix else f"{count}\n")
        elif "l" in flags and count:
            out.append(f"{shown}\n")
    if out:
        proc.out("".join(out))
    if error and not (matched and "q" in flags):
        return 2
    return 0 if matched else 1


@lru_cache(maxsize=512)
def _compile(pattern: str, mode: str, ignore_case: bool, word: bool, line: bool) -> re.Pattern[str]:
    if mode == "F":
        body = re.escape(pattern)
    else:
        body = compile_regex(pattern, mode == "E").pattern
    if word:
        body = rf"(?<![\w])(?:{body})(?![\w])"
    if line:
        body = rf"^(?:{body})$"
    try:
        return re.compile(body, re.I if ignore_case else 0)
    except re.error as exc:
        raise PatternError(str(exc)) from None
