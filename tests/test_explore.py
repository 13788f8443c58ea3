"""klpemu explore: schedules forked from one booted machine, outcomes
classified on real guests (a real oops, a real hang, a real blocked
transition, a check_result diff), the same bytes as the replay line, and
the same table from the in-process runner and the local pool."""
from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from emu.schedule import ScheduleSpec
from klpemu.explore.fork import Script, Zygote, run_session
from klpemu.explore.outcome import CHECK_RESULT, HANG, OOPS, PASS, STALLED, check_result_diff, normalise
from klpemu.explore.pool import Run, run_local
from klpemu.explore.summary import replay_command, summarize
from klpemu.session import RunConfig, ScenarioSession

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads(resources.files("klpemu").joinpath("schemas/explore.schema.json").read_text())

BASIC = """\
setup_config
start_test "basic function patching"
load_lp test_klp_livepatch
disable_lp test_klp_livepatch
unload_lp test_klp_livepatch
"""
WRONG = BASIC + """check_result "% insmod test_modules/test_klp_livepatch.ko
livepatch: enabling patch 'test_klp_livepatch'"
"""
STALL = """\
insmod klpemu_test_target.ko sleeper=1
insmod klpemu_test_patch.ko
sleep 3
"""
OOPS_SCRIPT = """\
echo EXCEPTION > /sys/kernel/debug/provoke-crash/DIRECT
"""


def outcome_of(script: str, schedule: str = "random:0", config: RunConfig = RunConfig()):
    return Zygote(config, Script(script)).run(ScheduleSpec.parse(schedule))


def test_a_pass() -> None:
    o = outcome_of(BASIC)
    assert (o.kind, o.key) == (PASS, "")
    assert len(o.transitions_ns) == 1 and 0 < o.transitions_ns[0] < 2_000_000_000


def test_a_check_result_diff_is_grouped_by_its_normalised_text() -> None:
    o = outcome_of(WRONG)
    assert o.kind == CHECK_RESULT
    assert "+livepatch: 'test_klp_livepatch': starting patching transition" in o.detail
    assert o.key == normalise(o.detail)


def test_a_blocked_transition_is_grouped_by_what_blocks_it() -> None:
    o = outcome_of(STALL)
    assert o.kind == STALLED
    assert o.key == "'klpemu_test_patch' blocked by klpemu_test_sleep"
    assert dict(o.blocked_on)["klpemu_test_sleep"] >= 2


def test_a_real_oops_is_grouped_by_where_and_why() -> None:
    o = outcome_of(OOPS_SCRIPT)
    assert o.kind == OOPS, o
    assert o.key.startswith("lkdtm_")
    assert "Call Trace:" in o.detail


def test_a_real_hang_is_a_hang() -> None:
    o = outcome_of("echo HARDLOCKUP > /sys/kernel/debug/provoke-crash/DIRECT\n",
                   config=RunConfig(watchdog_thresh_s=1.0))
    assert o.kind == HANG, o
    assert "hard LOCKUP" in o.key


def test_a_forked_run_is_the_replay_line_byte_for_byte(tmp_path: Path) -> None:
    """The child forked from the booted zygote, a fresh session in this
    process, and `klpemu run` with the replay line: one kernel log."""
    script = tmp_path / "s.sh"
    script.write_text(BASIC)
    run = Run(0, RunConfig(cpus=2), ScheduleSpec.parse("pct:3,depth=2,steps=300"))
    forked = Zygote(run.config, Script(BASIC)).run(run.schedule)

    out = io.StringIO()
    fresh = run_session(ScenarioSession(run.config, out), out, Script(BASIC), run.schedule)
    assert forked == fresh
    line = replay_command(str(script), run)
    cli = subprocess.run([sys.executable, "-m", "klpemu.cli", *shlex.split(line)[1:]],
                         capture_output=True, text=True, cwd=ROOT)
    log = cli.stdout.split("\n--- kernel log ---\n", 1)[1]
    assert hashlib.sha256(log.encode()).hexdigest() == forked.dmesg_sha256


