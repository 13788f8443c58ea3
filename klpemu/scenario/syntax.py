"""Every syntax error of a script, before anything boots (`klpemu run`).

The shell itself stops at the first one, as bash does. To report the rest,
parsing resumes after an error at the next line that can only start a
top-level command: one that is not indented, not a comment and does not
open with a word that closes a compound command (`}`, `fi`, `done` …).
Errors met after a resumption are real errors of that part of the script;
an error inside a construct whose start was skipped is not reported twice
because resumption never lands inside an indented body.
"""
from __future__ import annotations

from klpemu.scenario.parser import parse
from klpemu.scenario.result import ScenarioError

_CLOSERS = frozenset({"}", "fi", "done", "esac", ")", ";;", "else", "elif", "then", "do", "in"})


def _starts_a_command(line: str) -> bool:
    if not line.strip() or line[0].isspace() or line.startswith("#"):
        return False
    return line.split(None, 1)[0] not in _CLOSERS


def syntax_errors(text: str, source: str) -> list[ScenarioError]:
    """The script's syntax errors in line order (empty when it parses)."""
    lines = text.splitlines(keepends=True)
    errors: list[ScenarioError] = []
    start = 0
    while True:
        try:
            parse("".join(lines[start:]), source, start + 1)
            return errors
        except ScenarioError as exc:
            errors.append(exc)
            resume = next((i for i in range(max(exc.lineno, start + 1), len(lines))
                           if _starts_a_command(lines[i])), None)
            if resume is None:
                return errors
            start = resume
