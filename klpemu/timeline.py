"""A run's livepatch transitions as one SVG picture (`klpemu run --timeline`).

Drawn from the event log as `klpemu run --json` gives it ("events", see
klp/events.py): a lane per task coloured by its patch_state (pending while
a transition waits for it), a marker at each failed klp_try_switch_task
(its reason and blocking function in the hover title, and summed up at the
lane's right), signals, force and reversal, the kernel's oopses (a cross on
the task's lane, the report's first line in its hover title), the
transitions' start and end as vertical lines, and a time axis in virtual
seconds.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from klpemu.errors import KlpemuError

if TYPE_CHECKING:
    from emu.faults.oops import Oops

WIDTH = 1100
LEFT = 170                 # lane labels
RIGHT = 300                # the why column
LANE_H, LANE_GAP = 20, 8
FONT = 12

COLOURS = {"unpatched": "#b8c0cc", "pending": "#f0a020", "patched": "#2f6fd0", "idle": "#e6eaf0"}
LEGEND = (("unpatched", "unpatched"), ("pending", "pending: must still switch"),
          ("patched", "patched"), ("idle", "idle: no transition"))
OOPS_COLOUR = "#b00020"
TRY_MARK = {"is sleeping on function": ("#c0392b", "sleeping on"), "is running": ("#8e44ad", "running"),
            "has an unreliable stack": ("#000000", "unreliable stack")}


@dataclass(frozen=True)
class OopsMark:
    """An oops to draw: when, whose task, and the report's first line."""
    t_ns: int
    pid: int
    comm: str
    what: str


def oops_marks(oopses: Iterable["Oops"]) -> list[OopsMark]:
    """The marks of a machine's oopses (`machine.oopses`)."""
    return [OopsMark(o.t_ns, o.task_pid, o.task_comm, o.headline) for o in oopses]


def _ticks(lo: float, hi: float) -> tuple[float, list[float]]:
    """A 1-2-5 step giving 5 to 10 ticks over [lo, hi], and the ticks."""
    span = max(hi - lo, 1e-9)
    base = 10 ** math.floor(math.log10(span / 5))
    step = next(m * base for m in (1, 2, 5, 10) if span / (m * base) <= 10)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return step, [first + k * step for k in range(count)]


