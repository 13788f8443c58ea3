"""The transition's event log and its picture (`klpemu run --timeline`), on
a real transition that a sleeping task blocks."""
import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from klpemu.cli import main
from klpemu.timeline import svg_timeline, text_timeline

SCHEMA = json.loads(resources.files("klpemu").joinpath("schemas/run.schema.json").read_text())
SVG = "{http://www.w3.org/2000/svg}"
STALL = """insmod klpemu_test_target.ko sleeper=1
insmod klpemu_test_patch.ko
sleep 3
"""
COMPLETES = STALL + """echo 1 > /sys/module/klpemu_test_target/parameters/release
sleep 2
echo 0 > /sys/kernel/livepatch/klpemu_test_patch/enabled
sleep 2
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *extra: str) -> tuple[int, dict]:
    script = tmp_path / "s.sh"
    script.write_text(text)
    code = main(["run", str(script), "--cpus", "2", "--seed", "3", "--json", *extra])
    data = json.loads(capsys.readouterr().out)
    jsonschema.validate(data, SCHEMA)
    return code, data


def test_a_blocked_transitions_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run(tmp_path, capsys, STALL)
    assert code == 0 and data["schema"] == 2
    events = data["events"]
    phases = [e["state"] for e in events if e["kind"] == "patch"]
    assert phases == ["enabling", "initializing", "start"]           # never completes
    tries = [e for e in events if e["kind"] == "try"]
    assert tries and {(e["comm"], e["reason"], e["detail"]) for e in tries} >= {
        ("klpemu_sleeper", "is sleeping on function", "klpemu_test_sleep")}
    sleeper = [e["state"] for e in events if e["kind"] == "task" and e["comm"] == "klpemu_sleeper"]
    assert sleeper == ["unpatched"]
    assert all(a["t_ns"] <= b["t_ns"] for a, b in zip(events, events[1:]))
    # the kernel log keeps its timestamps, each step its output
    start = next(e["t_ns"] for e in events if e.get("state") == "start")
    assert {"t_ns": start, "level": 5, "text": "livepatch: 'klpemu_test_patch': starting patching transition"} \
        in data["kernel_log"]
    assert [s["output"] for s in data["steps"]] == ["", "", ""]


def test_a_step_keeps_its_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run(tmp_path, capsys, "echo hello\ncat /nonexistent\n")
    assert data["steps"][0]["output"] == "hello\n"
    assert "No such file or directory" in data["steps"][1]["output"]
    assert data["events"] == []


def test_a_completed_transition_and_its_reverse_direction(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, data = run(tmp_path, capsys, COMPLETES)
    events = data["events"]
    phases = [(e["state"], e.get("detail")) for e in events if e["kind"] == "patch"]
    assert phases == [("enabling", None), ("initializing", None), ("start", "patched"), ("complete", "patched"),
                      ("initializing", None), ("start", "unpatched"), ("complete", "unpatched")]
    sleeper = [e["state"] for e in events if e["kind"] == "task" and e["comm"] == "klpemu_sleeper"]
    assert sleeper == ["unpatched", "patched", "idle", "patched", "unpatched", "idle"]


def test_same_seed_same_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first = run(tmp_path, capsys, STALL)
    _, again = run(tmp_path, capsys, STALL)
    assert first["events"] == again["events"] and first["kernel_log"] == again["kernel_log"]


def test_the_timeline_has_a_lane_per_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.svg"
    code, data = run(tmp_path, capsys, STALL, "--timeline", str(out))
    assert code == 0
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert texts[0] == "s.sh: klpemu_test_patch"
    tasks = {f"{e['comm']}:{e['pid']}" for e in data["events"] if e["kind"] == "task"}
    assert len(tasks) >= 4 and any(t.startswith("klpemu_sleeper:") for t in tasks)
    assert tasks <= set(texts)                                 # a lane label per task
    assert "patching starts" in texts and "patching still running at the end" in texts
    assert "0.0 s" in texts and "3.0 s" in texts               # the time axis, in 0.5 s ticks
    titles = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    assert any("klp_try_switch_task: klpemu_sleeper:" in t and "is sleeping on function klpemu_test_sleep" in t
               for t in titles)
    assert any(t.startswith("failed tries: ") and "sleeping on klpemu_test_sleep" in t for t in texts)


def test_a_run_without_a_livepatch_draws_an_empty_timeline() -> None:
    root = ET.fromstring(svg_timeline([], 2_000_000_000, "s.sh: no livepatch transition"))
    assert "".join(next(root.iter(f"{SVG}text")).itertext()) == "s.sh: no livepatch transition"


def test_an_unwritable_timeline_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "s.sh"
    script.write_text("true\n")
    assert main(["run", str(script), "--cpus", "1", "--timeline", str(tmp_path / "no" / "t.svg")]) == 2
    assert f"klpemu: --timeline: cannot write {tmp_path / 'no' / 't.svg'}: No such file or directory" \
        in capsys.readouterr().err


def test_the_text_form_sums_up_a_stalled_and_a_completed_transition(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, stalled = run(tmp_path, capsys, STALL)
    text = text_timeline(stalled["events"], stalled["virtual_time_ns"])
    lines = text.splitlines()
    assert lines[0] == "transitions:" and "patching" in lines[1] and lines[1].endswith("still running at the end")
    sleeper = next(line for line in lines if line.lstrip().startswith("klpemu_sleeper:"))
    assert "unpatched at" in sleeper and "× is sleeping on function klpemu_test_sleep" in sleeper
    assert any("] klpemu_test_patch: start → patched" in line for line in lines)
    assert any("klp_try_switch_task: is sleeping on function klpemu_test_sleep" in line for line in lines)
    _, done = run(tmp_path, capsys, COMPLETES)
    spans = text_timeline(done["events"], done["virtual_time_ns"]).split("tasks:")[0].splitlines()[1:]
    assert [s.split(": ")[1].split(" (")[0] for s in spans] == ["patching", "unpatching"]
    assert text_timeline([], 0) == "no livepatch transition recorded"


def test_an_oops_is_marked_on_the_lane_of_the_task_it_killed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The patch's new function dereferences NULL: the shell reading
    /proc/cmdline oopses, and the picture says when, whose task, and why."""
    out = tmp_path / "t.svg"
    code, data = run(tmp_path, capsys, "insmod klpemu_hostile_lp_null.ko\nsleep 2\ncat /proc/cmdline\nsleep 1\n",
                     "--timeline", str(out))
    assert code == 3
    root = ET.parse(out).getroot()
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "oops: sh:1" in texts and "oops" in texts           # the mark's label, and the legend's
    titles = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    oops_t = next(r["t_ns"] for r in data["kernel_log"] if r["text"].startswith("BUG: kernel NULL pointer"))
    assert f"{oops_t / 1e9:.6f} s: BUG: kernel NULL pointer dereference, address: 0000000000000000 (sh:1)" in titles
    assert "sh:1" in texts                                     # on the shell's own lane
