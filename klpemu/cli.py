# PYTHON_ARGCOMPLETE_OK
"""`klpemu`: boot a kernel, run livepatch scenarios, build modules, find hazards, benchmark.

Exit codes (kselftest style where they overlap): 0 ok, 1 a step or check
failed, 2 usage error, 3 the guest hung or crashed, 4 the scenario skipped,
5 a transition still running at the end (`run --fail-on-stalled`), 130
interrupted (SIGINT), 141 stdout closed early (SIGPIPE, quietly).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from emu import EmuError, GuestHang, Machine, MachineConfig, MachineCrashed
from emu.faults.hung_task import check_hung_task_timeout
from emu.faults.watchdog import check_watchdog_thresh
from emu.machine import resolve_kernel
from emu.schedule import ScheduleSpec
from klp.core import Livepatch
from klp.errors import LivepatchError
from klp.ops import BACKENDS
from klp.profiles import DEFAULT, PROFILES
from klpemu.errors import KlpemuError
from klpemu.explore.arguments import add_arguments as explore_args
from klpemu.progress import Progress
from klpemu.scenario import ScenarioError
from klpemu.scenario.syntax import syntax_errors
from klpemu.session import RunConfig, ScenarioSession
from klpemu.symbols import add_arguments as symbols_args
from klpemu.state_report import (NO_TRANSITION, blocking_json, blocking_report, format_state, livepatch_state,
                                 running_transition)
from klpemu.timeline import oops_marks, write_timeline
from klpemu.version import package_version

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_HANG, EXIT_SKIP, EXIT_STALLED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_PIPE = 128 + 2, 128 + 13
JSON_SCHEMA_VERSION = 1
RUN_SCHEMA_VERSION = 2      # klpemu/schemas/run.schema.json: 2 added kernel_log, events, each step's output


def _machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default="modern", help="flavour name (modern, legacy) or path to a vmlinux")
    p.add_argument("--cpus", type=int, default=2, help="number of CPUs (1-8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scheduling interleaving")
    p.add_argument("--schedule", default="random", metavar="STRATEGY[:SEED][,NAME=VALUE…]",
                   help="how the CPUs interleave after boot: rr, random, pct, targeted, with parameters "
                        "(e.g. pct,depth=3); a seed here overrides --seed (see emu/schedule.py)")
    p.add_argument("--cmdline", default=MachineConfig.cmdline, help="kernel command line")
    p.add_argument("--watchdog-thresh", type=_watchdog_thresh, default=MachineConfig.watchdog_thresh_s,
                   help="lockup watchdog threshold, virtual seconds (the kernel's watchdog_thresh)")
    p.add_argument("--hung-task-timeout", type=_hung_task_timeout, default=MachineConfig.hung_task_timeout_s,
                   metavar="SECONDS", help="virtual seconds a shell command may run before it is reported "
                                           "as a hang (exit 3; a runaway task is killed)")


def _seconds(name: str, check: Callable[[float], float]) -> Callable[[str], float]:
    """An argparse type: a number of virtual seconds that `check` accepts."""
    def parse(text: str) -> float:
        try:
            return check(float(text))
        except (ValueError, EmuError) as err:
            raise argparse.ArgumentTypeError(str(err) if isinstance(err, EmuError) else
                                             f"{name} must be a number of seconds, not {text!r}") from None
    return parse


_watchdog_thresh = _seconds("watchdog_thresh", check_watchdog_thresh)
_hung_task_timeout = _seconds("hung_task_timeout_s", check_hung_task_timeout)


def _schedule(args: argparse.Namespace) -> ScheduleSpec:
    head = args.schedule.split(",", 1)[0]
    return ScheduleSpec.parse(args.schedule, seed=None if ":" in head else args.seed)


def _machine(args: argparse.Namespace) -> Machine:
    spec = _schedule(args)
    schedule = ",".join([spec.strategy, *(f"{n}={v:g}" for n, v in spec.params)])
    return Machine(MachineConfig(kernel=args.kernel, cpus=args.cpus, seed=spec.seed, cmdline=args.cmdline,
                                 watchdog_thresh_s=args.watchdog_thresh,
                                 hung_task_timeout_s=args.hung_task_timeout, schedule=schedule))


def _run_config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(kernel=args.kernel, cpus=args.cpus, cmdline=args.cmdline,
                     watchdog_thresh_s=args.watchdog_thresh, hung_task_timeout_s=args.hung_task_timeout,
                     dispatch=args.dispatch,
                     klp_version=args.klp_version, module_dirs=tuple(args.module_dir),
                     unsafe_switch_to=args.unsafe_switch_to)


def task_table(m: Machine) -> list[dict[str, object]]:
    rows = []
    for t in m.tasks():
        trace = m.walker.trace(t, reliable=False)
        cpu = m.running_on(t)
        rows.append({"pid": t.pid, "comm": t.comm, "state": t.state_letter, "cpu": t.cpu,
                     "running": cpu is not None, "stack": m.walker.format(trace)})
    return rows


def format_task_table(rows: list[dict[str, object]]) -> str:
    out = [f"{'PID':>5} {'COMM':<16} {'S':1} {'CPU':>3}  STACK"]
    for r in rows:
        stack = r["stack"] or ["(user mode)" if r["running"] else "(empty)"]
        out.append(f"{r['pid']:>5} {r['comm']:<16} {r['state']:1} {r['cpu']:>3}  {stack[0]}")
        out.extend(f"{'':>30}{frame}" for frame in stack[1:])
    return "\n".join(out) + "\n"


def cmd_boot(args: argparse.Namespace) -> int:
    m = _machine(args)
    m.boot()
    m.run(args.time)
    rows = task_table(m)
    if args.json:
        json.dump({"schema": JSON_SCHEMA_VERSION, "dmesg": m.dmesg_lines(),
                   "virtual_time_ns": m.clock_ns, "tasks": rows}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(m.dmesg())
        sys.stdout.write("\n" + format_task_table(rows))
    return EXIT_OK


def _read_script(args: argparse.Namespace) -> tuple[str, Path | None] | None:
    """The script's text and its file (None for `-`, stdin, run as bash runs it: $0 is bash)."""
    if args.script == "-":
        return sys.stdin.read(), None
    try:
        return Path(args.script).read_text(), Path(args.script)
    except OSError as exc:
        print(f"klpemu: cannot read {args.script}: {exc.strerror}", file=sys.stderr)
        return None
    except UnicodeDecodeError:
        print(f"klpemu: cannot read {args.script}: not a text file", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    read = _read_script(args)
    if read is None:
        return EXIT_USAGE
    text, script = read
    errors = syntax_errors(text, f"./{script.name}" if script is not None else "bash")
    for exc in errors:                             # all of them, before the machine boots
        print(f"klpemu: {args.script}: {exc}", file=sys.stderr)
    if errors:
        return EXIT_USAGE
    spec = _schedule(args)
    started = time.perf_counter()
    out = io.StringIO() if args.json else sys.stdout
    session = ScenarioSession(_run_config(args), out)
    m = session.machine
    events = Livepatch.attach(m).transition.record_events() if args.json or args.timeline else None
    lines = text.splitlines()

    def where() -> str:
        sh = session.runner.shell
        n = sh.line if sh is not None else 0
        return f"line {n}: {lines[n - 1].strip()}" if 0 < n <= len(lines) and sh.source == sh.script_name \
            else f"line {n}"

    try:
        with Progress(lambda: m.clock_ns, where):
            result = session.run(text, spec, script=script)
    except ScenarioError as exc:
        print(f"klpemu: {args.script}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if not args.json:
            sys.stdout.write("\n--- kernel log ---\n" + m.dmesg())
            if args.blocking:
                sys.stdout.write("\n--- blocking tasks ---\n" + (blocking_report(m) or NO_TRANSITION))
            if args.state:
                sys.stdout.write("\n--- livepatch state ---\n" + format_state(livepatch_state(m)))
    if args.timeline is not None and events is not None:
        write_timeline(args.timeline, events.to_json(), m.clock_ns, args.script, str(spec), oops_marks(m.oopses))
    if args.json and events is not None:
        json.dump({"schema": RUN_SCHEMA_VERSION, "script": args.script, "schedule": str(spec), **result.to_json(),
                   "dmesg": m.dmesg_lines(), "kernel_log": [{"t_ns": r.timestamp_ns, "level": r.level,
                                                             "text": r.text} for r in m.klog.records()],
                   "events": events.to_json(), "virtual_time_ns": m.clock_ns,
                   "wall_time_s": round(time.perf_counter() - started, 3), "blocking": blocking_json(m),
                   **({"state": livepatch_state(m)} if args.state else {})},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    oopses = [o for o in m.oopses if not o.user_fault]
    if oopses:
        # the shell that oopsed was respawned and the script went on, but
        # the kernel crashed: a guest crash, whatever the script's status
        panic = f"; then Kernel panic - not syncing: {m.crashed}" if m.crashed else ""
        print(f"klpemu: {args.script}: the kernel oopsed ({len(oopses)}x, pid {oopses[0].task_pid}): "
              f"{oopses[0].lines[0]}{panic}", file=sys.stderr)
        return EXIT_HANG
    hangs = m.hung_task.hangs
    if hangs:
        # as with an oops the script went on (a runaway was killed, a task
        # in D state stays), but a shell command never finished
        print(f"klpemu: {args.script}: the guest hung ({len(hangs)}x): {hangs[0]}", file=sys.stderr)
        return EXIT_HANG
    stalled = running_transition(m)
    if args.fail_on_stalled and stalled is not None and result.exit_code == EXIT_OK:
        print(f"klpemu: the transition of {stalled.patch.name} to {stalled.target.name.lower()} is still "
              f"running at the end (--fail-on-stalled)", file=sys.stderr)
        return EXIT_STALLED
    return result.exit_code


def cmd_hazards(args: argparse.Namespace) -> int:
    from klp.hazard import image_hazards  # pyelftools: imported by the commands that read ELF files
    try:
        hazards = image_hazards(resolve_kernel(args.kernel))
    except (EmuError, OSError) as exc:
        print(f"klpemu: hazards: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        json.dump({"schema": JSON_SCHEMA_VERSION, "kernel": args.kernel,
                   "hazards": [{"function": h.function, "reason": h.reason} for h in hazards]},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        width = max((len(h.function) for h in hazards), default=0)
        for h in hazards:
            print(f"{h.function:<{width}}  {h.reason}")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from klpemu.build.compile import BuildError, build_module
    if args.from_patch is not None:
        return _build_from_patch(args)
    if not args.sources:
        print("klpemu: build: give module sources (SRC.c …) or --from-patch PATCH …", file=sys.stderr)
        return EXIT_USAGE
    misplaced = [o for o, v in (("--no-replace", args.no_replace), ("-v", args.verbose),
                                ("--kernel", args.kernel is not None)) if v]
    if misplaced or args.output is None:
        what = f"{misplaced[0]} goes with --from-patch" if misplaced else "-o NAME.ko is required"
        print(f"klpemu: build: {what}", file=sys.stderr)
        return EXIT_USAGE
    try:
        out = build_module(args.sources, args.output, livepatch=args.livepatch)
    except BuildError as exc:
        print(f"klpemu: build: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(out)
    return EXIT_OK


def _build_from_patch(args: argparse.Namespace) -> int:
    if args.sources or args.livepatch:
        print("klpemu: build: --from-patch builds the module from the patches alone: no SRC.c "
              "and no --livepatch", file=sys.stderr)
        return EXIT_USAGE
    from klpemu.build.compile import BuildError
    from klpemu.build.from_patch import build_from_patch
    try:
        result = build_from_patch(args.from_patch, args.output, replace=not args.no_replace,
                                  kernel=args.kernel or "modern")
    except BuildError as exc:
        print(f"klpemu: build: {exc}", file=sys.stderr)
        return EXIT_FAIL
    for warning in result.warnings:
        print(f"klpemu: build: warning: {warning}", file=sys.stderr)
    print(result.report(verbose=args.verbose))
    return EXIT_OK


def cmd_explore(args: argparse.Namespace) -> int:
    from klpemu.explore.command import cmd_explore as run   # the pool, the reports: only when asked
    return run(args)


def cmd_symbols(args: argparse.Namespace) -> int:
    from klpemu.symbols import cmd_symbols as run   # pyelftools and DWARF only when asked
    return run(args)


BENCHMARK_NAMES = ("dispatch", "machine", "transition", "startup", "scenarios", "explore")


def cmd_bench(args: argparse.Namespace) -> int:
    from klpemu.benchmarks.run import main as bench_main  # benchmarks/, installed as klpemu.benchmarks
    flags = [f"--{flag}" for flag in ("quick", "commit", "check", "readme") if getattr(args, flag)]
    return bench_main([*args.names, *flags, *(["--out", str(args.out)] if args.out else [])])


class _VersionAction(argparse.Action):
    """--version, looked up when asked (importlib.metadata costs ~10 ms)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        sys.stdout.write(f"klpemu {package_version()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klpemu", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    boot = sub.add_parser("boot", help="boot a kernel, run a while, print dmesg and tasks")
    _machine_args(boot)
    boot.add_argument("--time", type=float, default=1.0, help="virtual seconds to run after boot")
    boot.add_argument("--json", action="store_true", help="machine-readable output")
    boot.set_defaults(func=cmd_boot)
    run = sub.add_parser("run", help="run a scenario script")
    run.add_argument("script", help="the scenario (a bash script); - reads it from stdin")
    run.add_argument("--module-dir", action="append", default=[], type=Path,
                     help="look for NAME.ko here before the built fixtures (repeatable)")
    run.add_argument("--json", action="store_true",
                     help="machine-readable outcome, steps, log, times and blocking tasks "
                          "(klpemu/schemas/run.schema.json)")
    run.add_argument("--blocking", action="store_true",
                     help="at the end, report the tasks that block a livepatch transition still in "
                          "progress, why (running, unreliable stack, sleeping on which function) and "
                          "their stacks (always in --json)")
    run.add_argument("--state", action="store_true",
                     help="at the end, show the livepatch state: patches, objects and funcs, each "
                          "function's func_stack and site, the transition, every task's patch_state")
    run.add_argument("--timeline", type=Path, metavar="OUT.svg",
                     help="draw the run's livepatch transitions: a lane per task coloured by patch_state, "
                          "each failed try and why, signals, force, the transitions' start and end")
    run.add_argument("--dispatch", choices=BACKENDS, default="native",
                     help="how patched functions are dispatched: native trampolines (default) "
                          "or a Python code hook per call (slow; for tracing)")
    run.add_argument("--klp-version", choices=[*PROFILES, "current"], default=DEFAULT,
                     help="the kernel whose livepatch semantics to reproduce (default: the newest, "
                          f"{DEFAULT}); see the README's table")
    run.add_argument("--unsafe-switch-to", action="store_true",
                     help="let a livepatch replace a function that switches stacks without saving "
                          "RIP even if tasks would resume in a different frame (reproduces the "
                          "crash; loud in dmesg)")
    run.add_argument("--fail-on-stalled", action="store_true",
                     help=f"exit {EXIT_STALLED} when the script passed but a livepatch transition is "
                          "still running at the end")
    _machine_args(run)
    run.set_defaults(func=cmd_run)
    hazards = sub.add_parser("hazards", help="list the functions of a kernel image that are unsafe "
                                             "to livepatch, and why")
    hazards.add_argument("--kernel", default="modern", help="flavour name (modern, legacy) or path to a vmlinux")
    hazards.add_argument("--json", action="store_true", help="machine-readable output")
    hazards.set_defaults(func=cmd_hazards)
    symbols = sub.add_parser("symbols", help="list the functions of a kernel image or module: address, "
                                             "size, sympos, source line, and (--patchable) whether a "
                                             "livepatch can replace them")
    symbols_args(symbols)
    symbols.set_defaults(func=cmd_symbols)
    build = sub.add_parser("build", help="compile kernel-style module sources into NAME.ko for the guest "
                                         "(KLP_MODULE_RELOC annotations become .klp.rela relocations), "
                                         "or make a livepatch from source patches (--from-patch)")
    build.add_argument("sources", nargs="*", type=Path, metavar="SRC.c")
    build.add_argument("-o", "--output", type=Path,
                       help="the module, NAME.ko (--from-patch: default livepatch_PATCH.ko)")
    build.add_argument("--livepatch", action="store_true", help="mark it a livepatch module (livepatch=Y)")
    build.add_argument("--from-patch", nargs="+", type=Path, metavar="PATCH",
                       help="build the guest kernel before and after these patches (-p1, from the "
                            "checkout or from fixtures/) and make a livepatch of the functions whose "
                            "machine code changed, as the kernel's klp-build does")
    build.add_argument("--no-replace", action="store_true",
                       help="--from-patch: a livepatch that stacks instead of replacing the others")
    build.add_argument("--kernel", choices=("modern", "legacy"),
                       help="--from-patch: the guest kernel flavour to patch (default modern)")
    build.add_argument("-v", "--verbose", action="store_true",
                       help="--from-patch: say why each function is in the module, and list its "
                            "livepatch relocations")
    build.set_defaults(func=cmd_build)
    explore = sub.add_parser("explore", help="run a scenario over many schedules and classify the outcomes")
    explore_args(explore)
    explore.set_defaults(func=cmd_explore)
    bench = sub.add_parser("bench", help="run the benchmark suite: tables, a dated JSON and SVG charts "
                                         "(benchmarks/README.md)")
    bench.add_argument("names", nargs="*", metavar="NAME",
                       help=f"run only these ({', '.join(BENCHMARK_NAMES)}; default: all)")
    bench.add_argument("--quick", action="store_true", help="fewer rounds and sizes (under a minute)")
    bench.add_argument("--out", type=Path, help="directory for the JSON and SVGs (default: benchmarks/results/local, "
                                                "git-ignored; installed: ~/.cache/klpemu/bench)")
    bench.add_argument("--commit", action="store_true",
                       help="a full run for the repository: write into benchmarks/results and regenerate "
                            "the README's figures table")
    bench.add_argument("--check", action="store_true", help="exit 1 when a target is clearly missed "
                                                            "(not merely within the noise of the rounds)")
    bench.add_argument("--readme", action="store_true",
                       help="only regenerate benchmarks/README.md's figures table from the committed JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion when argcomplete is installed (optional: `pip install argcomplete`,
    then `eval "$(register-python-argcomplete klpemu)"`). The shell's completion
    request sets _ARGCOMPLETE; other calls do not import it."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def _quiet_stdout() -> None:
    """stdout's reader went away (`klpemu hazards --json | head`): drop what is
    left so the interpreter's final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):        # a script's raw bytes (printf '\\xff') go out as bytes
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    _complete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except (GuestHang, MachineCrashed) as exc:
        print(f"klpemu: {exc}", file=sys.stderr)
        return EXIT_HANG
    except (EmuError, LivepatchError, KlpemuError) as exc:
        print(f"klpemu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("klpemu: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
