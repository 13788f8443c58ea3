"""pytest plugin: regression tests for livepatch modules on an emulated kernel.

Registered through the `pytest11` entry point, so installing klpemu is enough.

    import pytest

    @pytest.mark.klpemu(cpus=2, dispatch="native")      # all optional
    def test_my_fix(klp):
        klp.load_lp("my_fix")                            # my_fix.ko next to the test file
        assert klp.read("/proc/meminfo").startswith("MemTotal:")
        klp.disable_lp("my_fix")
        klp.unload_lp("my_fix")
        klp.check_result("...")                          # the selftests' check, exactly

Fixtures: `klp` (the functions.sh helpers as methods on a booted machine),
`klpemu_machine` (the emu.Machine, with the livepatch core attached) and
`klpemu_seed`. `--klpemu-seeds N` reruns every such test on seeds 0…N-1,
under the schedule strategy of `--klpemu-strategy` (or the marker's
`schedule`: random, pct, targeted, rr, with parameters: "pct,depth=3"). A
failing test's report shows the kernel log and, when a transition is
stuck, the tasks that block it with their stacks.

`klp.explore(SCRIPT, runs=1000)` runs a scenario (a file, or its text) under
that many schedules, each forked from one booted machine of the test's
configuration, and fails naming each failing class's first schedule and
the `klpemu run` line that replays it.

Tests from a snapshot: `@pytest.mark.klpemu(snapshot=True)` boots the
test's configuration once per worker process and runs each test (each
seed of --klpemu-seeds) in a child forked from that machine
(emu.snapshot); `snapshot=FUNCTION` also calls FUNCTION(klp) once, before
the snapshot is taken (to load the modules every test starts with).

    def patched(klp):
        klp.load_lp("my_fix")

    @pytest.mark.klpemu(snapshot=patched)
    def test_reader(klp): ...

Only the test function runs in the child (pytest_pyfunc_call); collection,
fixtures and reports stay in pytest's process, which is where the
verdict must land: what the test raises (an assertion, pytest.skip, a
KlpemuFailure, a guest's ShellError) is raised again there, the same
exception with the child's traceback as its cause, so pytest's assertion
message reads as usual; a failure's report carries the child's kernel
log, blocking tasks and timeline. Forking the whole test protocol instead
(pytest-forked's way) would boot in each child, and its fixtures' values
would not reach the parent. So what a test changes lives in its child
only: the machine, and Python state (monkeypatch, output captured with
capsys); files (tmp_path) stay. A fixture that uses klp or
klpemu_machine would run the shared machine outside the child: the test
fails naming the fix (that setup goes in FUNCTION). With snapshot=True
each seed gives the bytes of a fresh boot (the snapshot is the booted
machine; setup_config and the test run in the child under the test's
seed); with FUNCTION the setup runs once, under the marker's seed, and the
seeds vary what the tests do from there.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from emu import Machine
    from klp.events import EventLog
    from klp.transition import BlockingTask

# A failing helper's report points at the test's line, not at this module's
# frames (pytest hides the frames of a module that sets this).
__tracebackhide__ = True

# The emulator (unicorn, capstone …) is imported only when a test uses a
# fixture: every pytest run in this environment loads the plugin.

MARKER = "klpemu(cpus=2, seed=0, kernel='modern', dispatch='native', cmdline=None, module_dirs=(), " \
         "schedule='random', klp_version=None, snapshot=None): how to boot the machine of the klp / " \
         "klpemu_machine fixtures; snapshot=True or a function of klp: boot (and run the function) once " \
         "per worker, and run the test in a forked copy"
OPTIONS = ("cpus", "seed", "kernel", "dispatch", "cmdline", "module_dirs", "schedule", "klp_version", "snapshot")
CHECKED = "check_result compares the kernel log lines after the test's canary that contain 'livepatch:' " \
          "or 'test_klp' (as functions.sh does), taint notices left out"
DMESG_TAIL = 80
MAX_SNAPSHOTS = 4                  # a booted machine each, per worker: the least recently used goes
_MACHINES = pytest.StashKey["Machine"]()
_EVENTS = pytest.StashKey["EventLog"]()
_FORKED = pytest.StashKey["ForkedTest"]()


class KlpemuFailure(AssertionError):
    """A functions.sh helper failed (a check_result diff, a module that did not load …)."""


class KlpemuExplorationFailure(KlpemuFailure):
    """Some schedules of klp.explore did not pass (each ran on its own machine)."""


class Klp:
    """functions.sh on a booted machine: each helper behaves, logs and waits
    (in virtual time) as the kernel selftests' does (klpemu.selftest, the
    same implementation the scenario language runs), raises KlpemuFailure
    where the shell function would `die` and skips the test where it would `skip`."""

    def __init__(self, machine: "Machine", module_dirs: list[Path], dispatch: str | None = None,
                 scratch: Path | None = None, klp_version: str | None = None) -> None:
        from klp.core import Livepatch
        from klpemu.selftest import FIXTURE_MODULES, Selftest, module_dirs_finder
        self.livepatch: "Livepatch" = Livepatch.attach(machine, dispatch, klp_version)
        self.machine = machine
        # build() writes modules to `scratch`, explore() a scenario given as text
        self._scratch = scratch
        self._test_dir = module_dirs[0] if module_dirs else Path.cwd()
        self.module_dirs = [*([scratch] if scratch else []), *module_dirs]
        self.dispatch = dispatch
        self.klp_version = klp_version
        self._out = io.StringIO()
        self.selftest = Selftest(machine, module_dirs_finder([*self.module_dirs, FIXTURE_MODULES]),
                                 stdout=self._out.write, stderr=self._out.write)

    def _run(self, helper: Callable[..., None], *args: object) -> None:
        from klpemu.selftest import Die, Skip
        mark = self._out.tell()
        try:
            helper(*args)
        except Skip as exc:
            pytest.skip(exc.message)
        except Die as exc:
            said = self._out.getvalue()[mark:].strip()
            raise KlpemuFailure(said or f"ERROR: {exc.message}") from None

    # ------------------------------------------------------------ functions.sh
    def start_test(self, name: str) -> None:
        self._run(self.selftest.start_test, name)

    def check_result(self, expected: str) -> None:
        """functions.sh's check_result; its failure says which lines it compares
        and shows the ones it left out, where a line "missing" may be."""
        try:
            self._run(self.selftest.check_result, expected)
        except KlpemuFailure as exc:
            left_out = self._left_out_since_canary()
            note = f"\n\n({CHECKED}; the other lines since the canary:)\n" + \
                   ("\n".join(left_out) if left_out else "(none)")
            raise KlpemuFailure(f"{exc}{note}") from None

    def load_mod(self, name: str, *params: str) -> None:
        self._run(self.selftest.load_mod, name, *params)

    def load_lp(self, name: str, *params: str) -> None:
        self._run(self.selftest.load_lp, name, *params)

    def load_lp_nowait(self, name: str, *params: str) -> None:
        self._run(self.selftest.load_lp_nowait, name, *params)

    def load_failing_mod(self, name: str, *params: str) -> None:
        self._run(self.selftest.load_failing_mod, name, *params)

    def unload_mod(self, name: str) -> None:
        self._run(self.selftest.unload_mod, name)

    def unload_lp(self, name: str) -> None:
        self._run(self.selftest.unload_lp, name)

    def disable_lp(self, name: str) -> None:
        self._run(self.selftest.disable_lp, name)

    def set_pre_patch_ret(self, name: str, value: int) -> None:
        self._run(self.selftest.set_pre_patch_ret, name, value)

    def check_sysfs_rights(self, name: str, rel_path: str, rights: str) -> None:
        self._run(self.selftest.check_sysfs_rights, name, rel_path, rights)

    def check_sysfs_value(self, name: str, rel_path: str, value: str) -> None:
        self._run(self.selftest.check_sysfs_value, name, rel_path, value)

    def set_ftrace_enabled(self, value: int | str, *, can_fail: bool = False) -> None:
        self._run(lambda: self.selftest.set_ftrace_enabled(value, can_fail=can_fail))

    def setup_config(self) -> None:
        self._run(self.selftest.setup_config)

    def log(self, message: str) -> None:
        self._run(self.selftest.log, message)

    def loop_until(self, predicate: Callable[[], bool]) -> bool:
        """functions.sh's wait: PREDICATE retried RETRY_INTERVAL apart, in virtual time."""
        return self.selftest.loop_until(predicate)

    # ------------------------------------------------------------ the machine
    def read(self, path: str) -> str:
        """`cat PATH` through the guest."""
        return self.machine.read_file(path)

    def write(self, path: str, value: str) -> None:
        """`echo VALUE > PATH` through the guest."""
        self.machine.write_file(path, value)

    def call(self, function: str, *args: int, returns: str = "long") -> int:
        """Call a guest kernel function (see Machine.call)."""
        return self.machine.call(function, *args, returns=returns)

    def sleep(self, seconds: float) -> None:
        """Let virtual time pass."""
        self.machine.run(seconds)

    def dmesg(self) -> str:
        return self.machine.dmesg()

    def _left_out_since_canary(self) -> list[str]:
        from klpemu.selftest import check_result_keeps
        lines = self.selftest.syslog.lines()
        canary = self.selftest.last_dmesg
        if canary not in lines:
            return []
        return [line for line in lines[lines.index(canary) + 1:] if not check_result_keeps(line)]

    def blocking(self) -> list["BlockingTask"]:
        """The tasks that failed the running transition's last try (none when
        no transition runs): each says why (`str()`: the kernel's debug line),
        with `.blocker` and `.stack`."""
        from klpemu.state_report import running_transition
        transition = running_transition(self.machine)
        return list(transition.blocking) if transition is not None else []

    def blocking_report(self) -> str:
        """The same as text, with stacks (empty when no transition runs)."""
        return _blocking_report(self.machine)

    # ------------------------------------------------------------ modules from C
    def build(self, *sources: str | Path, name: str | None = None, livepatch: bool = False) -> Path:
        """Compile C sources (relative ones next to the test file) into a
        module with the guest kernel's flags, as `klpemu build` does; NAME.ko
        (default: the first source's name) is then found by load_mod/load_lp."""
        from klpemu.build.compile import BuildError, build_module
        if not sources:
            raise KlpemuFailure("klp.build: no source files given")
        assert self._scratch is not None
        paths = [Path(s) if Path(s).is_absolute() else self._test_dir / s for s in sources]
        output = self._scratch / f"{name or paths[0].stem}.ko"
        try:
            return build_module(paths, output, livepatch=livepatch)
        except BuildError as exc:
            raise KlpemuFailure(f"klp.build: {exc}") from None

    def _use_scratch(self, scratch: Path) -> None:
        """build() and explore() write to SCRATCH (a forked test's tmp_path),
        found first; the snapshot's own scratch (what its setup built) next."""
        from klpemu.selftest import FIXTURE_MODULES, module_dirs_finder
        self._scratch = scratch
        self.module_dirs = [scratch, *self.module_dirs]
        self.selftest.find_module = module_dirs_finder([*self.module_dirs, FIXTURE_MODULES])

    # ------------------------------------------------------------ many schedules
    def explore(self, script: str | Path, runs: int = 100, strategy: str | None = None,
                cpus: tuple[int, ...] | None = None, jobs: int | None = None) -> dict[str, object]:
        """Run SCRIPT (a scenario file, or its text) under `runs` schedules of
        `strategy` (default: the machine's) on each CPU count of `cpus`
        (default: the machine's), on this test's kernel, command line,
        dispatch and module directories. The summary (as `klpemu explore
        --json` gives it) when every run passed; else KlpemuFailure naming
        each failing class's first schedule and its replay line."""
        from klpemu.explore.api import ExplorationFailed, explore
        from klpemu.session import RunConfig
        config = self.machine.config
        if isinstance(script, str) and "\n" not in script and Path(script).is_file():
            script = Path(script)
        if isinstance(script, str):                   # a file, so that the replay line replays it
            assert self._scratch is not None
            path = self._scratch / f"explore{len(list(self._scratch.glob('explore*.sh')))}.sh"
            path.write_text(script)
            script = path
        run = RunConfig(kernel=str(config.kernel), cpus=config.cpus, cmdline=config.cmdline,
                        watchdog_thresh_s=config.watchdog_thresh_s,
                        hung_task_timeout_s=config.hung_task_timeout_s, dispatch=self.dispatch,
                        klp_version=self.klp_version, module_dirs=tuple(self.module_dirs))
        try:
            result = explore(script, runs=runs, strategy=strategy or config.schedule,
                             cpus=cpus or (config.cpus,), config=run, jobs=jobs or _explore_jobs())
        except ExplorationFailed as exc:
            raise KlpemuExplorationFailure(str(exc)) from None
        return result.summary


