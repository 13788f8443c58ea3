"""`klpemu run --json` output, validated against klpemu/schemas/run.schema.json,
for a passing, a failing, a skipping and a blocked run."""
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from klpemu.cli import main

SCHEMA = json.loads(resources.files("klpemu").joinpath("schemas/run.schema.json").read_text())

PASSING = """start_test "ok"
load_lp test_klp_livepatch
disable_lp test_klp_livepatch
unload_lp test_klp_livepatch
"""
FAILING = """start_test "wrong"
log "livepatch: something"
check_result "livepatch: something else"
"""
SKIPPING = """skip "not here"
"""
BLOCKED = """insmod klpemu_test_target.ko sleeper=1
insmod klpemu_test_patch.ko
sleep 2
"""


def run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, dict]:
    script = tmp_path / "s.sh"
    script.write_text(text)
    code = main(["run", str(script), "--cpus", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, SCHEMA)
    return code, data


def test_the_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_passing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(tmp_path, capsys, PASSING)
    assert code == 0 and data["ok"] and data["exit_code"] == 0
    assert [s["verb"] for s in data["steps"]] == ["start_test", "load_lp", "disable_lp", "unload_lp"]
    assert "livepatch: 'test_klp_livepatch': patching complete" in data["dmesg"]
    assert data["virtual_time_ns"] > 0 and data["wall_time_s"] > 0
    assert data["blocking"] is None


def test_failing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(tmp_path, capsys, FAILING)
    assert code == 1 and not data["ok"]
    assert data["failures"] == ["ERROR: livepatch kselftest(s) failed"]
    assert [s["ok"] for s in data["steps"]] == [True, True, False]


def test_skipping_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(tmp_path, capsys, SKIPPING)
    assert code == 4 and data["skipped"] == "not here"


def test_blocked_run_names_the_blocking_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(tmp_path, capsys, BLOCKED)
    assert code == 0
    blocking = data["blocking"]
    assert blocking["patch"] == "klpemu_test_patch" and blocking["target"] == "patched"
    (task,) = [t for t in blocking["tasks"] if t["comm"] == "klpemu_sleeper"]
    assert task["reason"] == "is sleeping on function" and task["detail"] == "klpemu_test_sleep"
    assert task["stack"][0].startswith("__schedule+")


STATE = """load_lp test_klp_livepatch
insmod klpemu_test_target.ko sleeper=1
insmod klpemu_test_patch.ko
sleep 1
"""


def test_state_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.sh"
    script.write_text(STATE)
    assert main(["run", str(script), "--cpus", "1", "--json", "--state"]) == 0
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, SCHEMA)
    state = data["state"]
    assert [p["name"] for p in state["patches"]] == ["test_klp_livepatch", "klpemu_test_patch"]
    assert state["transition"]["patch"] == "klpemu_test_patch"
    sites = {s["function"]: s["site"] for s in state["func_stacks"]}
    assert sites["cmdline_proc_show"] == "jump"                      # outside a transition
    assert sites["klpemu_test_sleep [klpemu_test_target]"] == "trampoline"
    sleeper = next(t for t in state["tasks"] if t["comm"] == "klpemu_sleeper")
    assert sleeper["patch_state"] == "unpatched" and sleeper["pending"]


def test_state_as_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.sh"
    script.write_text(STATE)
    assert main(["run", str(script), "--cpus", "1", "--state", "--dispatch", "python"]) == 0
    text = capsys.readouterr().out.split("\n--- livepatch state ---\n")[1]
    assert text.startswith("profile 6.13, python dispatch\ntransition: klpemu_test_patch -> patched")
    assert "  cmdline_proc_show [python hook]: test_klp_livepatch" in text.splitlines()
    assert "      cmdline_proc_show,1: cmdline_proc_show -> livepatch_cmdline_proc_show [test_klp_livepatch]" \
        in text.splitlines()
