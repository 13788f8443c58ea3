"""Where klpemu's own data is: the scenario scripts (the ported selftests,
the demos) are `scenarios/` in a source tree and `klpemu/scenarios/` in an
installed wheel (pyproject.toml maps one to the other)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
SCENARIOS = next((p for p in (_HERE / "scenarios", _HERE.parent / "scenarios") if p.is_dir()),
                 _HERE / "scenarios")
SOURCE_TREE = _HERE.parent if (_HERE.parent / "pyproject.toml").is_file() else None
