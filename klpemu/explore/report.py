"""An exploration as one SVG page: the outcome classes, the histogram of
patching-transition times, the blockers counted in runs, and the timeline
(klpemu/timeline.py) of one schedule: the first that did not pass, or its minimized form."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from html import escape

WIDTH, BAR_H, GAP, LEFT = 760, 18, 6, 250
LABEL_CHARS = 34                   # what fits left of the bars at 12 px (~6.8 px a character)
COLOURS = {"pass": "#4c9a2a", "check_result": "#d9822b", "failed": "#c0392b", "oops": "#8e44ad",
           "hang": "#2c3e50", "stalled": "#2980b9", "error": "#7f8c8d"}


def _bars(title: str, rows: list[tuple[str, int, str]], y: int,
          notes: list[str] | None = None) -> tuple[list[str], int]:
    """A horizontal bar chart of (label, value, colour), each row's note (if
    any) after its value; its SVG and the next free y. A label too long for
    its column is cut with an ellipsis, whole in its hover title."""
    out = [f'<text x="10" y="{y + 16}" font-weight="bold">{escape(title)}</text>']
    y += 28
    top = max((v for _, v, _ in rows), default=0) or 1
    for k, (label, value, colour) in enumerate(rows):
        w = (WIDTH - LEFT - 80) * value / top
        shown = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
        out.append(f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end">{escape(shown)}'
                   f'<title>{escape(label)}</title></text>')
        out.append(f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{colour}"/>')
        note = f"  {notes[k]}" if notes and notes[k] else ""
        out.append(f'<text x="{LEFT + w + 6:.1f}" y="{y + 13}">{value}<tspan fill="#444">{escape(note)}</tspan></text>')
        y += BAR_H + GAP
    return out, y + 12


def _bin_labels(hist: list[dict[str, int]]) -> list[str]:
    """`from-to s` for each bin, with as many decimals as it takes for the
    edges of neighbouring bins to read differently (at least 3)."""
    width = min((h["to"] - h["from"] for h in hist), default=0) / 1e9
    digits = min(9, max(3, math.ceil(-math.log10(width)) + 1)) if width > 0 else 3
    return [f"{h['from'] / 1e9:.{digits}f}-{h['to'] / 1e9:.{digits}f} s" for h in hist]


def svg_report(doc: dict[str, object], timeline: str | None = None) -> str:
    """`timeline`: the SVG of one run's timeline, drawn below the charts."""
    head = (f"{doc['script']}: {doc['runs']} runs ({doc['strategy']}), {doc['failing_runs']} not passing, "
            f"{doc['runs_per_second']} runs/s")
    parts = [f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(head)}</text>']
    y = 36
    classes = [(c["kind"], c["count"], COLOURS.get(c["kind"], "#888")) for c in doc["classes"]]
    groups = [c["key"].splitlines()[0] if c["key"] else "" for c in doc["classes"]]
    block, y = _bars("outcomes (runs)", classes, y, groups)
    parts += block
    hist = doc["transitions_ns"]["histogram"]
    if hist:
        rows = [(label, h["count"], "#2980b9") for label, h in zip(_bin_labels(hist), hist)]
        block, y = _bars("virtual time to 'patching complete' (transitions)", rows, y)
        parts += block
    if doc["blockers"]:
        rows = [(b["blocker"], b["runs"], "#c0392b") for b in doc["blockers"][:15]]
        block, y = _bars("what blocked a transition's tries (runs)", rows, y)
        parts += block
    width = WIDTH
    if timeline is not None:
        inner = ET.fromstring(timeline)
        w, h = int(inner.get("width", WIDTH)), int(inner.get("height", 0))
        body = timeline[timeline.index(">", timeline.index("<svg")) + 1:timeline.rindex("</svg>")]
        parts.append(f'<svg x="0" y="{y}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{body}</svg>')
        y, width = y + h, max(WIDTH, w)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
            f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")
