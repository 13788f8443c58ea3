"""Schedules (emu/schedule.py): the seed drives real diversity (per-CPU
quanta, CPU order, tick phase, the guest's pick among queued tasks), every
strategy is deterministic per spec, boot is the same under every schedule,
and the targeted one preempts exactly at its points."""
from __future__ import annotations

import re

import pytest

from emu import EmuError, Machine
from emu.kernel.shell import MODE_GETPID_LOOP
from emu.schedule import PctSchedule, RandomSchedule, RoundRobin, ScheduleSpec
from klp import Livepatch
from klp_helpers import MODULES


def busy(schedule: str, seed: int = 0, cpus: int = 2, tasks: int = 3, seconds: float = 0.1) -> Machine:
    m = Machine(cpus=cpus, seed=seed, schedule=schedule).boot()
    for _ in range(tasks):
        m.shell.spawn(MODE_GETPID_LOOP, "hammer")
    m.run(seconds)
    return m


def fingerprint(m: Machine) -> tuple[object, ...]:
    return (m.clock_ns, m.stats.rounds, m.stats.interrupts,
            tuple((t.pid, t.nvcsw, t.nivcsw) for t in m.tasks()))


def test_a_spec_reads_back_as_it_prints() -> None:
    spec = ScheduleSpec.parse("pct:7,steps=4000,depth=3")
    assert spec == ScheduleSpec("pct", 7, (("depth", 3.0), ("steps", 4000.0)))
    assert str(spec) == "pct:7,depth=3,steps=4000"
    assert ScheduleSpec.parse(str(spec)) == spec
    assert ScheduleSpec.parse("random", seed=9) == ScheduleSpec("random", 9)
    assert spec.param("starve") == 64                          # the default


@pytest.mark.parametrize("text, message", [
    ("fifo", "unknown schedule strategy 'fifo'"),
    ("rr,depth=2", "the rr schedule has no parameter 'depth' (it takes none)"),
    ("pct,depth", "schedule parameter 'depth' is not NAME=VALUE"),
    ("pct,depth=deep", "schedule parameter 'depth' needs a number"),
    ("pct:x", "schedule seed 'x' is not an integer"),
    ("pct,depth=0", "schedule parameter depth=0: the pct schedule wants a whole number >= 1"),
    ("pct,steps=2.5", "schedule parameter steps=2.5: the pct schedule wants a whole number >= 1"),
    ("pct,starve=0", "schedule parameter starve=0: the pct schedule wants a whole number >= 1"),
    ("targeted,p=1.5", "schedule parameter p=1.5: the targeted schedule wants between 0 and 1"),
    ("pct,steps=inf", "schedule parameter steps=inf: the pct schedule wants a whole number >= 1"),
    ("random,jitter=nan", "schedule parameter jitter=nan: the random schedule wants between 0 and 1"),
    ("random,slow=-1", "schedule parameter slow=-1: the random schedule wants between 0 and 1"),
])
def test_a_bad_spec_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(EmuError, match=re.escape(message)):
        ScheduleSpec.parse(text)


@pytest.mark.parametrize("schedule", ["rr", "random", "pct,depth=2,steps=200", "targeted,p=0.5"])
def test_the_same_spec_gives_the_same_run(schedule: str) -> None:
    a, b = busy(schedule, seed=5), busy(schedule, seed=5)
    assert fingerprint(a) == fingerprint(b)
    assert a.dmesg() == b.dmesg()


def test_boot_is_the_same_under_every_schedule() -> None:
    """So that every schedule of an exploration starts from one booted machine."""
    boots = {Machine(cpus=2, seed=seed, schedule=s).boot().dmesg()
             for seed in (0, 1) for s in ("rr", "random", "pct")}
    assert len(boots) == 1


def test_random_seeds_give_different_interleavings() -> None:
    prints = {fingerprint(busy("random", seed)) for seed in range(4)}
    assert len(prints) == 4


