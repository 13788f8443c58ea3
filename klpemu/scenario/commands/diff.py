"""diff (GNU diffutils) of two files, in the unified format: -u/-U N,
--label (twice), -p and -r accepted (one pair of files, no C functions to
show); exit status 0 the same, 1 different, 2 trouble.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from klpemu.scenario.fs import FsError
from klpemu.selftest.coreutils import unified_diff

if TYPE_CHECKING:
    from klpemu.scenario.process import Proc


def diff(proc: "Proc") -> int:
    args = list(proc.args)
    labels: list[str] = []
    files: list[str] = []
    unified = False
    context = 3
    while args:
        a = args.pop(0)
        if a == "--label" and args:
            labels.append(args.pop(0))
        elif a.startswith("--label="):
            labels.append(a.split("=", 1)[1])
        elif a == "-U" and args:
            unified, context = True, int(args.pop(0))
        elif a == "--":
            files.extend(args)
            break
        elif a.startswith("-") and len(a) > 1 and not a.startswith("--"):
            for letter in a[1:]:
                if letter == "u":
                    unified = True
                elif letter not in "pr":
                    raise proc.sh.unsupported(f"diff -{letter} is not supported (only -u, -U N, -p, -r, --label)")
        elif a.startswith("--"):
            raise proc.sh.unsupported(f"diff {a} is not supported")
        else:
            files.append(a)
    if len(files) != 2:
        proc.err(f"diff: missing operand after '{files[-1] if files else 'diff'}'\n"
                 "diff: Try 'diff --help' for more information.\n")
        return 2
    if not unified:
        raise proc.sh.unsupported("diff without -u (the normal format) is not supported")
    texts = []
    for name in files:
        try:
            texts.append(proc.stdin() if name == "-" else proc.sh.ns.read(name))
        except FsError as exc:
            proc.err(f"diff: {name}: {exc.reason}\n")
            return 2
    a_lines, b_lines = (t.split("\n")[:-1] if t.endswith("\n") else t.split("\n") if t else [] for t in texts)
    names = labels + files[len(labels):]
    out = unified_diff(a_lines, b_lines, names[0], names[1], context)
    if not out:
        return 0
    proc.out(out)
    return 1


COMMANDS: dict[str, Callable[["Proc"], int]] = {"diff": diff}