def _explore_jobs() -> int:
    """Every core, but one per pytest-xdist worker (the workers share them)."""
    import os
    return 1 if os.environ.get("PYTEST_XDIST_WORKER") else os.cpu_count() or 1


def _blocking_report(machine: "Machine") -> str:
    from klpemu.state_report import blocking_report  # imports the emulator
    return blocking_report(machine)


def _failure_sections(machine: "Machine", events: "EventLog | None") -> list[tuple[str, str]]:
    """What a failing test's report adds: the kernel log's tail, the tasks
    blocking a transition, the transitions' timeline."""
    lines = machine.dmesg().splitlines()
    sections = [("klpemu kernel log", "\n".join(lines[-DMESG_TAIL:]))]
    blocking = _blocking_report(machine)
    if blocking:
        sections.append(("klpemu blocking tasks", blocking))
    if events is not None and events.events:
        from klpemu.timeline import text_timeline
        sections.append(("klpemu timeline", text_timeline(events.to_json(), machine.clock_ns)))
    return sections


# ---------------------------------------------------------------------- tests forked from a snapshot
class SharedSnapshot:
    """A booted machine (with the livepatch core, functions.sh's helpers
    and, when the marker names one, its setup run) kept for the tests of
    one configuration in this worker; each runs in a forked copy."""

    def __init__(self, klp: Klp, events: "EventLog", setup_in_child: bool) -> None:
        self.klp = klp
        self.events = events
        self.setup_in_child = setup_in_child       # snapshot=True: setup_config runs in each test
        self.snapshot = klp.machine.snapshot()

    def stale(self) -> bool:
        """True when the machine ran in this process since the snapshot."""
        return self.snapshot.stale


