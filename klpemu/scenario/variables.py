"""Shell variables with bash's dynamic scoping: the globals, and one scope
per running function for its `local`s, looked up innermost first (a
function sees its callers' locals). A value is a string or an indexed
array (index -> string); attributes: exported, readonly, integer.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class VariableError(Exception):
    """An assignment bash refuses (a readonly variable)."""


@dataclass(slots=True)
class Var:
    value: str | dict[int, str] | None      # None: declared, not set
    exported: bool = False
    readonly: bool = False
    integer: bool = False

    def copy(self) -> "Var":
        value = dict(self.value) if isinstance(self.value, dict) else self.value
        return Var(value, self.exported, self.readonly, self.integer)


@dataclass
class Variables:
    globals: dict[str, Var] = field(default_factory=dict)
    scopes: list[dict[str, Var]] = field(default_factory=list)

    def lookup(self, name: str) -> Var | None:
        for scope in reversed(self.scopes):
            var = scope.get(name)
            if var is not None:
                return var
        return self.globals.get(name)

    def get(self, name: str) -> str | None:
        """$NAME: a string's value, an array's element 0; None when unset."""
        var = self.lookup(name)
        if var is None or var.value is None:
            return None
        if isinstance(var.value, dict):
            return var.value.get(0)
        return var.value

    def _home(self, name: str) -> dict[str, Var]:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope
        return self.globals

    def set(self, name: str, value: str, index: int | None = None, append: bool = False) -> Var:
        home = self._home(name)
        var = home.get(name)
        if var is None:
            var = home[name] = Var(None)
        if var.readonly:
            raise VariableError(f"{name}: readonly variable")
        if index is None and not isinstance(var.value, dict):
            var.value = (var.value or "") + value if append else value
        else:
            if not isinstance(var.value, dict):
                var.value = {} if var.value is None else {0: var.value}
            slot = 0 if index is None else index
            if slot < 0:
                slot += (max(var.value) + 1) if var.value else 0
                if slot < 0:
                    raise VariableError(f"{name}[{index}]: bad array subscript")
            var.value[slot] = var.value.get(slot, "") + value if append else value
        return var

    def set_array(self, name: str, items: list[str], append: bool = False) -> Var:
        home = self._home(name)
        var = home.get(name)
        if var is None:
            var = home[name] = Var(None)
        if var.readonly:
            raise VariableError(f"{name}: readonly variable")
        old = var.value if isinstance(var.value, dict) else ({0: var.value} if var.value is not None else {})
        start = (max(old) + 1 if old else 0) if append else 0
        var.value = (dict(old) if append else {}) | {start + k: v for k, v in enumerate(items)}
        return var

    def array(self, name: str) -> dict[int, str]:
        var = self.lookup(name)
        if var is None or var.value is None:
            return {}
        if isinstance(var.value, dict):
            return var.value
        return {0: var.value}

    def declare_local(self, name: str) -> Var:
        """`local NAME`: a variable of the innermost function's scope (unset
        until assigned, as in bash)."""
        scope = self.scopes[-1]
        var = scope.get(name)
        if var is None:
            outer = self.lookup(name)
            var = scope[name] = Var(None, exported=bool(outer and outer.exported))
        return var

    def unset(self, name: str, index: int | None = None) -> None:
        home = self._home(name)
        var = home.get(name)
        if var is None:
            return
        if var.readonly:
            raise VariableError(f"{name}: cannot unset: readonly variable")
        if index is not None and isinstance(var.value, dict):
            var.value.pop(index, None)
            return
        if home is self.globals:
            del home[name]
        else:
            var.value = None         # bash: an unset local stays local (and unset)

    def exported(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for scope in (self.globals, *self.scopes):
            for name, var in scope.items():
                if var.exported and var.value is not None:
                    out[name] = var.value if isinstance(var.value, str) else var.value.get(0, "")
        return out

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for scope in (self.globals, *self.scopes):
            seen.update(dict.fromkeys(scope))
        return sorted(seen)

    def snapshot(self) -> "Variables":
        """A copy for a subshell: its assignments never reach this shell."""
        return Variables({k: v.copy() for k, v in self.globals.items()},
                         [{k: v.copy() for k, v in s.items()} for s in self.scopes])
