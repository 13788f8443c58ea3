"""What coreutils and diffutils print where the selftests read it: stat's
%A rights string, date --rfc-3339=ns of the virtual clock, the CPU count
of a cpulist (nproc, getconf _NPROCESSORS_ONLN), and diff -u's unified
diff (a shortest edit script, GNU diff's hunk format).
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
    """Myers' shortest edit script: ('=', i, j), ('-', i, -1), ('+', -1, j)."""
    n, m = len(a), len(b)
    maximum = n + m
    v = {1: 0}
    trace: list[dict[int, int]] = []
    for d in range(maximum + 1):
        trace.append(dict(v))
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v.get(k - 1, -1) < v.get(k + 1, -1)):
                x = v.get(k + 1, 0)
            else:
                x = v.get(k - 1, 0) + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x, y = x + 1, y + 1
            v[k] = x
            if x >= n and y >= m:
                return _backtrack(trace, a, b, d)
    return []


def _backtrack(trace: list[dict[int, int]], a: list[str], b: list[str], depth: int) -> list[tuple[str, int, int]]:
    x, y = len(a), len(b)
    ops: list[tuple[str, int, int]] = []
    for d in range(depth, -1, -1):
        v = trace[d]
        k = x - y
        if k == -d or (k != d and v.get(k - 1, -1) < v.get(k + 1, -1)):
            prev_k = k + 1
        else:
            prev_k = k - 1
        prev_x = v.get(prev_k, 0)
        prev_y = prev_x - prev_k
        while x > prev_x and y > prev_y:
            ops.append(("=", x - 1, y - 1))
            x, y = x - 1, y - 1
        if d > 0:
            if x == prev_x:
                ops.append(("+", -1, prev_y))
            else:
                ops.append(("-", prev_x, -1))
        x, y = prev_x, prev_y
    ops.reverse()
    return ops


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