def _seconds(t: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{t:.{digits}f} s"


def task_key(event: dict[str, object]) -> tuple[int, str]:
    return int(event["pid"]), str(event["comm"])  # type: ignore[call-overload]


def _name(key: tuple[int, str]) -> str:
    return f"{key[1]}:{key[0]}"


class _Lanes:
    """Each task's patch_state as segments: (start_ns, end_ns, colour key)."""

    def __init__(self, events: list[dict[str, object]], end_ns: int) -> None:
        changes: dict[tuple[int, str], list[tuple[int, str]]] = {}
        self.spans: list[tuple[int, int, str]] = []      # transitions: start, end (or end of run), target
        target, started = "", 0
        for e in events:
            t = int(e["t_ns"])
            if e["kind"] == "task":
                changes.setdefault(task_key(e), []).append((t, str(e["state"])))
            elif e["kind"] == "patch" and e["state"] == "start":
                target, started = str(e["detail"]), t
            elif e["kind"] == "reverse" and target:
                self.spans.append((started, t, target))
                target, started = ("unpatched" if target == "patched" else "patched"), t
            elif e["kind"] == "patch" and e["state"] == "complete" and target:
                self.spans.append((started, t, target))
                target = ""
        self.running = target          # still in progress at the end of the run
        if target:
            self.spans.append((started, end_ns, target))
        # by task: (pid, comm), as the idle tasks all have pid 0
        self.segments: dict[tuple[int, str], list[tuple[int, int, str]]] = {}
        for key, points in changes.items():
            segs = []
            for k, (t, state) in enumerate(points):
                until = points[k + 1][0] if k + 1 < len(points) else end_ns
                segs.extend(self._split(t, until, state))
            self.segments[key] = [s for s in segs if s[1] > s[0]]

    def _split(self, start: int, end: int, state: str) -> list[tuple[int, int, str]]:
        """A segment in `state`, pending where a transition targets another state."""
        if state == "idle":
            return [(start, end, "idle")]
        out, t = [], start
        for lo, hi, target in self.spans:
            lo, hi = max(lo, start), min(hi, end)
            if hi <= lo or target == state:
                continue
            out.append((t, lo, state))
            out.append((lo, hi, "pending"))
            t = hi
        out.append((t, end, state))
        return out


def _failed_tries(events: list[dict[str, object]]) -> Counter[tuple[tuple[int, str], str, str]]:
    """Each task's failed klp_try_switch_task, counted by (task, reason, detail)."""
    return Counter((task_key(e), str(e["reason"]), str(e.get("detail", ""))) for e in events if e["kind"] == "try")


def svg_timeline(events: list[dict[str, object]], end_ns: int, title: str, subtitle: str = "",
                 oopses: Sequence[OopsMark] = ()) -> str:
    """The picture of the run whose event log is `events`, up to `end_ns`,
    with the run's `oopses` marked."""
    lanes = _Lanes(events, end_ns)
    keys = sorted(lanes.segments)
    first = min([*(int(e["t_ns"]) for e in events), *(o.t_ns for o in oopses)], default=0)
    step, _ = _ticks(first / 1e9, max(end_ns, first + 1) / 1e9)
    lo = math.floor(first / 1e9 / step + 1e-9) * step
    hi = max(end_ns / 1e9, lo + step)
    step, ticks = _ticks(lo, hi)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t_ns: float) -> float:
        return LEFT + plot_w * (t_ns / 1e9 - lo) / (hi - lo)

    out: list[str] = []
    out.append(f'<text x="12" y="24" font-size="16" font-weight="bold">{escape(title)}</text>')
    if subtitle:
        out.append(f'<text x="12" y="44" fill="#444">{escape(subtitle)}</text>')
    # legend
    lx, ly = 12, 62
    for key, label in LEGEND:
        out.append(f'<rect x="{lx}" y="{ly}" width="14" height="12" fill="{COLOURS[key]}" stroke="#666" '
                   f'stroke-width="0.5"/>')
        out.append(f'<text x="{lx + 19}" y="{ly + 11}">{escape(label)}</text>')
        lx += 32 + 6.6 * len(label)
    out.append(f'<text x="{lx}" y="{ly + 11}">failed try:</text>')
    lx += 80
    for colour, label in TRY_MARK.values():
        out.append(f'<path d="M{lx + 7} {ly + 12} l-6 -10 h12 z" fill="{colour}"/>')
        out.append(f'<text x="{lx + 17}" y="{ly + 11}">{escape(label)}</text>')
        lx += 26 + 6.6 * len(label)
    out.append(f'<path d="M{lx + 4} {ly - 1} v14" stroke="#8e44ad" stroke-width="2"/>'
               f'<text x="{lx + 11}" y="{ly + 11}">signal sent</text>')
    if oopses:
        lx += 92
        out.append(f'<path d="{_cross(lx + 6, ly + 6)}" stroke="{OOPS_COLOUR}" stroke-width="2.5"/>'
                   f'<text x="{lx + 17}" y="{ly + 11}">oops</text>')

    top = 110                      # the transitions' labels sit above the lanes
    lanes_top = top + 2 * 16
    lanes_bottom = lanes_top + len(keys) * (LANE_H + LANE_GAP)
    # transitions: start and end lines, labels staggered on two rows so none overlaps
    marks: list[tuple[float, str, str]] = []
    for start, end, target in lanes.spans:
        word = "patching" if target == "patched" else "unpatching"
        marks.append((x(start), f"{word} starts", "#2e7d32"))
        if end < end_ns or not lanes.running:
            marks.append((x(end), f"{word} ends", "#2e7d32"))
    for e in events:
        if e["kind"] in ("force", "reverse"):
            marks.append((x(int(e["t_ns"])), str(e["kind"]), "#c0392b"))
    for oops in oopses:
        marks.append((x(oops.t_ns), f"oops: {oops.comm}:{oops.pid}", OOPS_COLOUR))
    if lanes.running:
        word = "patching" if lanes.running == "patched" else "unpatching"
        out.append(f'<text x="{WIDTH - RIGHT + 8}" y="{top + 12}" fill="#c0392b" font-weight="bold">'
                   f'{word} still running at the end</text>')
    row_end = [-1e9, -1e9]
    for mx, label, colour in sorted(marks):
        row = 0 if row_end[0] < mx else 1 if row_end[1] < mx else min((0, 1), key=lambda r: row_end[r])
        row_end[row] = mx + 7 * len(label) + 10
        ty = top + 12 + 16 * row
        out.append(f'<line x1="{mx:.1f}" y1="{ty + 3}" x2="{mx:.1f}" y2="{lanes_bottom}" stroke="{colour}" '
                   f'stroke-width="1.5" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{mx + 3:.1f}" y="{ty}" fill="{colour}">{escape(label)}</text>')
    # lanes
    tries = _failed_tries(events)
    for k, task in enumerate(keys):
        y = lanes_top + k * (LANE_H + LANE_GAP)
        out.append(f'<text x="{LEFT - 8}" y="{y + 14}" text-anchor="end">{escape(_name(task))}</text>')
        for start, end, key in lanes.segments[task]:
            out.append(f'<rect x="{x(start):.1f}" y="{y}" width="{max(x(end) - x(start), 0.5):.1f}" '
                       f'height="{LANE_H}" fill="{COLOURS[key]}"><title>{escape(_name(task))}: {key} '
                       f'{start / 1e9:.6f}-{end / 1e9:.6f} s</title></rect>')
        why = [f"{n}× {TRY_MARK.get(r, ('', r))[1]}{' ' + d if r == 'is sleeping on function' else ''}"
               for (p, r, d), n in sorted(tries.items()) if p == task]
        if why:
            text = "failed tries: " + ", ".join(why)
            out.append(f'<text x="{WIDTH - RIGHT + 8}" y="{y + 14}" font-size="11">{escape(text[:46])}'
                       f'<title>{escape(text)}</title></text>')
    lane_of = {task: lanes_top + k * (LANE_H + LANE_GAP) for k, task in enumerate(keys)}
    for e in events:
        if e["kind"] not in ("try", "signal") or task_key(e) not in lane_of:
            continue
        mx, y = x(int(e["t_ns"])), lane_of[task_key(e)]
        who = _name(task_key(e))
        if e["kind"] == "signal":
            out.append(f'<path d="M{mx:.1f} {y - 3} v{LANE_H + 6}" stroke="#8e44ad" stroke-width="2">'
                       f'<title>{int(e["t_ns"]) / 1e9:.6f} s: signal sent to {escape(who)}</title></path>')
            continue
        colour = TRY_MARK.get(str(e["reason"]), ("#000", ""))[0]
        detail = f" {e['detail']}" if e.get("detail") else ""
        out.append(f'<path d="M{mx:.1f} {y + LANE_H - 3} l-6 -12 h12 z" fill="{colour}" stroke="white" '
                   f'stroke-width="0.8"><title>{int(e["t_ns"]) / 1e9:.6f} s: klp_try_switch_task: {escape(who)} '
                   f'{escape(str(e["reason"]))}{escape(detail)}</title></path>')
    for oops in oopses:
        y = lane_of.get((oops.pid, oops.comm))
        if y is not None:
            out.append(f'<path d="{_cross(x(oops.t_ns), y + LANE_H / 2, 7)}" stroke="{OOPS_COLOUR}" '
                       f'stroke-width="3"><title>{oops.t_ns / 1e9:.6f} s: {escape(oops.what)} '
                       f'({escape(oops.comm)}:{oops.pid})</title></path>')
    # time axis
    ay = lanes_bottom + 6
    out.append(f'<line x1="{LEFT}" y1="{ay}" x2="{x(hi * 1e9):.1f}" y2="{ay}" stroke="#333"/>')
    for t in ticks:
        tx = x(t * 1e9)
        out.append(f'<line x1="{tx:.1f}" y1="{lanes_top - 4}" x2="{tx:.1f}" y2="{ay}" stroke="#000" '
                   f'stroke-opacity="0.08"/>')
        out.append(f'<line x1="{tx:.1f}" y1="{ay}" x2="{tx:.1f}" y2="{ay + 5}" stroke="#333"/>')
        out.append(f'<text x="{tx:.1f}" y="{ay + 19}" text-anchor="middle">{_seconds(t, step)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{ay + 38}" text-anchor="middle" fill="#444">'
               f'virtual time since boot</text>')
    height = ay + 52
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, sans-serif" font-size="{FONT}">\n'
            f'<title>{escape(title)}</title>\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(out) + "\n</svg>\n")


