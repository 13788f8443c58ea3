"""`klpemu explore SCRIPT`: the sweep's runs, the table, the JSON and the
SVG report (its arguments: klpemu/explore/arguments.py)."""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from emu.errors import EmuError
from emu.schedule import ScheduleSpec
from klpemu.explore.checks import check_counts, check_script
from klpemu.explore.fork import Script, run_events
from klpemu.explore.minimize import minimize
from klpemu.explore.outcome import PASS, Outcome
from klpemu.explore.pool import Run, run_local, run_one
from klpemu.explore.report import svg_report
from klpemu.explore.summary import format_summary, replay_command, summarize
from klpemu.scenario import ScenarioError
from klpemu.session import RunConfig
from klpemu.timeline import svg_timeline, timeline_title

JSON_SCHEMA_VERSION = 1
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _split(text: str | None) -> list[str | None]:
    return [None] if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _seeds(args: argparse.Namespace) -> range:
    if args.seeds is None:
        return range(args.runs if args.runs is not None else 100)
    start, sep, end = args.seeds.partition("..")
    try:
        seeds = range(int(start), int(end)) if sep else range(int(start), int(start) + 1)
    except ValueError:
        raise EmuError(f"--seeds wants A..B (integers), not {args.seeds!r}") from None
    if not seeds:
        raise EmuError(f"--seeds {args.seeds} names no seed")
    return seeds


def plan(args: argparse.Namespace) -> list[Run]:
    """The runs of the sweep: every configuration of the axes, every seed."""
    strategy = ScheduleSpec.parse(args.strategy)
    check_counts(args.runs, args.jobs)
    try:
        cpus = [int(c) for c in _split(args.cpus)]
    except ValueError:
        raise EmuError(f"--cpus wants numbers, not {args.cpus!r}") from None
    configs = [RunConfig(kernel=k, cpus=c, dispatch=d, klp_version=v, module_dirs=tuple(args.module_dir),
                         unsafe_switch_to=args.unsafe_switch_to)
               for k, c, d, v in itertools.product(_split(args.kernel), cpus, _split(args.dispatch),
                                                   _split(args.klp_version))]
    return [Run(i, config, ScheduleSpec(strategy.strategy, seed, strategy.params))
            for i, (config, seed) in enumerate(itertools.product(configs, _seeds(args)))]


def _progress(total: int) -> "callable":
    if not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def show(done: int) -> None:
        rate = done / max(1e-9, time.perf_counter() - start)
        bar = "#" * (30 * done // total)
        sys.stderr.write(f"\r[{bar:<30}] {done}/{total} runs, {rate:.1f}/s ")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def execute(args: argparse.Namespace, script: Script) -> list[tuple[Run, Outcome]]:
    runs = plan(args)
    stop = (lambda o: o.kind != PASS) if args.stop_on_first else None
    progress = None if args.json else _progress(len(runs))
    if args.ray:
        from klpemu.explore.cluster import run_ray
        return run_ray(runs, script, args.ray, stop=stop, progress=progress)
    return list(run_local(runs, script, jobs=args.jobs, stop=stop, progress=progress))


def _timeline(args: argparse.Namespace, script: Script, failing: Run | None, minimized: bool) -> str | None:
    """The timeline of `failing` (the first run that did not pass, or its
    minimized form), replayed once here with the event log on; None when
    every run passed."""
    if failing is None:
        return None
    events, end_ns, oopses = run_events(failing.config, script, failing.schedule)
    title, _ = timeline_title(events, args.script, str(failing.schedule))
    which = "the minimized failing schedule" if minimized else "the first schedule that did not pass"
    return svg_timeline(events, end_ns, title, f"{which}: {replay_command(args.script, failing)}", oopses)


def cmd_explore(args: argparse.Namespace) -> int:
    try:
        script = Script(Path(args.script).read_text(), args.script)
    except OSError as exc:
        print(f"klpemu: cannot read {args.script}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:                              # a script that does not parse fails every run the same way: say so once
        check_script(script.text, f"./{Path(args.script).name}")
    except ScenarioError as exc:
        print(f"klpemu: {args.script}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    results = execute(args, script)
    doc = {"schema": JSON_SCHEMA_VERSION, "script": args.script, "strategy": args.strategy,
           **summarize(args.script, results, time.perf_counter() - started), "minimized": None}
    failing = next(((run, o) for run, o in results if o.kind != PASS), None)
    drawn = failing[0] if failing is not None else None
    if args.minimize and failing is not None:
        run, outcome = failing
        drawn, tries = minimize(run, outcome, lambda r: run_one(r, script))
        doc["minimized"] = {"schedule": str(drawn.schedule), "cpus": drawn.config.cpus, "tries": tries,
                            "replay": replay_command(args.script, drawn)}
    if args.report:
        args.report.write_text(svg_report(doc, _timeline(args, script, drawn, args.minimize)))
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(doc))
        if doc["minimized"]:
            sys.stdout.write(f"\nminimized ({doc['minimized']['tries']} tries): {doc['minimized']['replay']}\n")
    return EXIT_FAIL if failing is not None else EXIT_OK