class ForkedTest:
    """One test's run from a shared snapshot: its seed, its tmp_path."""

    def __init__(self, shared: SharedSnapshot, seed: int, schedule: str) -> None:
        self.shared = shared
        self.seed = seed
        self.schedule = schedule
        self.scratch: Path | None = None           # the test's tmp_path, when it uses the klp fixture

    def run(self, test: Callable[..., object], args: dict[str, object]) -> None:
        """TEST(**ARGS) in a child forked from the snapshot, under this test's
        seed; its failure raised here with the child's report sections."""
        __tracebackhide__ = True
        from dataclasses import replace

        from emu.schedule import ScheduleSpec
        shared = self.shared
        if shared.stale():
            raise KlpemuFailure("the snapshot's machine ran before the test (a fixture used klp or "
                                "klpemu_machine?): with @pytest.mark.klpemu(snapshot=...) the test runs in a "
                                "forked copy and fixtures do not; what every test starts from goes in the "
                                "snapshot's setup function (snapshot=FUNCTION, called with klp), the rest in the test")

        def body(machine: "Machine") -> None:
            machine.config = replace(machine.config, seed=self.seed, schedule=self.schedule)
            machine.set_schedule(ScheduleSpec.parse(self.schedule, seed=self.seed))
            try:
                if self.scratch is not None:       # the klp fixture: as a fresh one, set up
                    shared.klp._use_scratch(self.scratch)
                    if shared.setup_in_child:
                        shared.klp.setup_config()
                test(**args)
            except BaseException as exc:
                if not isinstance(exc, pytest.skip.Exception):
                    exc.klpemu_sections = _failure_sections(machine, shared.events)  # type: ignore[attr-defined]
                raise
        shared.snapshot.run(body)