def test_random_rounds_vary_order_and_share_per_cpu() -> None:
    m = Machine(cpus=4, seed=0)
    sched = RandomSchedule(ScheduleSpec("random", 3), 2_000, 20_000, 4)
    plans = [sched.plan(m.cpus, 1_000_000) for _ in range(50)]
    assert len({tuple(c.index for c, _ in p.quanta) for p in plans}) > 10     # the order changes
    assert all(len({q for _, q in p.quanta}) > 1 for p in plans)             # so do the shares
    assert all(p.length // 2 <= q <= p.length for p in plans for _, q in p.quanta)
    rr = RoundRobin(ScheduleSpec("rr", 3), 2_000, 20_000, 4).plan(m.cpus, 1_000_000)
    assert [c.index for c, _ in rr.quanta] == [0, 1, 2, 3] and len({q for _, q in rr.quanta}) == 1


def test_pct_runs_the_top_priority_cpu_and_drops_it_at_change_points() -> None:
    m = Machine(cpus=3, seed=0)
    sched = PctSchedule(ScheduleSpec("pct", 1, (("depth", 3.0), ("steps", 10.0))), 2_000, 20_000, 3)
    assert sorted(sched.priority.values()) == [3, 4, 5]
    assert len(sched.change_points) == 2 and set(sched.change_points.values()) == {1, 2}
    tops = []
    for _ in range(12):
        plan = sched.plan(m.cpus, 1_000_000)
        top, length = plan.quanta[0]
        assert length == plan.length
        assert all(q == max(1, length // 64) for _, q in plan.quanta[1:])
        tops.append(top.index)
    first, change = tops[0], min(sched.change_points)        # applied as round `change` starts
    assert tops[:change - 1] == [first] * (change - 1)
    assert tops[change - 1] != first
    assert sched.priority[first] < 3                              # dropped below every initial one


def test_the_guest_picks_among_queued_tasks_as_the_schedule_says() -> None:
    """Three loops on one CPU: round robin keeps the run queue FIFO, so they
    take turns in a fixed cycle; a random schedule's pick breaks the cycle."""
    def order(schedule: str) -> list[int]:
        m = Machine(cpus=1, seed=0, schedule=schedule).boot()
        pids = [m.shell.spawn(MODE_GETPID_LOOP, "hammer") for _ in range(3)]
        seen: list[int] = []
        for _ in range(150):
            m.run(0.004)
            pid = next(t.pid for t in m.tasks() if m.running_on(t))
            if pid in pids and (not seen or seen[-1] != pid):
                seen.append(pid)
        return seen
    fifo, picked = order("rr"), order("random")
    cycle = fifo[:3]
    assert sorted(cycle) == sorted(set(fifo)) and fifo == (cycle * len(fifo))[:len(fifo)]
    assert picked != (picked[:3] * len(picked))[:len(picked)]


def test_a_targeted_schedule_preempts_exactly_at_its_points() -> None:
    """getpid hammered on both CPUs while a patch of it is in transition: a
    task entering the patched function stops right there, its quantum cut
    short with the timer interrupt pending."""
    m = Machine(cpus=2, seed=1, schedule="targeted,p=1").boot()
    Livepatch.attach(m)
    pids = [m.shell.spawn(MODE_GETPID_LOOP, "hammer") for _ in range(2)]
    m.insmod(MODULES / "test_klp_syscall.ko", f"klp_pids={pids[0]},{pids[1]}")
    points = m.preempt.sets["livepatch: the transition's functions"]
    assert m.symbol_address("__x64_sys_getpid") in points
    stopped_at_a_point = 0
    for _ in range(40):
        before = m.preempt.hits
        m.run(0.0005)
        if m.preempt.hits > before:
            stopped_at_a_point += any(c.engine.reg("rip") in points for c in m.cpus)
    assert stopped_at_a_point > 0
    assert m.preempt.hits > 0


def test_other_schedules_hook_nothing() -> None:
    m = busy("random", seconds=0.05)
    assert m.preempt.hits == 0 and not m.preempt._hooks