def test_the_pool_gives_the_in_process_table() -> None:
    runs = [Run(i, RunConfig(cpus=c), ScheduleSpec("random", s))
            for i, (c, s) in enumerate((c, s) for c in (1, 2) for s in range(3))]
    here = list(run_local(runs, Script(STALL), jobs=1))
    pooled = list(run_local(runs, Script(STALL), jobs=2))
    assert [(r.index, o) for r, o in here] == [(r.index, o) for r, o in pooled]


def test_stop_on_first_stops_early() -> None:
    runs = [Run(i, RunConfig(), ScheduleSpec("random", i)) for i in range(5)]
    got = list(run_local(runs, Script(WRONG), jobs=1, stop=lambda o: o.kind != PASS))
    assert len(got) == 1


def test_the_json_follows_its_schema(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text(STALL)
    cli = subprocess.run([sys.executable, "-m", "klpemu.cli", "explore", str(script), "--runs", "3", "--jobs", "1",
                          "--json", "--minimize", "--report", str(tmp_path / "r.svg")],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 1, cli.stderr
    doc = json.loads(cli.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["classes"][0]["kind"] == STALLED and doc["classes"][0]["count"] == 3
    assert doc["minimized"]["cpus"] == 1                      # one CPU still blocks
    report = ET.parse(tmp_path / "r.svg").getroot()           # with the minimized stalled run's timeline
    texts = ["".join(t.itertext()) for t in report.iter("{http://www.w3.org/2000/svg}text")]
    assert f"{script.name}: klpemu_test_patch" in texts and "patching still running at the end" in texts
    assert any(t.startswith("klpemu_sleeper:") for t in texts)
    assert f"the minimized failing schedule: {doc['minimized']['replay']}" in texts
    assert not any(t.startswith("swapper/1:") for t in texts)  # one CPU: one idle task


def test_check_result_diff_reads_the_selftests_output() -> None:
    out = "TEST: x ... not ok\n\n--- expected\n+++ result\n@@ -1,2 +1,3 @@\n a\n-b\n+c\n\nERROR: x\n"
    assert check_result_diff(out) == "-b\n+c"
    assert check_result_diff("TEST: x ... ok\n") is None


def test_summary_counts_and_replays() -> None:
    runs = [Run(i, RunConfig(), ScheduleSpec("random", i)) for i in range(2)]
    results = list(run_local(runs, Script(STALL), jobs=1))
    doc = summarize("s.sh", results, 1.0)
    assert doc["runs"] == 2 and doc["failing_runs"] == 2
    assert doc["classes"][0]["replay"] == "klpemu run s.sh --seed 0 --schedule random"
    assert doc["blockers"][0]["blocker"] == "klpemu_test_sleep" and doc["blockers"][0]["runs"] == 2


def test_on_legacy_every_schedule_of_an_unsafe_schedule_patch_oopses_in_the_resume_path() -> None:
    """--unsafe-switch-to on the legacy kernel: the patch of __schedule with
    another frame lets a sleeping task resume in the other copy; each such
    schedule is an oops, grouped under the resume path, the report naming
    the task and both copies."""
    path = ROOT / "scenarios" / "switch-to-hazard.sh"
    script = Script(path.read_text(), str(path))
    runs = [Run(i, RunConfig(kernel="legacy", cpus=c, unsafe_switch_to=True), ScheduleSpec("random", s))
            for i, (c, s) in enumerate((c, s) for c in (1, 2) for s in range(4))]
    outcomes = [o for _, o in run_local(runs, script, jobs=1)]
    assert all(o.kind == OOPS and o.key.startswith("switch_to/RIP resume path: ") for o in outcomes)
    assert all("went to sleep in __schedule (vmlinux) and resumes in __schedule (klpemu_sched_frame)"
               in o.detail for o in outcomes)


def test_a_worker_keeps_one_zygote_per_script_and_configuration() -> None:
    """Two sweeps in one process, same configuration, different scripts."""
    runs = [Run(0, RunConfig(), ScheduleSpec("random", 0))]
    assert next(run_local(runs, Script(STALL), jobs=1))[1].kind == STALLED
    assert next(run_local(runs, Script(BASIC), jobs=1))[1].kind == PASS


def test_explore_from_python_raises_with_the_failing_schedule_and_its_replay() -> None:
    from klpemu.explore.api import ExplorationFailed, explore
    assert explore(BASIC, runs=2, cpus=(1, 2), jobs=1).failing == []
    with pytest.raises(ExplorationFailed) as exc:
        explore(STALL, runs=2, jobs=1, name="stall.sh")
    assert "2 of 2 schedules did not pass" in str(exc.value)
    assert "replay: klpemu run stall.sh --seed 0 --schedule random" in str(exc.value)
    assert exc.value.summary["classes"][0]["kind"] == STALLED
    from emu.errors import EmuError
    from klpemu.scenario import ScenarioError
    with pytest.raises(EmuError, match="^runs wants at least 1 run, not 0$"):
        explore(BASIC, runs=0)
    with pytest.raises(ScenarioError, match="syntax error near unexpected token `then'"):
        explore("if then\n", runs=2, jobs=1)


def test_a_kernel_selftest_explores_from_its_own_directory() -> None:
    """test-livepatch.sh, upstream's file unmodified, sources functions.sh
    beside it: the explorer runs it where it lies, from the CLI and the API."""
    from klpemu.explore.api import explore
    path = ROOT / "scenarios" / "selftests" / "test-livepatch.sh"
    assert explore(path, runs=2, jobs=1).summary["runs"] == 2
    cli = subprocess.run([sys.executable, "-m", "klpemu.cli", "explore", str(path), "--runs", "2", "--jobs", "1",
                          "--json"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert [c["kind"] for c in json.loads(cli.stdout)["classes"]] == [PASS]


def test_the_report_keeps_a_class_group_whole_and_its_bins_apart() -> None:
    """A class's group (an oops's function and reason) is written out after
    its count, not cut to the label column; bins a fraction of a
    millisecond wide have edges that read differently."""
    from klpemu.explore.report import svg_report
    key = "klpemu_race_report: BUG: kernel NULL pointer dereference, address: #"
    hist = [{"from": 791_440_000 + k * 725_000, "to": 791_440_000 + (k + 1) * 725_000, "count": 1 + k}
            for k in range(3)]
    doc = {"script": "race.sh", "runs": 10, "strategy": "targeted", "failing_runs": 2, "runs_per_second": 9.0,
           "classes": [{"kind": "pass", "key": "", "count": 8}, {"kind": "oops", "key": key, "count": 2}],
           "transitions_ns": {"histogram": hist}, "blockers": []}
    root = ET.fromstring(svg_report(doc))
    svg = "{http://www.w3.org/2000/svg}"
    texts = [(t.text or "") + "".join("".join(s.itertext()) for s in t.iter(f"{svg}tspan"))
             for t in root.iter(f"{svg}text")]                 # shown text, not hover titles
    assert "oops" in texts and f"2  {key}" in texts
    bins = [t for t in texts if t.endswith(" s") and "-" in t]
    assert bins == ["0.79144-0.79217 s", "0.79217-0.79289 s", "0.79289-0.79361 s"]


@pytest.mark.parametrize("text, args, message", [
    ("true\n", ["--runs", "0"], "--runs wants at least 1 run, not 0"),
    ("true\n", ["--jobs", "0"], "--jobs wants at least 1 worker process, not 0"),
    ("true\n", ["--strategy", "pct,depth=0"], "schedule parameter depth=0: the pct schedule wants a whole number >= 1"),
    ("if then\n", [], "{script}: ./s.sh: line 1: syntax error near unexpected token `then'"),
])
def test_a_bad_sweep_is_refused_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                               args: list[str], message: str) -> None:
    from klpemu.cli import main
    script = tmp_path / "s.sh"
    script.write_text(text)
    assert main(["explore", str(script), *args]) == 2
    out, err = capsys.readouterr()
    assert err == f"klpemu: {message.format(script=script)}\n" and out == ""
