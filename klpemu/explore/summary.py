"""An exploration's results: outcome classes with their counts and a
replay line each, the distribution of patching-transition times, and what
blocked transitions, counted in runs."""
from __future__ import annotations

import shlex
import statistics
from collections import Counter
from dataclasses import dataclass

from klpemu.explore.outcome import CLASSES, PASS, Outcome, count_blockers
from klpemu.explore.pool import Run

HISTOGRAM_BINS = 12


@dataclass
class OutcomeClass:
    kind: str
    key: str
    count: int
    first: Run
    detail: str


def replay_command(script: str, run: Run) -> str:
    """The `klpemu run` line that repeats this run, byte for byte."""
    args = ["klpemu", "run", script, "--seed", str(run.schedule.seed),
            "--schedule", ",".join([run.schedule.strategy, *(f"{n}={v:g}" for n, v in run.schedule.params)]),
            *run.config.replay_args()]
    return shlex.join(args)


def group(results: list[tuple[Run, Outcome]]) -> list[OutcomeClass]:
    """Classes by (kind, key), the most frequent first (passes last among equals)."""
    classes: dict[tuple[str, str], OutcomeClass] = {}
    for run, outcome in results:
        slot = classes.get((outcome.kind, outcome.key))
        if slot is None:
            classes[outcome.kind, outcome.key] = OutcomeClass(outcome.kind, outcome.key, 1, run, outcome.detail)
        else:
            slot.count += 1
    return sorted(classes.values(), key=lambda c: (-c.count, CLASSES.index(c.kind), c.key))


def histogram(values: list[int], bins: int = HISTOGRAM_BINS) -> list[tuple[int, int, int]]:
    """(from, to, count) over [min, max] in equal bins (one bin when all are equal)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if low == high:
        return [(low, high, len(values))]
    width = (high - low) / bins
    counts = Counter(min(bins - 1, int((v - low) / width)) for v in values)
    return [(round(low + i * width), round(low + (i + 1) * width), counts[i]) for i in range(bins)]


def summarize(script: str, results: list[tuple[Run, Outcome]], seconds: float) -> dict[str, object]:
    """The JSON document of an exploration (klpemu/schemas/explore.schema.json, without its header)."""
    outcomes = [o for _, o in results]
    n = len(results)
    times = [t for o in outcomes for t in o.transitions_ns]
    classes = group(results)
    return {
        "runs": n,
        "failing_runs": sum(1 for o in outcomes if o.kind != PASS),
        "seconds": round(seconds, 3),
        "runs_per_second": round(n / seconds, 2) if seconds > 0 else None,
        "classes": [{"kind": c.kind, "key": c.key, "count": c.count, "share": round(c.count / n, 4),
                     "first": {"index": c.first.index, "schedule": str(c.first.schedule),
                               "cpus": c.first.config.cpus, "kernel": c.first.config.kernel,
                               "dispatch": c.first.config.dispatch, "klp_version": c.first.config.klp_version},
                     "replay": replay_command(script, c.first), "detail": c.detail} for c in classes],
        "transitions_ns": {
            "count": len(times),
            **({"min": min(times), "median": int(statistics.median(times)), "max": max(times),
                "p90": sorted(times)[min(len(times) - 1, int(len(times) * 0.9))]} if times else {}),
            "histogram": [{"from": a, "to": b, "count": c} for a, b, c in histogram(times)],
        },
        "blockers": [{"blocker": name, "runs": count}
                     for name, count in sorted(count_blockers(outcomes).items(), key=lambda kv: (-kv[1], kv[0]))],
    }


def format_summary(doc: dict[str, object]) -> str:
    """The table on stdout."""
    out = [f"{doc['runs']} runs, {doc['failing_runs']} not passing, {doc['seconds']:.1f} s"
           f" ({doc['runs_per_second']} runs/s)", ""]
    out.append(f"{'class':<13} {'runs':>6} {'share':>7}  first schedule / group")
    for c in doc["classes"]:
        out.append(f"{c['kind']:<13} {c['count']:>6} {c['share'] * 100:>6.1f}%  {c['first']['schedule']}"
                   + (f"  {c['key'].splitlines()[0][:70]}" if c["key"] else ""))
        if c["kind"] != PASS:
            out.append(f"{'':>30}replay: {c['replay']}")
    t = doc["transitions_ns"]
    if t["count"]:
        out.append("")
        out.append(f"patching transitions: {t['count']}, virtual time to complete: min {t['min'] / 1e9:.3f} s, "
                   f"median {t['median'] / 1e9:.3f} s, p90 {t['p90'] / 1e9:.3f} s, max {t['max'] / 1e9:.3f} s")
    if doc["blockers"]:
        out.append("")
        out.append("blocked transition tries (runs): " + ", ".join(f"{b['blocker']} ({b['runs']})"
                                                                 for b in doc["blockers"]))
    return "\n".join(out) + "\n"
