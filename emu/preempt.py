"""Preemption points: places where a targeted schedule may end a CPU's
quantum exactly there and give it a timer interrupt, so that the other
CPUs run (and the task is preempted, if interrupts are on) at the moment
that matters.

The machine's own points are the stack switches (the instant a task's
stack is swapped, emu.unwind.switches) and the module syscalls' entries;
layers above add theirs by name (the livepatch core: the functions of the
transition's patch, the transition work, cond_resched's switch).
Nothing is hooked until a schedule asks for points (Schedule.preempt_here
is only ever true for the targeted one): a Python hook per hit is not free.
"""
from __future__ import annotations

from typing import Callable

from emu.abi import LOCAL_TIMER_VECTOR
from emu.arch.cpu import Cpu


class PreemptionPoints:
    def __init__(self, cpus: list[Cpu], decide: Callable[[Cpu], bool]) -> None:
        """`decide(cpu)`: does the running schedule preempt here (drawn from its seed)?"""
        self.cpus = cpus
        self.decide = decide
        self.sets: dict[str, frozenset[int]] = {}
        self.hits = 0                       # preemptions made
        self._armed = False
        self._hooks: dict[int, list[Callable[[], None]]] = {}
        self._resuming: set[tuple[int, int]] = set()   # (CPU, point) preempted there, not yet resumed

    def set(self, name: str, addresses: set[int] | frozenset[int]) -> None:
        """(Re)define one named set of points (an empty set removes it)."""
        if addresses:
            self.sets[name] = frozenset(addresses)
        else:
            self.sets.pop(name, None)
        if self._armed:
            self._sync()

    def arm(self, on: bool) -> None:
        """Hook the points (a targeted schedule runs) or take the hooks off."""
        self._armed = on
        self._sync()

    def _sync(self) -> None:
        wanted = set().union(*self.sets.values()) if self._armed and self.sets else set()
        for address in list(self._hooks):
            if address not in wanted:
                for remove in self._hooks.pop(address):
                    remove()
        for address in sorted(wanted - set(self._hooks)):
            self._hooks[address] = [cpu.engine.hook_code_at(address, lambda c=cpu, a=address: self._hit(c, a))
                                    for cpu in self.cpus]

    def _hit(self, cpu: Cpu, address: int) -> None:
        if (cpu.index, address) in self._resuming:      # back where it was preempted: go on
            self._resuming.discard((cpu.index, address))
            return
        if self.decide(cpu):
            self.hits += 1
            self._resuming.add((cpu.index, address))
            cpu.pending.add(LOCAL_TIMER_VECTOR)
            cpu.engine.stop()
