"""kallsyms: address <-> symbol, with sizes and duplicate names in sympos order."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable

from emu.elf.image import Symbol
from emu.elf.module_loader import LoadedModule


@dataclass(frozen=True)
class Location:
    """Where an address falls: symbol, offset, and which image (None: vmlinux)."""
    symbol: Symbol
    offset: int
    module: str | None = None

    def __str__(self) -> str:
        text = f"{self.symbol.name}+{self.offset:#x}/{self.symbol.size:#x}"
        return f"{text} [{self.module}]" if self.module else text


class Kallsyms:
    """Symbol tables of vmlinux and loaded modules.

    Duplicate names keep the kernel's order (by address within an object),
    which is what `old_sympos` counts (1-based).
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._entries: list[tuple[Symbol, str | None]] = []
        self._by_name: dict[str, list[tuple[Symbol, str | None]]] = {}
        self._names: dict[str | None, set[str]] = {}      # object -> the names it added

    def add(self, symbols: Iterable[Symbol], module: str | None = None) -> None:
        """Add an object's sized symbols (asm labels without a size are left out)."""
        for sym in sorted((s for s in symbols if s.size), key=lambda s: s.address):
            i = bisect.bisect_right(self._starts, sym.address)
            self._starts.insert(i, sym.address)
            self._entries.insert(i, (sym, module))
            self._by_name.setdefault(sym.name, []).append((sym, module))
            self._names.setdefault(module, set()).add(sym.name)

    def proc_text(self) -> str:
        """/proc/kallsyms: `address type name`, then `\t[module]` for modules,
        in address order (T/t: global/local text, D/d: data)."""
        lines = []
        for sym, module in self._entries:
            kind = "T" if sym.is_function else "D"
            kind = kind if sym.is_global else kind.lower()
            lines.append(f"{sym.address:016x} {kind} {sym.name}\t[{module}]\n" if module
                         else f"{sym.address:016x} {kind} {sym.name}\n")
        return "".join(lines)

    def module_loaded(self, name: str, image: LoadedModule) -> None:
        self.add(image.symbols, module=name)

    def module_removed(self, name: str, image: LoadedModule) -> None:
        self.remove_module(name)

    def remove_module(self, module: str) -> None:
        names = self._names.pop(module, ())
        own = [sym.address for name in names for sym, m in self._by_name[name] if m == module]
        # a module's symbols lie in its own block of addresses: one run of
        # the sorted table, cut out at once (else every entry is looked at)
        low = min(own, default=0)
        i = bisect.bisect_left(self._starts, low)
        entries = self._entries
        while i < len(entries) and entries[i][1] != module and self._starts[i] == low:
            i += 1                            # another object's symbol at the same address
        j = i
        while j < len(entries) and entries[j][1] == module:
            j += 1
        if j - i == len(own):
            del self._starts[i:j], entries[i:j]
        else:
            keep = [(s, e) for s, e in zip(self._starts, entries) if e[1] != module]
            self._starts = [s for s, _ in keep]
            self._entries = [e for _, e in keep]
        for name in names:
            self._by_name[name] = [e for e in self._by_name[name] if e[1] != module]
            if not self._by_name[name]:
                del self._by_name[name]

    def lookup(self, address: int) -> Location | None:
        """The function or object containing `address`, or None."""
        i = bisect.bisect_right(self._starts, address) - 1
        while i >= 0:
            sym, module = self._entries[i]
            if sym.address <= address < sym.address + max(sym.size, 1):
                return Location(sym, address - sym.address, module)
            if sym.size and sym.address + sym.size <= address:
                return None
            i -= 1
        return None

    def symbolize(self, address: int) -> str:
        loc = self.lookup(address)
        return str(loc) if loc else f"{address:#x}"

    def symbolize_return(self, address: int) -> str:
        """A return address as the kernel's %pB prints it: looked up at
        address-1 (a call may be a function's last instruction)."""
        loc = self.lookup(address - 1)
        if loc is None:
            return f"{address:#x}"
        return str(Location(loc.symbol, loc.offset + 1, loc.module))

    def find(self, name: str, module: str | None = None, sympos: int = 0) -> Symbol | None:
        """A symbol by name within one object; sympos as in klp_func.old_sympos.

        sympos 0 means "the only one" (None if the name is ambiguous).
        """
        matches = [s for s, m in self._by_name.get(name, []) if m == module]
        if sympos == 0:
            return matches[0] if len(matches) == 1 else None
        return matches[sympos - 1] if 0 < sympos <= len(matches) else None

    def sympos(self, name: str, address: int, module: str | None = None) -> int | None:
        """The klp_func.old_sympos that names the symbol `name` at `address` of one
        object (None: vmlinux): 0 when the name is unique in the object, else the
        symbol's 1-based position among the object's symbols of that name in
        kallsyms order, as klp_find_object_symbol counts them; None when the
        object has no such symbol."""
        matches = [s.address for s, m in self._by_name.get(name, []) if m == module]
        if address not in matches:
            return None
        return 0 if len(matches) == 1 else matches.index(address) + 1

    def lookup_name(self, name: str) -> int | None:
        """kallsyms_lookup_name(): the first symbol of that name, vmlinux first."""
        entries = sorted(self._by_name.get(name, []), key=lambda e: e[1] is not None)
        return entries[0][0].address if entries else None

    def count(self, name: str, module: str | None = None) -> int:
        return sum(1 for _, m in self._by_name.get(name, []) if m == module)

    def functions(self, module: str | None = None) -> list[Symbol]:
        return [s for s, m in self._entries if m == module and s.is_function and s.size]