def _cross(cx: float, cy: float, r: float = 5) -> str:
    return f"M{cx - r:.1f} {cy - r:.1f} L{cx + r:.1f} {cy + r:.1f} M{cx - r:.1f} {cy + r:.1f} L{cx + r:.1f} {cy - r:.1f}"


def timeline_title(events: list[dict[str, object]], script: str, schedule: str) -> tuple[str, str]:
    """The picture's title (the scenario and its patches) and subtitle (the schedule)."""
    patches = list(dict.fromkeys(str(e["patch"]) for e in events))
    title = f"{Path(script).name}: {', '.join(patches) if patches else 'no livepatch transition'}"
    return title, f"scenario {script}, schedule {schedule}"


def write_timeline(path: Path, events: list[dict[str, object]], end_ns: int, script: str, schedule: str,
                   oopses: Sequence[OopsMark] = ()) -> None:
    title, subtitle = timeline_title(events, script, schedule)
    try:
        path.write_text(svg_timeline(events, end_ns, title, subtitle, oopses))
    except OSError as exc:
        raise KlpemuError(f"--timeline: cannot write {path}: {exc.strerror}") from exc


TEXT_EVENTS_TAIL = 200     # events listed in the text form; the rest are counted


def _stamp(t_ns: int) -> str:
    return f"[{t_ns // 1_000_000_000:5d}.{t_ns // 1000 % 1_000_000:06d}]"


