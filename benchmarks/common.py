"""What every benchmark shares: the machine's description, medians of
side-by-side ratios and their spread over rounds, target verdicts, tables, peak
memory, and a hand-written SVG bar chart."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from html import escape
from pathlib import Path

from emu.abi import FIXTURES

MODULES = FIXTURES / "build" / "modules"


def machine_description() -> dict[str, object]:
    import capstone
    import unicorn
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "unicorn": unicorn.__version__, "capstone": capstone.__version__, "os": platform.platform()}


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of the per-round ratios a[i] / b[i] (rounds taken side by side)."""
    return statistics.median(x / y for x, y in zip(a, b))


def reset_peak_rss() -> None:
    """Reset VmHWM (Linux: clear_refs 5), so peak_rss_mib() measures from here."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mib(field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak since reset_peak_rss) of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:])]) + "\n"


def spread(values: Sequence[float]) -> list[float]:
    """[min, max] over rounds: the noise band a figure's median sits in."""
    return [round(min(values), 4), round(max(values), 4)]


def verdict(value: float, target: float, band: Sequence[float] | None, *, at_most: bool) -> str:
    """'met' or 'MISSED' when the whole band is on one side of the target,
    'within noise' when the target lies inside the band of the rounds."""
    if band and band[0] <= target <= band[1]:
        return "within noise"
    return "met" if (value <= target if at_most else value >= target) else "MISSED"


_CHART_NOTE: ContextVar[str] = ContextVar("chart_note", default="")


@contextmanager
def chart_note(note: str) -> Iterator[None]:
    """The line every chart drawn inside the block prints under its title
    (date, machine, quick); the previous one again after the block."""
    token = _CHART_NOTE.set(note)
    try:
        yield
    finally:
        _CHART_NOTE.reset(token)


def _ticks(hi: float) -> list[float]:
    """Round tick values 0..hi, 4 to 10 of them (steps of 1, 2 or 5 x 10^k)."""
    step = 10 ** math.floor(math.log10(hi / 4))
    for k in (1, 2, 5, 10):
        if hi / (k * step) <= 8:
            step *= k
            break
    return [i * step for i in range(int(hi / step + 1e-9) + 1)]


def _figure(value: float) -> str:
    """Three significant digits, never in exponent form (1,450 not 1.45e+03)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def svg_bars(title: str, bars: Sequence[tuple[str, float] | tuple[str, float, Sequence[float] | None]],
             unit: str, *, marks: Sequence[tuple[float, str]] = (), clip: float | None = None,
             width: int = 800) -> str:
    """A horizontal bar chart on a linear axis with ticks: one labelled bar per
    (label, value[, [min, max] over rounds, drawn as a whisker]); `marks` draw
    dashed vertical lines (a target, the 1x line); bars past `clip` are cut at
    the axis's end (a zigzag) so small ratios near 1 stay readable."""
    label_w, row_h, top = 300, 26, 78
    plot_w = width - label_w - 110
    rows = [(b[0], b[1], b[2] if len(b) > 2 else None) for b in bars]
    values = [v for _, v, _ in rows] + [v for v, _ in marks] + [band[1] for *_, band in rows if band]
    hi = max(values) * 1.08
    if clip is not None and clip < hi:
        hi = clip
    ticks = _ticks(hi)
    hi = max(hi, ticks[-1])
    scale = lambda v: min(v, hi) / hi * plot_w  # noqa: E731
    height = top + row_h * len(rows) + 30
    note = _CHART_NOTE.get()
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    if note:
        out.append(f'<text x="10" y="40" fill="#555">{escape(note)}</text>')
    bottom = top + row_h * len(rows)
    for t in ticks:
        x = label_w + scale(t)
        out.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#555">{t:g}</text>')
    for i, (label, value, band) in enumerate(rows):
        y = top + i * row_h
        w = max(1.0, scale(value))
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" fill="#4a7ab5"/>')
        end = label_w + w
        if value > hi:                                   # cut: a zigzag at the axis's end
            out.append(f'<path d="M{end - 8:.1f},{y + 3} l4,5 l-4,5 l4,5 l-4,5" stroke="white" '
                       f'stroke-width="3" fill="none"/>')
        if band and value <= hi:
            x0, x1 = label_w + scale(band[0]), label_w + scale(band[1])
            out.append(f'<path d="M{x0:.1f},{y + 13} H{x1:.1f} M{x0:.1f},{y + 8} v10 M{x1:.1f},{y + 8} v10" '
                       f'stroke="#222" fill="none"/>')
            end = max(end, x1)
        text = f"{_figure(value)}{unit}" + (f" ({_figure(band[0])}-{_figure(band[1])})"
                                            if band and band[0] != band[1] else "")
        if value > hi:                                   # no room right of a cut bar: its value inside
            out.append(f'<text x="{label_w + w - 14:.1f}" y="{y + 16}" text-anchor="end" fill="white">'
                       f'{escape(text)}</text>')
        else:
            out.append(f'<text x="{end + 5:.1f}" y="{y + 16}">{escape(text)}</text>')
    placed: list[tuple[float, float]] = []               # (x, y) of mark labels: stack close ones
    for value, label in marks:
        if value > hi:
            continue
        x = label_w + scale(value)
        half = 3.5 * len(label) + 4
        y = top - 8
        while any(abs(x - px) < half + 3.5 * 6 and py == y for px, py in placed):
            y -= 13
        placed.append((x, y))
        out.append(f'<line x1="{x:.1f}" y1="{y + 3}" x2="{x:.1f}" y2="{bottom + 4}" '
                   f'stroke="#c0392b" stroke-dasharray="4,3"/>')
        out.append(f'<text x="{x:.1f}" y="{y}" text-anchor="middle" fill="#c0392b">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bench_main(doc: str, run: Callable[[bool], dict[str, object]],
               report: Callable[[dict[str, object]], str], argv: list[str] | None) -> int:
    """A benchmark module's command line: --quick, --json PATH; prints its report."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    result = run(args.quick)
    sys.stdout.write(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
