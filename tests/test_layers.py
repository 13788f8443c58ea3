"""The layers, read from the imports (TYPE_CHECKING ones included): emu
(the machine) knows nothing of klp (the livepatch core), klp nothing of
klpemu (the user surfaces), and no package has an import cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("emu", "klp", "klpemu")          # lowest first: data flows down


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (a package's __init__ counts as the package)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                found.add(candidate)
    return found


GRAPH = {name: _imports(name, path, mods) for mods in [_modules()] for name, path in mods.items()}


@pytest.mark.parametrize("package", LAYERS)
def test_no_upward_import(package: str) -> None:
    above = LAYERS[LAYERS.index(package) + 1:]
    upward = sorted((m, t) for m, targets in GRAPH.items() if m.split(".")[0] == package
                    for t in targets if t.split(".")[0] in above)
    assert upward == []


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components of the module graph: all singletons."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_graph_sees_the_imports() -> None:
    """The check is not vacuous: known edges are found, TYPE_CHECKING ones included."""
    assert "emu.runloop" in GRAPH["emu.machine"]
    assert "emu.arch.cpu" in GRAPH["emu.kernel.hypercalls"]          # under TYPE_CHECKING
    assert "klp.transition" in GRAPH["klp.core"]


# emu's parts, each importing only the ones below it (the README's layout)
EMU_RANKS = {"emu.abi": 0, "emu.errors": 0, "emu.snapshot": 1, "emu.time": 1, "emu.arch": 1, "emu.elf": 1, "emu.kernel": 2, "emu.schedule": 2, "emu.preempt": 2,
             "emu.unwind": 3, "emu.runloop": 3, "emu.fs": 4, "emu.faults": 4, "emu.trace": 5, "emu.module": 6,
             "emu.machine": 7, "emu": 8}


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_emu_parts_are_layered() -> None:
    parts = {_part(m) for m in GRAPH if m.split(".")[0] == "emu"}
    assert parts == set(EMU_RANKS)          # a new part gets a place in the order
    wrong = sorted((m, t) for m, targets in GRAPH.items() if m.split(".")[0] == "emu" for t in targets
                   if _part(t) != _part(m) and EMU_RANKS[_part(t)] >= EMU_RANKS[_part(m)])
    assert wrong == []
