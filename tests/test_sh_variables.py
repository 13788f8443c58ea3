"""Variables' scopes (bash's dynamic scoping), through the index that makes
a lookup one dict access: after each change, every name means what a
search of the scopes, innermost first, then the globals, finds."""
from klpemu.scenario.variables import Var, Variables


def searched(v: Variables, name: str) -> Var | None:
    for scope in reversed(v.scopes):
        if name in scope:
            return scope[name]
    return v.globals.get(name)


def agrees(v: Variables) -> bool:
    names = set(v.globals).union(*v.scopes) | {"x", "y", "z"}
    return all(v.lookup(n) is searched(v, n) for n in names)


def test_lookups_follow_scopes_as_they_come_and_go() -> None:
    v = Variables()
    v.set("x", "global")
    v.push_scope()
    v.declare_local("x").value = "f"
    v.set("y", "made global from f")
    assert v.get("x") == "f" and agrees(v)
    v.push_scope()
    v.declare_local("y")
    assert v.get("y") is None and agrees(v)          # local y: declared, not set
    v.set("y", "g")
    v.unset("x")                                     # f's x: stays f's, unset
    assert v.get("x") is None and agrees(v)
    v.pop_scope()
    assert v.get("y") == "made global from f" and v.get("x") is None and agrees(v)
    v.pop_scope()
    assert v.get("x") == "global" and agrees(v)
    v.unset("x")
    v.new_global("z").value = "z"
    v.set_array("y", ["a", "b"])
    assert v.lookup("x") is None and v.array("y") == {0: "a", 1: "b"} and v.get("z") == "z" and agrees(v)


def test_a_snapshot_has_its_own_index() -> None:
    v = Variables()
    v.set("x", "global")
    v.push_scope()
    v.declare_local("x").value = "local"
    copy = v.snapshot()
    copy.pop_scope()
    assert copy.get("x") == "global" and v.get("x") == "local" and agrees(copy) and agrees(v)
