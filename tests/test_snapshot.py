"""Machine snapshots (emu.snapshot): a run from a snapshot is the run after
a fresh boot, byte for byte; whatever goes wrong in the child reaches the
caller as a clear error; the parent machine never changes."""
from __future__ import annotations

import gc
import io
import os
import select
import signal
from pathlib import Path

import pytest

from emu import EmuError, GuestHang, Machine, MachineCrashed, ShellError
from emu.errors import SnapshotError
from emu import snapshot
from emu.snapshot import ChildTraceback
from klp import Livepatch
from klpemu.paths import SCENARIOS
from klpemu.scenario import ScenarioRunner

MODULES = Path(__file__).resolve().parent.parent / "fixtures" / "build" / "modules"
SELFTEST = SCENARIOS / "selftests" / "test-livepatch.sh"
DIRECT = "/sys/kernel/debug/provoke-crash/DIRECT"


def scenario(m: Machine, script: Path) -> tuple[int, str, str]:
    """A ported selftest on `m`: (exit code, stdout, dmesg)."""
    out = io.StringIO()
    result = ScenarioRunner(m, out).run_file(script)
    return result.exit_code, out.getvalue(), m.dmesg()


@pytest.fixture(scope="module")
def booted() -> Machine:
    """A booted machine with the livepatch core attached."""
    m = Machine(cpus=2, seed=0).boot()
    Livepatch.attach(m)
    return m


@pytest.mark.parametrize("seed, schedule", [(0, "random"), (5, "pct,depth=3")])
def test_a_selftest_from_a_snapshot_is_the_fresh_boot_run_byte_for_byte(seed: int, schedule: str) -> None:
    """Same seed, same schedule: the same stdout and dmesg whether the run
    starts from a fresh boot or from a snapshot of one."""
    fresh = scenario(Machine(cpus=2, seed=seed, schedule=schedule).boot(), SELFTEST)
    snap = Machine(cpus=2, seed=seed, schedule=schedule).boot().snapshot()
    forked = snap.run(lambda m: scenario(m, SELFTEST))
    assert fresh[0] == 0 and "livepatch: 'test_klp_livepatch': patching complete" in fresh[2]
    assert forked == fresh
    assert snap.run(lambda m: scenario(m, SELFTEST)) == fresh        # and again, from the same snapshot


def test_modules_loaded_before_the_snapshot_are_there_in_every_child() -> None:
    """insmod once, snapshot, then each run: as if each had loaded it itself."""
    def loaded() -> Machine:
        m = Machine(cpus=2, seed=1).boot()
        Livepatch.attach(m)
        m.insmod(MODULES / "test_klp_livepatch.ko")
        return m

    def after(m: Machine) -> tuple[str, str]:
        m.run(1.5)
        cmdline = m.read_file("/proc/cmdline")
        m.write_file("/sys/kernel/livepatch/test_klp_livepatch/enabled", "0")
        m.run(1.5)
        return cmdline, m.dmesg()

    fresh = after(loaded())
    snap = loaded().snapshot()
    assert fresh[0] == "test_klp_livepatch: this has been live patched\n"
    assert snap.run(after) == snap.run(after) == fresh


def test_the_parent_machine_is_unchanged_by_a_child_run(booted: Machine) -> None:
    modules = booted.listdir("/sys/module")
    before = (booted.clock_ns, booted.dmesg(), booted.stats.rounds)
    snap = booted.snapshot()
    log = snap.run(lambda m: (m.insmod(MODULES / "test_klp_livepatch.ko"), m.run(2), m.dmesg())[2])
    assert "livepatch: 'test_klp_livepatch': patching complete" in log
    assert (booted.clock_ns, booted.dmesg(), booted.stats.rounds) == before
    assert booted.listdir("/sys/module") == modules and "test_klp_livepatch" not in modules
    assert not booted.exists("/sys/kernel/livepatch/test_klp_livepatch")


def test_an_oops_in_the_child_reaches_the_caller_and_not_the_parent(booted: Machine) -> None:
    snap = booted.snapshot()

    def provoke(m: Machine) -> None:
        m.spawn_shell().write(DIRECT, "EXCEPTION\n")             # the writing shell dies

    with pytest.raises(ShellError, match="died during the command") as err:
        snap.run(provoke)
    assert isinstance(err.value.__cause__, ChildTraceback)
    assert "m.spawn_shell().write(DIRECT" in str(err.value.__cause__)        # the child's traceback, from fn
    oopses = snap.run(lambda m: (provoke_quietly(m), m.oopses)[1])
    report = "\n".join(oopses[0].lines)
    assert "BUG: kernel NULL pointer dereference" in report and "RIP: 0010:lkdtm_EXCEPTION+0x" in report
    assert booted.oopses == [] and "Oops" not in booted.dmesg()


def provoke_quietly(m: Machine) -> None:
    with pytest.raises(ShellError):
        m.spawn_shell().write(DIRECT, "EXCEPTION\n")


def test_a_guest_hang_and_the_panic_after_it_reach_the_caller_and_not_the_snapshot() -> None:
    snap = Machine(cpus=2, seed=0, watchdog_thresh_s=0.3).boot().snapshot()

    def lockup(m: Machine) -> None:
        m.spawn_shell().write(DIRECT, "HARDLOCKUP\n")

    with pytest.raises(GuestHang) as err:
        snap.run(lockup)
    assert "RIP: 0010:lkdtm_HARDLOCKUP+0x" in err.value.report
    with pytest.raises(MachineCrashed, match="the machine crashed earlier: Watchdog detected hard LOCKUP"):
        snap.run(lambda m: (pytest.raises(GuestHang, lockup, m), m.run(0.1)))
    assert snap.run(lambda m: m.read_file("/proc/cmdline")) == "console=ttyS0 klpemu\n"
    assert snap.machine.crashed is None


