"""Start-up imports only what a command uses: `import emu`, `klpemu --version`
and `klpemu run` of a livepatch scenario load no second ELF reader (lief,
pyelftools), no benchmarks, no argcomplete, and nothing of the explorer's
pool and reports (multiprocessing, xml and the http modules behind it).
Structural (sys.modules of a fresh interpreter), not timed: the times are in
benchmarks/bench_startup.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

UNUSED_AT_START = ("lief", "elftools", "benchmarks", "klpemu.benchmarks", "argcomplete", "ray", "jsonschema",
                   "multiprocessing", "concurrent", "xml", "http", "klpemu.explore.pool",
                   "klpemu.explore.report", "klpemu.explore.command")
LIVEPATCH_SCENARIO = """insmod test_klp_livepatch.ko
echo 0 > /sys/kernel/livepatch/test_klp_livepatch/enabled
while [[ -e /sys/kernel/livepatch/test_klp_livepatch ]]; do sleep 0.1; done
rmmod test_klp_livepatch
"""

LOADED = ("import json, sys\n{code}\n"
          "print(json.dumps(sorted(m for m in sys.modules if m in {unused!r} or m.split('.')[0] in {unused!r})))")


def loaded_after(code: str, unused: tuple[str, ...] = UNUSED_AT_START, env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOADED.format(code=code, unused=unused)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import emu",
    "from klpemu.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass",
])
def test_start_up_imports_nothing_it_does_not_use(code: str) -> None:
    assert loaded_after(code) == []


def test_a_livepatch_run_imports_nothing_it_does_not_use(tmp_path) -> None:
    script = tmp_path / "basic.sh"
    script.write_text(LIVEPATCH_SCENARIO)
    code = f"from klpemu.cli import main\nassert main(['run', {str(script)!r}]) == 0"
    assert loaded_after(code) == []


def test_a_run_with_its_unwind_rows_cached_does_without_capstone(tmp_path) -> None:
    """Capstone is for a cache miss (tracking a function's code), a fault's
    operands and kprobes: the second run of a scenario, its kernel's and
    modules' rows and stack switches on disk, never loads it."""
    script = tmp_path / "basic.sh"
    script.write_text(LIVEPATCH_SCENARIO)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("KLPEMU_NO_UNWIND_CACHE", None)
    code = f"from klpemu.cli import main\nassert main(['run', {str(script)!r}]) == 0"
    assert "capstone" in loaded_after(code, ("capstone",), env)       # the first run tracks the code
    assert loaded_after(code, ("capstone",), env) == []


def test_the_console_script_answers_version_without_the_machine() -> None:
    code = ("import sys\nsys.argv = ['klpemu', '--version']\nfrom klpemu.entry import main\nassert main() == 0\n"
            "print(sorted(m for m in ('emu', 'klp', 'klpemu.cli', 'unicorn', 'capstone') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version_line, loaded = out.stdout.splitlines()
    assert version_line.startswith("klpemu ") and loaded == "[]"
