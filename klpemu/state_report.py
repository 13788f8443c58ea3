"""The livepatch state of a machine, at a glance (`klpemu run --state`).

What the kernel spreads over sysfs, debugfs and /proc (and partly keeps to
itself): the patches in klp_patches order with their objects and funcs,
each patched function's func_stack (newest first) and how its fentry site
dispatches, the running transition, and every task's patch_state. Also who
blocks that transition (`klpemu run --blocking`, the pytest plugin's report).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from emu.trace.ftrace import NOP5
from klp.core import core_of
from klp.objects import KlpState

if TYPE_CHECKING:
    from emu import Machine
    from klp.transition import Transition

PATCH_STATES = {s.value: s.name.lower() for s in KlpState}
NO_TRANSITION = "livepatch: no transition in progress\n"


def _function(m: "Machine", address: int) -> str:
    """A function's name (and module); a symbolised address if not a start."""
    loc = m.kallsyms.lookup(address)
    if loc is None or loc.offset:
        return m.symbolize(address)
    return f"{loc.symbol.name} [{loc.module}]" if loc.module else loc.symbol.name


def livepatch_state(m: "Machine") -> dict[str, object] | None:
    """The state as plain data (JSON-ready); None without a livepatch core."""
    core = core_of(m)
    if core is None:
        return None
    t = core.transition
    owner = {id(f): p.name for p in core.patches for _, f in p.funcs()}
    patches = [{
        "name": p.name, "enabled": p.enabled, "transition": p is t.patch, "forced": p.forced,
        "replace": p.replace,
        "objects": [{"name": obj.display_name, "patched": obj.patched,
                     "funcs": [{"name": f.sysfs_name, "nop": f.nop, "patched": f.patched,
                                "old_func": _function(m, f.old_func) if f.old_func else None,
                                "new_func": _function(m, f.new_func) if f.new_func and not f.nop else None}
                               for f in obj.funcs]}
                    for obj in p.objs],
    } for p in core.patches]
    stacks = []
    for ops in core.dispatch.ops.values():
        site = m.ftrace.read_site(ops.site)
        how = ("python hook" if core.dispatch.backend == "python" else "nop" if site == NOP5
               else "trampoline" if ops.func_stack[0].transition else "jump")
        stacks.append({"function": _function(m, ops.old_func), "site": how,
                       "func_stack": [{"patch": owner.get(id(f), "?"), "nop": f.nop}
                                      for f in ops.func_stack]})
    tasks = [{"pid": task.pid, "comm": task.comm, "patch_state": PATCH_STATES.get(task.patch_state, "?"),
              "pending": task.patch_pending} for task in m.tasks()]
    transition = (None if t.patch is None else
                  {"patch": t.patch.name, "target": t.target.name.lower(), "tries": t.signals_cnt})
    return {"profile": core.profile.name, "dispatch": core.dispatch.backend, "patches": patches,
            "func_stacks": stacks, "transition": transition, "tasks": tasks}


def running_transition(m: "Machine") -> "Transition | None":
    """The livepatch transition in progress on M, if any."""
    core = core_of(m)
    return core.transition if core is not None and core.transition.patch is not None else None


def blocking_json(m: "Machine") -> dict[str, object] | None:
    """The transition in progress and who blocked its last try, as plain data
    (`klpemu run --json`'s "blocking"); None when none runs."""
    t = running_transition(m)
    if t is None:
        return None
    return {"patch": t.patch.name, "target": t.target.name.lower(), "tries": t.signals_cnt,
            "last_try_ns": t.last_try_ns,
            "tasks": [{"pid": b.pid, "comm": b.comm, "reason": b.reason.value, "detail": b.detail,
                       "stack": list(b.stack)} for b in t.blocking]}


def blocking_report(m: "Machine") -> str:
    """Who blocks the transition in progress, and why, with stacks (the
    transition's report()); empty when none runs."""
    t = running_transition(m)
    return t.report() if t is not None else ""


def format_state(state: dict[str, object] | None) -> str:
    if state is None:
        return "livepatch: no livepatch core on this machine\n"
    out = [f"profile {state['profile']}, {state['dispatch']} dispatch"]
    tr = state["transition"]
    out.append(f"transition: {tr['patch']} -> {tr['target']} ({tr['tries']} tries)" if tr else
               "transition: none")
    out.append("patches (klp_patches order):" if state["patches"] else "patches: none")
    for p in state["patches"]:
        flags = [k for k in ("enabled", "transition", "forced", "replace") if p[k]]
        out.append(f"  {p['name']} [{' '.join(flags) or 'disabled'}]")
        for obj in p["objects"]:
            out.append(f"    {obj['name']}: {'patched' if obj['patched'] else 'not patched'}")
            for f in obj["funcs"]:
                target = "nop" if f["nop"] else f["new_func"]
                out.append(f"      {f['name']}: {f['old_func'] or '(not loaded)'} -> {target}")
    if state["func_stacks"]:
        out.append("func_stack (newest first) and how each fentry site dispatches:")
        for s in state["func_stacks"]:
            stack = ", ".join(e["patch"] + (" (nop)" if e["nop"] else "") for e in s["func_stack"])
            out.append(f"  {s['function']} [{s['site']}]: {stack}")
    out.append("tasks (pid comm patch_state):")
    out.extend(f"  {t['pid']:>5} {t['comm']:<16} {t['patch_state']}{' (pending)' if t['pending'] else ''}"
               for t in state["tasks"])
    return "\n".join(out) + "\n"