_SNAPSHOTS: dict[tuple[object, ...], SharedSnapshot] = {}


def _module_dirs(request: pytest.FixtureRequest, options: dict[str, object]) -> list[Path]:
    """Where the test's modules are looked up first: its own directory, then the marker's module_dirs."""
    return [Path(request.node.path).parent, *map(Path, options.get("module_dirs", ()))]


def _machine_kwargs(options: dict[str, object]) -> dict[str, object]:
    """The Machine's arguments the marker sets (its seed aside)."""
    return {k: options[k] for k in ("cpus", "kernel", "cmdline", "schedule") if options.get(k) is not None}


def _shared_snapshot(request: pytest.FixtureRequest, options: dict[str, object]) -> SharedSnapshot:
    """This worker's snapshot of the test's configuration, booted on first use."""
    from emu import Machine
    setup = options["snapshot"]
    if setup is not True and not callable(setup):
        raise pytest.UsageError(f"@pytest.mark.klpemu(snapshot=...) takes True or a function of klp, not {setup!r}")
    dirs = _module_dirs(request, options)
    key = (*(repr(options.get(k)) for k in OPTIONS if k != "snapshot"), setup, *dirs)
    shared = _SNAPSHOTS.pop(key, None)
    if shared is None or shared.stale():          # stale: ran since, in this process (a fixture's teardown)
        machine = Machine(seed=int(options.get("seed", 0)), **_machine_kwargs(options)).boot()
        scratch = request.getfixturevalue("tmp_path_factory").mktemp("klpemu-snapshot")
        klp = Klp(machine, dirs, options.get("dispatch"), scratch=scratch, klp_version=options.get("klp_version"))
        events = klp.livepatch.transition.record_events()
        if setup is not True:
            klp.setup_config()
            setup(klp)
        shared = SharedSnapshot(klp, events, setup_in_child=setup is True)
        while len(_SNAPSHOTS) >= MAX_SNAPSHOTS:
            del _SNAPSHOTS[next(iter(_SNAPSHOTS))]
    _SNAPSHOTS[key] = shared                      # the most recently used last
    return shared


