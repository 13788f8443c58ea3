"""Schedules: how the run loop interleaves the CPUs, decided by a strategy
from a seed (same spec, same run, byte for byte).

Each round the strategy gives the round's length, the order the runnable
CPUs run in and each one's share of the round (a CPU that gets less is
one that was slower in that stretch of time); it places each CPU's timer
tick within its jiffy, and it names the queued task the guest scheduler
picks next where the kernel leaves the choice free (pcpu.sched_pick).

Strategies (ScheduleSpec.strategy):
- `rr`: every CPU the same seeded quantum, in CPU order, ticks on the
  jiffy, FIFO run queues (klpemu before schedules existed);
- `random`: all of the above seeded-random per round and per CPU;
- `pct`: PCT (Burckhardt et al., ASPLOS 2010) over the CPUs: random
  priorities; in each round the highest-priority runnable CPU runs the
  round and every other one only 1/`starve` of it (a kernel spins on
  locks, so a CPU that never ran would hang the rest: real PCT assumes
  threads that do not wait on each other); at depth-1 random change
  points (rounds in [1, steps]) the CPU that ran on top drops below every
  other. PCT's bound, a depth-d bug found with probability at least
  1/(n k^(d-1)) for n CPUs and k steps, holds for bugs whose window the
  starved CPUs do not close on their own;
- `targeted`: random, plus preemption exactly where livepatch cares (see
  emu.targets): a CPU reaching such a place ends its quantum there and
  takes a timer interrupt, with probability `p`.

A spec reads and prints as `strategy:seed[,name=value...]` (e.g.
`pct:7,depth=3,steps=4000`): the schedule id a replay names.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from emu.arch.cpu import Cpu
from emu.errors import EmuError
from emu.time import NS_PER_INSN, TICK_NS

STRATEGIES = ("rr", "random", "pct", "targeted")
PARAMS = {                        # each strategy's parameters and their defaults
    "rr": {},
    "random": {"jitter": 1.0, "slow": 0.5},
    "pct": {"depth": 3, "steps": 2000, "starve": 64, "jitter": 1.0},
    "targeted": {"p": 0.5, "jitter": 1.0, "slow": 0.5},
}
# what each parameter may be: (lowest, highest or None, a whole number)
RANGES = {"jitter": (0.0, 1.0, False), "slow": (0.0, 1.0, False), "p": (0.0, 1.0, False),
          "depth": (1.0, None, True), "steps": (1.0, None, True), "starve": (1.0, None, True)}


@dataclass(frozen=True)
class ScheduleSpec:
    strategy: str = "random"
    seed: int = 0
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise EmuError(f"unknown schedule strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        known = PARAMS[self.strategy]
        for name, value in self.params:
            if name not in known:
                raise EmuError(f"the {self.strategy} schedule has no parameter {name!r}"
                               + (f" (it takes {', '.join(known)})" if known else " (it takes none)"))
            low, high, whole = RANGES[name]
            if not math.isfinite(value) or value < low or (high is not None and value > high) \
                    or (whole and value != int(value)):
                want = f"a whole number >= {low:g}" if whole else f"between {low:g} and {high:g}"
                raise EmuError(f"schedule parameter {name}={value:g}: the {self.strategy} schedule wants {want}")

    def param(self, name: str) -> float:
        return dict(self.params).get(name, PARAMS[self.strategy][name])

    @classmethod
    def parse(cls, text: str, seed: int | None = None) -> "ScheduleSpec":
        """`strategy[:seed][,name=value...]`; `seed` (if given) overrides the one in the text."""
        head, *rest = text.split(",")
        strategy, _, seed_text = head.partition(":")
        params = []
        for item in rest:
            name, eq, value = item.partition("=")
            if not eq:
                raise EmuError(f"schedule parameter {item!r} is not NAME=VALUE")
            try:
                params.append((name.strip(), float(value)))
            except ValueError:
                raise EmuError(f"schedule parameter {name!r} needs a number, not {value!r}") from None
        try:
            parsed_seed = int(seed_text) if seed_text else 0
        except ValueError:
            raise EmuError(f"schedule seed {seed_text!r} is not an integer") from None
        return cls(strategy.strip() or "random", parsed_seed if seed is None else seed, tuple(sorted(params)))

    def __str__(self) -> str:
        extra = "".join(f",{name}={value:g}" for name, value in self.params)
        return f"{self.strategy}:{self.seed}{extra}"


@dataclass
class Round:
    """One round: the CPUs in the order they run, each with its instructions,
    and the round's length in instructions (what the clock advances by)."""
    quanta: list[tuple[Cpu, int]]
    length: int