def _why(reason: str, detail: str) -> str:
    """A failed try's reason with its detail: the function, the CPU, the unwinder's words."""
    if not detail:
        return reason
    return f"{reason} on CPU {detail}" if reason == "is running" else f"{reason} {detail}"


def _event_line(e: dict[str, object]) -> str:
    """One event as a line: who, and what happened to them."""
    kind, patch = e["kind"], str(e["patch"])
    who = _name(task_key(e)) if e.get("pid") is not None else patch
    if kind == "patch":
        target = f" → {e['detail']}" if e.get("detail") else ""
        return f"{patch}: {e['state']}{target}"
    if kind == "task":
        seen = " (switched by the task, seen at the next pass)" if e.get("seen") else ""
        return f"{who}: patch_state {e['state']}{seen}"
    if kind == "try":
        return f"{who}: klp_try_switch_task: {_why(str(e['reason']), str(e.get('detail', '')))}"
    if kind == "signal":
        return f"{who}: signal sent ({patch})"
    return f"{patch}: {kind}"


def text_timeline(events: list[dict[str, object]], end_ns: int) -> str:
    """The picture's content as text (for JUnit XML and terminals): the
    transitions with their duration, each task's patch_state changes and
    failed tries summed up, then the events themselves (the last
    TEXT_EVENTS_TAIL of them)."""
    if not events:
        return "no livepatch transition recorded"
    lanes = _Lanes(events, end_ns)
    out = ["transitions:"]
    for start, end, target in lanes.spans:
        word = "patching" if target == "patched" else "unpatching"
        still = end == end_ns and bool(lanes.running)
        until = "end of run" if still else f"{end / 1e9:.6f} s"
        state = ", still running at the end" if still else ""
        out.append(f"  {start / 1e9:.6f} s - {until}: {word} ({(end - start) / 1e9:.6f} s){state}")
    if not lanes.spans:
        out.append("  none started")
    tries = _failed_tries(events)
    out.append("tasks:")
    keys = sorted(set(lanes.segments) | {key for key, _, _ in tries})
    width = max((len(_name(k)) for k in keys), default=0)
    for key in keys:
        states = [e for e in events if e["kind"] == "task" and task_key(e) == key]
        path = " → ".join(f"{s['state']} at {int(s['t_ns']) / 1e9:.6f} s" for s in states)
        why = ", ".join(f"{n}× {_why(r, d)}" for (k, r, d), n in sorted(tries.items()) if k == key)
        out.append(f"  {_name(key):<{width}}  {path}{'; failed tries: ' + why if why else ''}")
    out.append("events:")
    if len(events) > TEXT_EVENTS_TAIL:
        out.append(f"  … {len(events) - TEXT_EVENTS_TAIL} earlier events")
    out.extend(f"  {_stamp(int(e['t_ns']))} {_event_line(e)}" for e in events[-TEXT_EVENTS_TAIL:])
    return "\n".join(out)
