"""The planted race (fixtures/modules/klpemu_race_*.c, scenarios/race-callback.sh):
a post_patch callback frees a configuration that a kthread on the other CPU
took before the swap and calls through after it. Round robin passes; PCT at
depth 2 finds the use-after-free (a real oops of the guest in
klpemu_race_report) within a few dozen schedules; `klpemu explore` classifies
it, minimizes it, and the minimized replay line reproduces it byte for byte.
How many schedules each strategy needs is measured in
benchmarks/bench_explore.py, not here."""
from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from emu.schedule import ScheduleSpec
from klpemu.explore.fork import Script, Zygote
from klpemu.explore.outcome import OOPS, PASS
from klpemu.session import RunConfig

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "race-callback.sh"
SCRIPT = Script(SCENARIO.read_text(), str(SCENARIO))
SCHEMA = json.loads(resources.files("klpemu").joinpath("schemas/explore.schema.json").read_text())
RACE_KEY = "klpemu_race_report: BUG: kernel NULL pointer dereference, address: #"
# depth 2: the reader must take the old pointer before the swap and be
# overtaken by it before its call (one change point, inside that window);
# steps: about the rounds a run of the scenario takes
PCT = "pct,depth=2,steps=100"


def klpemu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "klpemu.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def explored() -> dict:
    cli = klpemu("explore", str(SCENARIO), "--strategy", PCT, "--runs", "60", "--jobs", "2",
                 "--stop-on-first", "--minimize", "--json")
    assert cli.returncode == 1, cli.stderr                    # a failing run was found
    return json.loads(cli.stdout)


def test_the_scenario_passes_under_round_robin() -> None:
    outcome = Zygote(RunConfig(), SCRIPT).run(ScheduleSpec("rr", 0))
    assert outcome.kind == PASS, outcome.detail


def test_explore_finds_and_classifies_the_use_after_free(explored) -> None:
    jsonschema.validate(explored, SCHEMA)
    kinds = {(c["kind"], c["key"]): c for c in explored["classes"]}
    assert set(kinds) == {(PASS, ""), (OOPS, RACE_KEY)}        # only some schedules expose it
    race = kinds[OOPS, RACE_KEY]
    assert race["count"] >= 1 and race["first"]["schedule"].startswith("pct:")
    # the guest's own report: the reader kthread, called through the scrubbed ops
    assert "Comm: klpemu_racer" in race["detail"] and "klpemu_race_reader+" in race["detail"]


def test_the_minimized_schedule_still_races_and_replays_byte_for_byte(explored) -> None:
    minimized = explored["minimized"]
    spec = ScheduleSpec.parse(minimized["schedule"])
    assert spec.strategy == "pct" and spec.param("depth") == 2   # the race needs its change point
    outcome = Zygote(RunConfig(cpus=minimized["cpus"]), SCRIPT).run(spec)
    assert (outcome.kind, outcome.key) == (OOPS, RACE_KEY)
    cli = klpemu(*shlex.split(minimized["replay"])[1:])          # a kthread's oops: the script still passes
    log = cli.stdout.split("\n--- kernel log ---\n", 1)[1]
    assert "BUG: kernel NULL pointer dereference" in log and "klpemu_race_report" in log
    assert hashlib.sha256(log.encode()).hexdigest() == outcome.dmesg_sha256
