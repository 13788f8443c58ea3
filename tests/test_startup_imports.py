"""Start-up imports only what a command uses: `import emu` and `klpemu --version`
load no second ELF reader (lief, pyelftools), no benchmarks and no argcomplete.
Structural (sys.modules of a fresh interpreter), not timed: the times are in
benchmarks/bench_startup.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

UNUSED_AT_START = ("lief", "elftools", "benchmarks", "klpemu.benchmarks", "argcomplete", "ray", "jsonschema")

LOADED = ("import json, sys\n{code}\n"
          "print(json.dumps(sorted(m for m in sys.modules if m in {unused!r} or m.split('.')[0] in {unused!r})))")


def loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c",
                          LOADED.format(code=code, unused=UNUSED_AT_START)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import emu",
    "from klpemu.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass",
])
def test_start_up_imports_nothing_it_does_not_use(code: str) -> None:
    assert loaded_after(code) == []


def test_the_console_script_answers_version_without_the_machine() -> None:
    code = ("import sys\nsys.argv = ['klpemu', '--version']\nfrom klpemu.entry import main\nassert main() == 0\n"
            "print(sorted(m for m in ('emu', 'klp', 'klpemu.cli', 'unicorn', 'capstone') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version_line, loaded = out.stdout.splitlines()
    assert version_line.startswith("klpemu ") and loaded == "[]"