def test_an_exception_in_fn_is_raised_in_the_caller_with_the_childs_traceback(booted: Machine) -> None:
    def check(m: Machine) -> None:
        cmdline = m.read_file("/proc/cmdline")
        assert cmdline == "wrong\n", f"the command line is {cmdline!r}"

    with pytest.raises(AssertionError, match="the command line is 'console=ttyS0 klpemu\\\\n'") as err:
        booted.snapshot().run(check)
    cause = err.value.__cause__
    assert isinstance(cause, ChildTraceback)
    assert 'assert cmdline == "wrong\\n"' in cause.text and "in check" in cause.text
    assert "_run_fn" not in cause.text                          # from fn down: no frames of the snapshot's


def test_an_error_with_keyword_only_fields_keeps_them(booted: Machine) -> None:
    """ShellError(message, *, errno) does not unpickle by its args alone."""
    with pytest.raises(ShellError) as err:
        booted.snapshot().run(lambda m: m.write_file("/sys/no/such/file", "1"))
    assert err.value.errno == 2 and "No such file or directory" in str(err.value)


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None


def test_an_exception_that_does_not_pickle_is_a_snapshot_error_with_its_text(booted: Machine) -> None:
    def fail(m: Machine) -> None:
        raise Unpicklable("the guest said no")

    with pytest.raises(SnapshotError, match="raised Unpicklable: the guest said no .*cannot be pickled") as err:
        booted.snapshot().run(fail)
    assert 'raise Unpicklable("the guest said no")' in str(err.value)    # and its traceback


def test_a_result_that_does_not_pickle_is_a_snapshot_error(booted: Machine) -> None:
    with pytest.raises(SnapshotError, match=r"the run's result \(Machine\) cannot be pickled to reach the parent"):
        booted.snapshot().run(lambda m: m)


@pytest.mark.parametrize("die, how", [(lambda: os._exit(3), "exit status 3"),
                                      (lambda: os.kill(os.getpid(), signal.SIGKILL), "killed by SIGKILL")])
def test_a_child_that_dies_without_reporting_is_a_snapshot_error(booted: Machine, die, how: str) -> None:
    with pytest.raises(SnapshotError, match=f"the child process of the snapshot died before it reported \\({how}\\)"):
        booted.snapshot().run(lambda m: die())


def test_a_process_fn_leaves_running_does_not_hold_up_the_result(booted: Machine) -> None:
    """The report is read to its length, not to EOF: a grandchild holding
    the pipe open (a pool fn started) does not make run() wait for it."""
    release_r, release_w = os.pipe()

    def spawn(m: Machine) -> str:
        if os.fork() == 0:                        # waits until the test lets it go
            os.close(release_w)
            select.select([release_r], [], [], 60)
            os._exit(0)
        return "reported"

    assert booted.snapshot().run(spawn) == "reported"
    os.close(release_w)
    os.close(release_r)


def test_a_process_forked_from_the_caller_starts_runs_of_its_own(booted: Machine) -> None:
    """A pool's worker (forked from the caller) has none of the caller's
    children to reap: a child still exiting is not waited for there."""
    snap = booted.snapshot()
    assert snap.run(lambda m: snap.run(lambda m: snapshot._EXITING + [m.clock_ns])) == [booted.clock_ns]


def test_the_child_never_collects_what_it_inherited(booted: Machine) -> None:
    """A full collection walking the parent's objects would copy every page
    of its heap (~3000 faults, tens of ms): the child freezes them first."""
    assert booted.snapshot().run(lambda m: gc.get_freeze_count()) > 10_000
    assert gc.get_freeze_count() == 0


def test_a_snapshot_is_not_taken_while_the_cpus_run() -> None:
    """From a hook (or a hypercall) the CPUs are mid-round: no consistent machine to fork."""
    m = Machine(cpus=1, seed=0).boot()
    refused: list[EmuError] = []

    def take() -> None:
        try:
            m.snapshot()
        except EmuError as exc:
            refused.append(exc)
    remove = m.cpus[0].engine.hook_code_at(m.symbol_address("cmdline_proc_show"), take)
    m.read_file("/proc/cmdline")
    remove()
    assert "a snapshot is taken between runs, not while the CPUs run" in str(refused[0])


def test_a_snapshot_of_a_machine_that_ran_since_is_refused() -> None:
    m = Machine(cpus=2, seed=0).boot()
    snap = m.snapshot()
    assert not snap.stale
    m.run(0.1)
    assert snap.stale
    with pytest.raises(SnapshotError, match="the machine ran since this snapshot was taken"):
        snap.run(lambda m: None)
    assert m.snapshot().run(lambda m: m.clock_ns) == m.clock_ns


def test_a_log_line_dropped_by_a_full_buffer_still_makes_the_snapshot_stale() -> None:
    m = Machine(cpus=1, seed=0).boot()
    while not m.klog.buffer.header()[1]:          # fill the log buffer until a record is dropped
        m.klog.log("x" * 1000)
    snap = m.snapshot()
    m.klog.log("another line, dropped too")
    assert snap.stale


def test_an_interrupted_run_leaves_no_child_running(booted: Machine, tmp_path) -> None:
    """^C while a child runs: the child is killed and reaped before the
    KeyboardInterrupt goes on up."""
    started = tmp_path / "child.pid"

    def long_run(m: Machine) -> None:
        started.write_text(str(os.getpid()))
        signal.pause()                                 # until killed

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)      # itimers are not inherited by a fork
        with pytest.raises(KeyboardInterrupt):
            booted.snapshot().run(long_run)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pid = int(started.read_text())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)                    # reaped already
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
