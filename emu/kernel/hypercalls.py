"""Guest -> Python services, registered by decorator under their HC_* name.

A handler is `fn(machine, cpu, a0, a1, a2, a3) -> int` (its C prototype is in
the docstring). A `blocking` handler may call back into the guest: it runs
as a continuation and gets a ServiceContext first (see guestcall.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emu.abi import HYPERCALLS


@dataclass(frozen=True)
class Hypercall:
    number: int
    name: str
    handler: Callable[..., int | None]
    blocking: bool


REGISTRY: dict[int, Hypercall] = {}


def hypercall(name: str, *, blocking: bool = False) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
    def register(fn: Callable[..., int | None]) -> Callable[..., int | None]:
        number = HYPERCALLS[name]
        if number in REGISTRY:
            raise ValueError(f"hypercall {name} registered twice")
        REGISTRY[number] = Hypercall(number, name, fn, blocking)
        return fn
    return register
