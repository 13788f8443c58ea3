"""Shell variables with bash's dynamic scoping: the globals, and one scope
per running function for its `local`s, looked up innermost first (a
function sees its callers' locals). A value is a string or an indexed
array (index -> string); attributes: exported, readonly, integer.
"""
from __future__ import annotations

from dataclasses import dataclass


class VariableError(Exception):
    """An assignment bash refuses (a readonly variable)."""


@dataclass(slots=True)
class Var:
    value: str | dict[int, str] | None      # None: declared, not set
    exported: bool = False
    readonly: bool = False
    integer: bool = False


class Variables:
    """The globals and the function scopes (innermost last), with an index
    of what each name means now: a lookup is one dict access however deep
    the calls are. Scopes come and go by push_scope/pop_scope, globals are
    made by set, set_array or new_global, so that the index keeps up."""

    def __init__(self, globals: dict[str, Var] | None = None, scopes: list[dict[str, Var]] | None = None) -> None:
        self.globals: dict[str, Var] = {} if globals is None else globals
        self.scopes: list[dict[str, Var]] = [] if scopes is None else scopes
        # name -> (the variable it means, the dict that holds it)
        self._visible: dict[str, tuple[Var, dict[str, Var]]] = {}
        # per scope: what each of its names meant before it (None: nothing)
        self._shadowed: list[dict[str, tuple[Var, dict[str, Var]] | None]] = []
        for name, var in self.globals.items():
            self._visible[name] = (var, self.globals)
        for scope in self.scopes:
            self._shadowed.append({name: self._visible.get(name) for name in scope})
            for name, var in scope.items():
                self._visible[name] = (var, scope)

    def lookup(self, name: str) -> Var | None:
        entry = self._visible.get(name)
        return None if entry is None else entry[0]

    def get(self, name: str) -> str | None:
        """$NAME: a string's value, an array's element 0; None when unset."""
        entry = self._visible.get(name)
        if entry is None:
            return None
        value = entry[0].value
        if isinstance(value, dict):
            return value.get(0)
        return value

    def _home(self, name: str) -> dict[str, Var]:
        entry = self._visible.get(name)
        return self.globals if entry is None else entry[1]

    def _var(self, name: str) -> Var:
        """NAME's variable, made a global (unset) when there is none."""
        entry = self._visible.get(name)
        if entry is not None:
            return entry[0]
        return self.new_global(name)

    def new_global(self, name: str) -> Var:
        """A new global NAME (declared, not set), where no variable NAME is."""
        var = self.globals[name] = Var(None)
        self._visible[name] = (var, self.globals)
        return var

    def push_scope(self) -> None:
        """A function's (or a prefix assignment's) scope begins."""
        self.scopes.append({})
        self._shadowed.append({})

    def pop_scope(self) -> None:
        """The innermost scope ends: its names mean what they meant before
        it (what they meant cannot have changed meanwhile: a name's outer
        variables are out of reach while a local hides them)."""
        self.scopes.pop()
        visible = self._visible
        for name, before in self._shadowed.pop().items():
            if before is None:
                del visible[name]
            else:
                visible[name] = before

    def set(self, name: str, value: str, index: int | None = None, append: bool = False) -> Var:
        var = self._var(name)
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
        var = self._var(name)
        if var.readonly:
            raise VariableError(f"{name}: readonly variable")
        if not append:
            var.value = dict(enumerate(items))
            return var
        old = var.value if isinstance(var.value, dict) else ({0: var.value} if var.value is not None else {})
        start = max(old) + 1 if old else 0
        var.value = dict(old) | {start + k: v for k, v in enumerate(items)}
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
            before = self._visible.get(name)
            var = scope[name] = Var(None, exported=bool(before and before[0].exported))
            self._shadowed[-1][name] = before
            self._visible[name] = (var, scope)
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
            del self._visible[name]
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
        """A copy for a subshell: its assignments never reach this shell.
        (Each variable copied and indexed in one pass: a subshell copies them all.)"""
        copy = Variables.__new__(Variables)
        visible: dict[str, tuple[Var, dict[str, Var]]] = {}
        scopes: list[dict[str, Var]] = []
        shadowed: list[dict[str, tuple[Var, dict[str, Var]] | None]] = []
        for scope in (self.globals, *self.scopes):
            new: dict[str, Var] = {}
            if scopes:
                shadowed.append({name: visible.get(name) for name in scope})
            for name, var in scope.items():
                value = var.value
                new[name] = c = Var(dict(value) if type(value) is dict else value, var.exported, var.readonly,
                                    var.integer)
                visible[name] = (c, new)
            scopes.append(new)
        copy.globals = scopes[0]
        copy.scopes = scopes[1:]
        copy._visible = visible
        copy._shadowed = shadowed
        return copy
