"""What every benchmark shares: the machine's description, medians of
side-by-side ratios, tables, peak memory, and a hand-written SVG bar chart."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

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


def svg_bars(title: str, bars: Sequence[tuple[str, float]], unit: str, *,
             marks: Sequence[tuple[float, str]] = (), log: bool = False, width: int = 760) -> str:
    """A horizontal bar chart: one labelled bar per (label, value); `marks`
    draws dashed vertical lines (a target, the 1x line) at those values."""
    import math
    label_w, row_h, top = 300, 26, 40
    plot_w = width - label_w - 90
    values = [v for _, v in bars] + [v for v, _ in marks]
    hi = max(values) * 1.05
    lo = min(values) / 1.5 if log else 0.0
    scale = ((lambda v: (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
             if log else (lambda v: v / hi))
    height = top + row_h * len(bars) + 42
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(bars):
        y = top + i * row_h
        w = max(1.0, scale(value) * plot_w)
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="#4a7ab5"/>')
        out.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 16}">{value:.3g}{escape(unit)}</text>')
    for i, (value, label) in enumerate(marks):
        x = label_w + scale(value) * plot_w
        y = height - 22 + 13 * (i % 2)          # staggered: close marks keep readable labels
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y - 11}" '
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
