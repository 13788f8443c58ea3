"""What the shell derives from a node of the syntax tree once per process
(a word's expansion plan, a command's compiled form), kept by the node's
identity: hashing a tree node hashes all of it, an id is one machine word.

Trees are immutable and cached (interp.parse_program), so a node's id
names it for as long as its entry holds it; the table is emptied when it
reaches its limit, which bounds what the nodes of trees made once and
dropped (an `eval`'d string's) can keep alive.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

N = TypeVar("N")
V = TypeVar("V")


class ByNode(Generic[N, V]):
    __slots__ = ("compute", "entries", "limit")

    def __init__(self, compute: Callable[[N], V], limit: int = 1 << 16) -> None:
        self.compute = compute
        self.entries: dict[int, tuple[N, V]] = {}
        self.limit = limit

    def __call__(self, node: N) -> V:
        entry = self.entries.get(id(node))
        if entry is not None and entry[0] is node:
            return entry[1]
        if len(self.entries) >= self.limit:
            self.entries.clear()
        value = self.compute(node)
        self.entries[id(node)] = (node, value)
        return value