# ---------------------------------------------------------------------- pytest hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("klpemu")
    group.addoption("--klpemu-seeds", type=int, default=None, metavar="N",
                    help="run every klpemu test on seeds 0..N-1 (scheduling interleavings)")
    group.addoption("--klpemu-strategy", default=None, metavar="SPEC",
                    help="the schedule strategy of every klpemu machine: random (default), pct, "
                         "targeted, rr, with parameters (pct,depth=3)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    seeds = config.getoption("klpemu_seeds")
    if seeds is not None and seeds < 1:
        raise pytest.UsageError("--klpemu-seeds needs a positive number")
    strategy = config.getoption("klpemu_strategy")
    if strategy is not None:
        _check_strategy(strategy, "--klpemu-strategy")


def _check_strategy(text: str, where: str) -> None:
    from emu.errors import EmuError
    from emu.schedule import ScheduleSpec
    try:
        ScheduleSpec.parse(text)
    except EmuError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    seeds = metafunc.config.getoption("klpemu_seeds")
    if seeds and "klpemu_seed" in metafunc.fixturenames:
        metafunc.parametrize("klpemu_seed", range(seeds), ids=[f"seed{s}" for s in range(seeds)])


def _options(request: pytest.FixtureRequest) -> dict[str, object]:
    marker = request.node.get_closest_marker("klpemu")
    options: dict[str, object] = dict(marker.kwargs) if marker else {}
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.klpemu: unknown option(s) {', '.join(sorted(unknown))} "
                                f"(the options: {', '.join(OPTIONS)})")
    strategy = request.config.getoption("klpemu_strategy")
    if strategy is not None:
        options["schedule"] = strategy
    elif "schedule" in options:
        _check_strategy(str(options["schedule"]), "@pytest.mark.klpemu(schedule=...)")
    return options


