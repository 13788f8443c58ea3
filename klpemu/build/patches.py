"""Source patches: what they touch, applying them to a copy of the guest
kernel's sources, and keeping __LINE__ where the patch did not change code.

A patch is a unified diff with one leading path component (`patch -p1`),
as `git diff` writes it: either from the klpemu checkout
(`a/fixtures/kernel/proc.c`) or from the guest kernel's root, fixtures/
(`a/kernel/proc.c`), as a kernel patch is from the kernel's. As klp-build
does, a patch is first tried with --dry-run, and its output is shown when
it does not apply; fuzz or offsets are reported. Assembly files are
refused: they have no fentry sites and no section per function.

After applying, every change group in a .c or .h file is followed by a
`#line N` directive giving back the original numbering (the role of
klp-build's fix-patch-lines): otherwise a hunk that adds lines moves every
WARN_ON() and BUG() below it, and their __LINE__ would make unchanged
functions look changed.
"""
from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from klpemu.build.compile import BuildError

__all__ = ["Patch", "read_patch", "apply_patches", "keep_line_numbers", "changed_lines"]

KERNEL_ROOT = "fixtures/"         # the guest kernel's root in the checkout
PATCHABLE = ("kernel/", "include/")
_FILE_LINE = re.compile(r"^(---|\+\+\+) (\S+)")
_DRIFT = re.compile(r"with fuzz|offset -?[0-9]+ line")


@dataclass(frozen=True)
class Patch:
    """A patch file: its path and the files it changes, relative to fixtures/."""

    path: Path
    files: tuple[str, ...]
    from_checkout: bool           # paths start with fixtures/ (a diff of the checkout)


def _strip(path: str) -> str | None:
    if path == "/dev/null":
        return None
    return path.split("/", 1)[1] if "/" in path else path


def read_patch(path: Path) -> Patch:
    """The files `path` changes; BuildError if it is no patch, or changes
    something that cannot be livepatched (with the file and why)."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise BuildError(f"{path}: cannot read the patch: {exc.strerror}") from None
    names = []
    for line in text.splitlines():
        m = _FILE_LINE.match(line)
        if m:
            name = _strip(m[2])
            if name is not None and name not in names:
                names.append(name)
    if not names:
        raise BuildError(f"{path}: not a patch: no '--- a/FILE' and '+++ b/FILE' lines")
    from_checkout = any(n.startswith(KERNEL_ROOT) for n in names)
    outside = [n for n in names if from_checkout and not n.startswith(KERNEL_ROOT)]
    if outside:
        raise BuildError(f"{path}: unsupported patch to {outside[0]}: not part of the guest kernel "
                         f"({KERNEL_ROOT}kernel/, {KERNEL_ROOT}include/)")
    files = tuple(n[len(KERNEL_ROOT):] if from_checkout else n for n in names)
    for name in files:
        if name.endswith((".S", ".s")):
            raise BuildError(f"{path}: unsupported patch to {name}: assembly has no fentry sites and "
                             "no section per function, so livepatch cannot replace its code "
                             "(klp-build refuses *.S too)")
        if not name.startswith(PATCHABLE) or ".." in name.split("/"):
            raise BuildError(f"{path}: unsupported patch to {name}: only the guest kernel's sources "
                             f"({KERNEL_ROOT}kernel/, {KERNEL_ROOT}include/) are built into vmlinux "
                             "and can be livepatched")
    return Patch(path, files, from_checkout)


def apply_patches(patches: list[Patch], tree: Path) -> list[str]:
    """Apply `patches` in order to `tree` (a copy of fixtures/ named
    fixtures, with kernel/ and include/); warnings about fuzz. BuildError with patch's output when one
    does not apply."""
    if shutil.which("patch") is None:
        raise BuildError("patch (GNU patch) is not installed")
    warnings = []
    for p in patches:
        # the tree is <dir>/fixtures: a patch of the checkout applies from <dir>
        cwd = tree.parent if p.from_checkout else tree
        base = ["patch", "-p1", "--no-backup-if-mismatch", "-r", "/dev/null", "-i", str(p.path.resolve())]
        dry = subprocess.run(base + ["--dry-run"], cwd=cwd, capture_output=True, text=True)
        if dry.returncode:
            raise BuildError(f"{(dry.stdout + dry.stderr).rstrip()}\n{p.path} did not apply")
        if _DRIFT.search(dry.stdout):
            warnings.append(f"{p.path} applied with fuzz:\n{dry.stdout.rstrip()}")
        real = subprocess.run(base + ["--silent"], cwd=cwd, capture_output=True, text=True)
        if real.returncode:
            raise BuildError(f"{(real.stdout + real.stderr).rstrip()}\n{p.path} did not apply")
    return warnings


def changed_lines(old: list[str], new: list[str]) -> tuple[set[int], set[int]]:
    """The 1-based lines a change touches: in the old text (removed or
    replaced) and in the new (added or replaced; for a pure removal, the
    line after it)."""
    old_lines, new_lines = set(), set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        old_lines.update(range(i1 + 1, i2 + 1))
        new_lines.update(range(j1 + 1, j2 + 1) if j2 > j1 else [j1 + 1])
    return old_lines, new_lines


def keep_line_numbers(old: str, new: str) -> str:
    """`new` with a `#line N` after every change group, N being the line the
    following unchanged text has in `old`. A directive cannot sit inside a
    macro continued with backslashes; it then comes after the macro."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines,
                                                       autojunk=False).get_opcodes():
        if tag != "equal":
            out.extend(new_lines[j1:j2])
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            continue
        if j1 == 0:
            out.extend(new_lines[j1:j2])
            continue
        k = 0                                   # unchanged lines emitted before the directive
        prev = out[-1] if out else "\n"
        while prev.rstrip("\n").endswith("\\") and k < j2 - j1:
            prev = new_lines[j1 + k]
            out.append(prev)
            k += 1
        if k < j2 - j1:
            out.append(f"#line {i1 + k + 1}\n")
        out.extend(new_lines[j1 + k:j2])
    return "".join(out)