class Schedule:
    """A strategy's decisions, drawn from its own seeded generator."""

    def __init__(self, spec: ScheduleSpec, quantum_min: int, quantum_max: int, nr_cpus: int) -> None:
        self.spec = spec
        self.params = {name: spec.param(name) for name in PARAMS[spec.strategy]}   # looked up every round
        self.rng = random.Random(spec.seed)
        self.quantum_min, self.quantum_max = quantum_min, quantum_max
        self.nr_cpus = nr_cpus
        self.rounds = 0

    def plan(self, runnable: list[Cpu], span: int) -> Round:
        """The next round over `runnable` (in CPU order), at most `span` instructions long."""
        raise NotImplementedError

    def next_tick(self, cpu: Cpu, now_ns: int) -> int:
        """When `cpu` takes its next timer tick: within the next jiffy."""
        return (now_ns // TICK_NS + 1) * TICK_NS

    def pick(self, cpu: Cpu) -> int:
        """pcpu.sched_pick for `cpu`'s next quantum: 0 runs the queue in FIFO order."""
        return 0

    def preempt_here(self, cpu: Cpu) -> bool:
        """A targeted place was reached on `cpu`: end its quantum here?"""
        return False

    def _length(self, span: int) -> int:
        return min(self.rng.randint(self.quantum_min, self.quantum_max), span)


class RoundRobin(Schedule):
    def plan(self, runnable: list[Cpu], span: int) -> Round:
        q = self._length(span)
        return Round([(cpu, q) for cpu in runnable], q)


class RandomSchedule(Schedule):
    """Per round: a random length; the CPUs in a random order, each running a
    random share (down to 1 - slow) of it; per tick a random phase within
    the first `jitter` of the jiffy; per quantum a random queue pick."""

    def plan(self, runnable: list[Cpu], span: int) -> Round:
        length = self._length(span)
        order = list(runnable)
        self.rng.shuffle(order)
        slow = self.params["slow"]
        return Round([(cpu, max(1, round(length * (1 - slow * self.rng.random())))) for cpu in order], length)

    def next_tick(self, cpu: Cpu, now_ns: int) -> int:
        phase = int(self.rng.random() * self.params["jitter"] * (TICK_NS - NS_PER_INSN))
        boundary = (now_ns // TICK_NS + 1) * TICK_NS
        return boundary + phase if boundary + phase > now_ns else boundary + TICK_NS

    def pick(self, cpu: Cpu) -> int:
        return self.rng.getrandbits(16)


class PctSchedule(RandomSchedule):
    """PCT over CPUs: priorities are a random permutation (CPU index ->
    priority, higher runs); change points are depth-1 distinct rounds in
    [1, steps]; at change point i the CPU that ran on top drops to priority
    depth-1-i (below every initial one, which start at depth)."""

    def __init__(self, spec: ScheduleSpec, quantum_min: int, quantum_max: int, nr_cpus: int) -> None:
        super().__init__(spec, quantum_min, quantum_max, nr_cpus)
        depth, steps = int(spec.param("depth")), int(spec.param("steps"))
        order = list(range(nr_cpus))
        self.rng.shuffle(order)
        self.priority = {cpu: depth + rank for rank, cpu in enumerate(order)}
        points = self.rng.sample(range(1, steps + 1), min(depth - 1, steps))
        self.change_points = {point: depth - 1 - i for i, point in enumerate(sorted(points))}
        self._last: Cpu | None = None

    def plan(self, runnable: list[Cpu], span: int) -> Round:
        self.rounds += 1
        if self._last is not None and self.rounds in self.change_points:
            self.priority[self._last.index] = self.change_points[self.rounds]
        order = sorted(runnable, key=lambda cpu: -self.priority[cpu.index])
        self._last = order[0]
        length = self._length(span)
        starved = max(1, length // int(self.params["starve"]))
        return Round([(order[0], length), *((cpu, starved) for cpu in order[1:])], length)


class TargetedSchedule(RandomSchedule):
    def preempt_here(self, cpu: Cpu) -> bool:
        return self.rng.random() < self.params["p"]


_CLASSES = {"rr": RoundRobin, "random": RandomSchedule, "pct": PctSchedule, "targeted": TargetedSchedule}


def make_schedule(spec: ScheduleSpec, quantum_min: int, quantum_max: int, nr_cpus: int) -> Schedule:
    return _CLASSES[spec.strategy](spec, quantum_min, quantum_max, nr_cpus)