@pytest.fixture
def klpemu_seed(request: pytest.FixtureRequest) -> int:
    """The scheduling seed: the marker's `seed`, or each of --klpemu-seeds."""
    return int(_options(request).get("seed", 0))


@pytest.fixture
def klpemu_machine(request: pytest.FixtureRequest, klpemu_seed: int) -> Iterator["Machine"]:
    """A booted machine with the livepatch core attached (with the marker's
    `snapshot`: the worker's shared one, which the test runs a forked copy of)."""
    options = _options(request)
    if options.get("snapshot") is not None:
        shared = _shared_snapshot(request, options)
        schedule = str(options.get("schedule") or shared.klp.machine.config.schedule)
        request.node.stash[_FORKED] = ForkedTest(shared, klpemu_seed, schedule)
        yield shared.klp.machine
        return
    from emu import Machine
    from klp.core import Livepatch
    machine = Machine(seed=klpemu_seed, **_machine_kwargs(options)).boot()
    livepatch = Livepatch.attach(machine, options.get("dispatch"), options.get("klp_version"))
    request.node.stash[_MACHINES] = machine
    request.node.stash[_EVENTS] = livepatch.transition.record_events()     # for a failure's timeline
    yield machine


@pytest.fixture
def klp(request: pytest.FixtureRequest, klpemu_machine: "Machine", tmp_path: Path) -> Klp:
    """functions.sh's helpers on `klpemu_machine`; modules are looked up next
    to the test file, then in the marker's module_dirs, then in the fixtures."""
    options = _options(request)
    forked = request.node.stash.get(_FORKED, None)
    if forked is not None:                        # setup_config (if not done) in the test's child
        forked.scratch = tmp_path
        return forked.shared.klp
    dirs = _module_dirs(request, options)
    klp = Klp(klpemu_machine, dirs, options.get("dispatch"), scratch=tmp_path,
              klp_version=options.get("klp_version"))
    klp.setup_config()          # as every selftest script starts: dynamic debug on, ftrace enabled
    return klp


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test on a shared snapshot runs in a forked child (ForkedTest.run)."""
    forked = pyfuncitem.stash.get(_FORKED, None)
    if forked is None:
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    forked.run(pyfuncitem.obj, args)
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    if call.excinfo is not None and call.excinfo.errisinstance(KlpemuExplorationFailure):
        return                  # the test's own machine is not where the failing runs ran
    if call.excinfo is not None and hasattr(call.excinfo.value, "klpemu_sections"):
        sections = call.excinfo.value.klpemu_sections       # from the forked test's child
    elif (machine := item.stash.get(_MACHINES, None)) is not None:
        sections = _failure_sections(machine, item.stash.get(_EVENTS, None))
    else:
        return
    # as report sections (the terminal) and as properties (JUnit XML keeps those)
    report.sections.extend(sections)
    item.user_properties.extend(sections)        # the teardown report carries them to the XML
