"""What coreutils and diffutils print where the selftests read it: stat's
%A rights string, date --rfc-3339=ns of the virtual clock, the CPU count
of a cpulist (nproc, getconf _NPROCESSORS_ONLN), and diff -u's unified
diff (lines aligned and hunks formatted as GNU diff has them).
"""
from __future__ import annotations

import datetime


def rights_string(mode: int, is_dir: bool) -> str:
    """`stat --format %A`: drwxr-xr-x, -rw-r--r-- …"""
    bits = "".join(ch if mode & (1 << (8 - k)) else "-" for k, ch in enumerate("rwxrwxrwx"))
    return ("d" if is_dir else "-") + bits


def rfc3339_ns(clock_ns: int) -> str:
    """`date --rfc-3339=ns` at CLOCK_NS of virtual time (the guest's clock
    starts at the epoch, in UTC)."""
    secs, frac = divmod(clock_ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
    return f"{stamp:%Y-%m-%d %H:%M:%S}.{frac:09d}+00:00"


def cpulist_count(text: str) -> int:
    """The number of CPUs in a cpulist such as `0-3,6`."""
    count = 0
    for item in text.strip().split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _edit_script(a: list[str], b: list[str]) -> list[tuple[str, int, int]]:
    """The lines diff keeps, deletes and inserts, aligned as GNU diff aligns
    them: ('=', i, j), ('-', i, -1), ('+', -1, j) in file order."""
    del_a, ins_b = _changed_lines(a, b)
    ops: list[tuple[str, int, int]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and del_a[i]:
            ops.append(("-", i, -1))
            i += 1
        elif j < len(b) and ins_b[j]:
            ops.append(("+", -1, j))
            j += 1
        else:
            ops.append(("=", i, j))
            i, j = i + 1, j + 1
    return ops


def _changed_lines(a: list[str], b: list[str]) -> tuple[list[bool], list[bool]]:
    """Which lines of A are deleted and of B inserted. As GNU diff does it:
    a line with no equal in the other file is a change outright; the rest
    are compared by Myers' divide and conquer on the middle snake (a
    shortest edit script); then each run of changes slides, within equal
    lines, to merge with its neighbours and to face a change of the other
    file."""
    ids: dict[str, int] = {}
    ea = [ids.setdefault(x, len(ids)) for x in a]
    eb = [ids.setdefault(x, len(ids)) for x in b]
    in_a, in_b = set(ea), set(eb)
    # one sentinel at each end: index k + 1 is line k
    ca = [False] + [e not in in_b for e in ea] + [False]
    cb = [False] + [e not in in_a for e in eb] + [False]
    keep_a = [i for i, e in enumerate(ea) if e in in_b]
    keep_b = [j for j, e in enumerate(eb) if e in in_a]
    _compare(ca, cb, [ea[i] for i in keep_a], [eb[j] for j in keep_b], keep_a, keep_b)
    _slide(ca, cb, ea)
    _slide(cb, ca, eb)
    return ca[1:-1], cb[1:-1]


def _compare(ca: list[bool], cb: list[bool], xv: list[int], yv: list[int], keep_a: list[int],
             keep_b: list[int]) -> None:
    size = len(xv) + len(yv) + 3
    fwd = [0] * (2 * size + 1)
    bwd = [0] * (2 * size + 1)
    far = 1 << 62

    def middle(xlo: int, xhi: int, ylo: int, yhi: int) -> tuple[int, int]:
        """Where the forward and backward searches of a shortest edit script meet."""
        dmin, dmax = xlo - yhi, xhi - ylo
        fmid, bmid = xlo - ylo, xhi - yhi
        fmin = fmax = fmid
        bmin = bmax = bmid
        odd = (fmid - bmid) & 1
        fwd[size + fmid] = xlo
        bwd[size + bmid] = xhi
        while True:
            if fmin > dmin:
                fmin -= 1
                fwd[size + fmin - 1] = -1
            else:
                fmin += 1
            if fmax < dmax:
                fmax += 1
                fwd[size + fmax + 1] = -1
            else:
                fmax -= 1
            for d in range(fmax, fmin - 1, -2):
                lo, hi = fwd[size + d - 1], fwd[size + d + 1]
                x = lo + 1 if lo >= hi else hi
                y = x - d
                while x < xhi and y < yhi and xv[x] == yv[y]:
                    x, y = x + 1, y + 1
                fwd[size + d] = x
                if odd and bmin <= d <= bmax and bwd[size + d] <= x:
                    return x, y
            if bmin > dmin:
                bmin -= 1
                bwd[size + bmin - 1] = far
            else:
                bmin += 1
            if bmax < dmax:
                bmax += 1
                bwd[size + bmax + 1] = far
            else:
                bmax -= 1
            for d in range(bmax, bmin - 1, -2):
                lo, hi = bwd[size + d - 1], bwd[size + d + 1]
                x = lo if lo < hi else hi - 1
                y = x - d
                while x > xlo and y > ylo and xv[x - 1] == yv[y - 1]:
                    x, y = x - 1, y - 1
                bwd[size + d] = x
                if not odd and fmin <= d <= fmax and x <= fwd[size + d]:
                    return x, y

    def compare(xlo: int, xhi: int, ylo: int, yhi: int) -> None:
        while xlo < xhi and ylo < yhi and xv[xlo] == yv[ylo]:
            xlo, ylo = xlo + 1, ylo + 1
        while xlo < xhi and ylo < yhi and xv[xhi - 1] == yv[yhi - 1]:
            xhi, yhi = xhi - 1, yhi - 1
        if xlo == xhi:
            for j in range(ylo, yhi):
                cb[keep_b[j] + 1] = True
        elif ylo == yhi:
            for i in range(xlo, xhi):
                ca[keep_a[i] + 1] = True
        else:
            xmid, ymid = middle(xlo, xhi, ylo, yhi)
            compare(xlo, xmid, ylo, ymid)
            compare(xmid, xhi, ymid, yhi)

    compare(0, len(xv), 0, len(yv))


def _slide(changed: list[bool], other: list[bool], ids: list[int]) -> None:
    """Slide each run of changed lines of one file (CHANGED, sentinel-padded)
    over equal lines: back to merge with the run before, forward to merge
    with the run after, then back to face a run of the other file (OTHER)."""
    end = len(ids)
    i = j = 0                 # a line of this file, and the matching place in the other

    def c(k: int) -> bool:
        return changed[k + 1]

    def o(k: int) -> bool:
        return other[k + 1]
    while True:
        while i < end and not c(i):
            while o(j):
                j += 1
            i, j = i + 1, j + 1
        if i == end:
            return
        start = i
        i += 1
        while c(i):
            i += 1
        while o(j):
            j += 1
        while True:
            length = i - start
            while start and ids[start - 1] == ids[i - 1]:
                start, i = start - 1, i - 1
                changed[start + 1], changed[i + 1] = True, False
                while c(start - 1):
                    start -= 1
                j -= 1
                while o(j):
                    j -= 1
            facing = i if o(j - 1) else end
            while i != end and ids[start] == ids[i]:
                changed[start + 1], changed[i + 1] = False, True
                start, i = start + 1, i + 1
                while c(i):
                    i += 1
                j += 1
                while o(j):
                    j += 1
                    facing = i
            if length == i - start:
                break
        while facing < i:
            start, i = start - 1, i - 1
            changed[start + 1], changed[i + 1] = True, False
            j -= 1
            while o(j):
                j -= 1


def _range(start: int, length: int) -> str:
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def unified_diff(a: list[str], b: list[str], label_a: str, label_b: str, context: int = 3) -> str:
    """`diff -u --label A --label B` of two files' lines ('' when equal)."""
    ops = _edit_script(a, b)
    if all(op == "=" for op, _, _ in ops):
        return ""
    out = [f"--- {label_a}\n", f"+++ {label_b}\n"]
    changes = [k for k, (op, _, _) in enumerate(ops) if op != "="]
    groups: list[tuple[int, int]] = []
    for k in changes:
        lo, hi = max(k - context, 0), min(k + context, len(ops) - 1)
        if groups and lo <= groups[-1][1] + 1:
            groups[-1] = (groups[-1][0], hi)
        else:
            groups.append((lo, hi))
    for lo, hi in groups:
        chunk = ops[lo:hi + 1]
        a_start = next((i for op, i, _ in chunk if op in "=-"), None)
        b_start = next((j for op, _, j in chunk if op in "=+"), None)
        a_len = sum(1 for op, _, _ in chunk if op in "=-")
        b_len = sum(1 for op, _, _ in chunk if op in "=+")
        if a_start is None:
            a_start = _position(ops, lo, "a")
        if b_start is None:
            b_start = _position(ops, lo, "b")
        out.append(f"@@ -{_range(a_start, a_len)} +{_range(b_start, b_len)} @@\n")
        for op, i, j in chunk:
            line = a[i] if op in "=-" else b[j]
            out.append({"=": " ", "-": "-", "+": "+"}[op] + line + "\n")
    return "".join(out)


def _position(ops: list[tuple[str, int, int]], upto: int, side: str) -> int:
    """How many lines of one side come before ops[upto]."""
    return sum(1 for op, _, _ in ops[:upto] if op in ("=-" if side == "a" else "=+"))
