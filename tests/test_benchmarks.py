"""The benchmarks compute what they claim (figures are measured in
benchmarks/, never asserted here: no timing)."""
import json
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from klp.objects import KlpState
from klp.transition import CheckRanges
from klpemu.benchmarks import (bench_dispatch, bench_explore, bench_machine, bench_scenarios, bench_startup,
                               bench_transition, run)
from klpemu.benchmarks.common import chart_note, svg_bars, table, verdict
from klpemu.cli import main as cli_main


@pytest.fixture(scope="module")
def dispatch_machines():
    return {name: setup() for name, setup in bench_dispatch.SETUPS.items()}


def test_every_dispatch_case_runs_the_function_it_claims(dispatch_machines) -> None:
    """bench_target returns x + 1, its patches x + 2 (x + 4 at the top of a
    func_stack of 3): each case's loop result says which function ran."""
    results = {c.name: bench_dispatch.run_loop(dispatch_machines[c.setup], c, 100) for c in bench_dispatch.CASES}
    bench_dispatch.check_results(results, 100)
    assert results["native"] == 200 != results["unpatched"] == 100
    assert results["transition, task unpatched"] == 100 and results["transition, task patched"] == 200
    assert results["func_stack of 3"] == 400
    assert dispatch_machines["python"].extensions["klp"].dispatch.python_calls > 0


def test_a_transition_is_held_open_with_one_worker_on_each_side(dispatch_machines) -> None:
    for setup in ("transition", "nop"):
        m = dispatch_machines[setup]
        assert m.extensions["klp"].transition.patch is not None
        assert bench_dispatch.worker_state(m, bench_dispatch.HELD) == KlpState.UNPATCHED
        assert bench_dispatch.worker_state(m, bench_dispatch.FREE) == KlpState.PATCHED
    assert dispatch_machines["nop discarded"].extensions["klp"].transition.patch is None


def test_extra_instructions_are_counted_per_call(dispatch_machines) -> None:
    def insns(name: str) -> float:
        case = next(c for c in bench_dispatch.CASES if c.name == name)
        return bench_dispatch.count_instructions(dispatch_machines[case.setup], case, 50)
    unpatched = insns("unpatched")
    assert unpatched == int(unpatched) > 3
    assert insns("native") == insns("direct jmp to new_func") == unpatched + 1     # the jmp at the site
    assert insns("NOP discarded (replace completed)") == unpatched                 # the site is a NOP again
    assert unpatched + 1 < insns("transition, task patched") < insns("transition, task unpatched")
    assert insns("unpatched 500") - insns("unpatched 50") > 400


def test_scale_sleepers_sleep_8_to_15_frames_deep_and_block_every_pass() -> None:
    m = bench_transition.scale_machine(16)
    sleepers = [t for t in m.tasks() if t.comm.startswith("bench/")]
    depths = {len(m.walker.trace(t).frames) for t in sleepers}
    assert len(sleepers) == 16 and depths == set(range(8, 16))
    times, frames, blocking = bench_transition.timed_passes(m, "klpemu_bench_scale10", 2)
    assert len(times) == 2 and blocking == 16
    assert frames == sum(len(m.walker.trace(t).frames) for t in sleepers)
    assert not m.exists("/sys/kernel/livepatch/klpemu_bench_scale10")   # disabled again


def test_check_ranges_finds_the_first_func_in_patch_order() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        ranges = []
        for i in range(rng.randint(0, 8)):
            start = rng.randint(0, 100)
            ranges.append((start, start + rng.randint(0, 30), f"f{i}"))
        ips = tuple(rng.randint(-5, 140) for _ in range(rng.randint(0, 6)))
        naive = next((f for s, e, f in ranges if any(s <= ip < e for ip in ips)), None)
        assert CheckRanges(ranges).first_hit(ips) == naive


def test_bare_unicorn_runs_the_machines_code_counting_budgeted_or_not() -> None:
    plain, counted, budgeted = (bench_machine.Bare("demo_calls", mode) for mode in bench_machine.MODES)
    assert plain.per_call == counted.per_call == budgeted.per_call > 1000


def test_scenario_run_reports_virtual_time(tmp_path: Path) -> None:
    one = bench_scenarios.run_one(bench_scenarios.SELFTESTS / "test-livepatch.sh")
    assert one["virtual_s"] > 1 and one["wall_s"] > 0
    bad = tmp_path / "test-bad.sh"
    bad.write_text("cat /proc/no-such-file\n")
    with pytest.raises(RuntimeError, match="test-bad.sh failed"):
        bench_scenarios.run_one(bad)


def test_suite_writes_dated_json_and_charts(tmp_path: Path) -> None:
    assert run.main(["startup", "--quick", "--out", str(tmp_path)]) == 0
    [out] = tmp_path.glob("*-quick.json")
    result = json.loads(out.read_text())
    assert result["quick"] and result["results"]["startup"]["module_functions"] > 100
    assert [t["what"] for t in result["targets"]] == ["boot <= 0.3 s after imports", "import emu <= 0.15 s, cold",
                                                      "klpemu run of basic function patching <= 0.25 s, cold",
                                                      "a scenario run from a snapshot <= 20 ms plus its own work"]
    assert all(t["verdict"] in ("met", "MISSED", "within noise") for t in result["targets"])
    startup = result["results"]["startup"]
    for key in ("first_boot_s", "import_emu_s", "klpemu_run_s", "snapshot_overhead_ms"):   # judged: with spread
        lo, hi = startup[f"{key}_spread"]
        assert lo <= startup[key] <= hi
    [chart] = tmp_path.glob("*-startup.svg")
    assert len(ET.parse(chart).getroot().findall("{http://www.w3.org/2000/svg}rect")) == 11  # 10 bars, background


def test_explore_race_rows_and_their_targets() -> None:
    """A block without a find counts as more runs than any: the median falls on it or not."""
    assert bench_explore._median([13, None, 5]) == 13
    assert bench_explore._median([None, None, 5]) is None
    row = {"cap": 100, "rate": 0.03, "bound": 0.005}
    result = {"livepatch_per_s_cpu": 7.0,
              "race": {"rows": [{**row, "strategy": "random", "median_runs_to_first": None},
                                {**row, "strategy": "pct,depth=2,steps=100", "median_runs_to_first": 42}]}}
    assert run.targets({"explore": result}) == [
        ("explore test-livepatch.sh >= 50 schedules/s per core", "7.0/s", "MISSED"),
        ("planted race: PCT's find rate >= its bound 1/(n k^(d-1))", "3.00% vs 0.50%", "met"),
        ("planted race: PCT needs fewer runs than random (median to first find)", "42 vs >100", "met")]
    result["race"]["rows"][0]["median_runs_to_first"] = 42
    assert run.targets({"explore": result})[2][2] == "MISSED"          # a tie: PCT does not need fewer


def test_cli_refuses_an_unknown_benchmark(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "nope"])
    assert exc.value.code == 2 and "unknown benchmark nope" in capsys.readouterr().err


def test_chart_and_table_helpers() -> None:
    with chart_note("2026-12-04 (--quick) · a CPU"):
        chart = svg_bars("t <&>", [("a", 1.0, [0.9, 1.1]), ("b", 30.0)], "x", marks=[(1.0, "1x"), (1.2, "1.2x")],
                         clip=2.5)
    assert "a CPU" not in svg_bars("t", [("a", 1.0)], "x")             # the note ends with its block
    root = ET.fromstring(chart)
    svg = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{svg}rect")) == 3                       # the background and two bars
    texts = [t.text for t in root.iter(f"{svg}text")]
    assert "2026-12-04 (--quick) · a CPU" in texts                     # date, quick, machine under the title
    assert {"0", "0.5", "1", "1.5", "2", "2.5"} <= set(texts)           # a linear axis with ticks
    assert "1x (0.9-1.1)" in texts and "30x" in texts                  # the spread; the cut bar keeps its value
    marks = {t.text: float(t.get("y")) for t in root.iter(f"{svg}text") if t.text in ("1x", "1.2x")}
    assert marks["1x"] != marks["1.2x"]                                 # close marks: labels stacked
    assert table(("a", "bb"), [(1, 2)]).splitlines()[2] == "| 1 | 2  |"


def test_a_target_inside_the_spread_is_within_noise() -> None:
    assert verdict(1.31, 1.2, [1.15, 1.4], at_most=True) == "within noise"
    assert verdict(1.31, 1.2, [1.25, 1.4], at_most=True) == "MISSED"
    assert verdict(1.1, 1.2, None, at_most=True) == "met"
    assert verdict(0.29, 0.45, [0.26, 0.32], at_most=False) == "MISSED"
    row = {"vs_unpatched": 1.31, "vs_unpatched_spread": [1.15, 1.4]}
    assert run.targets({"dispatch": {"cases": {"native": row}}}) == [
        ("dispatch: native <= 1.2x", "1.31x (1.15-1.40)", "within noise")]


def startup_times(first_boot: list[float], import_emu: float = 0.1) -> dict[str, list[float]]:
    """Rounds of bench_startup's timings, as run() collects them: a boot in
    `first_boot` seconds, the rest fast."""
    times = {k: [0.01, 0.012, 0.011] for k in ("boot", "tables_cold", "tables_cached", "loader", "insmod")}
    return {**times, "first_boot": first_boot, "import_emu": [import_emu] * 3, "klpemu_run": [0.2, 0.21, 0.22],
            "boot_and_run": [0.1] * 3, "scenario": [0.05, 0.06, 0.05], "snapshot_run": [0.06, 0.065, 0.07]}


def test_a_run_from_a_snapshot_is_judged_by_what_it_costs_beyond_its_own_work() -> None:
    """Issue #15: a scenario run from a snapshot <= 20 ms plus its own work;
    the overhead is taken per round (snapshot run - the same run after a fresh boot)."""
    rec = bench_startup.figures(startup_times([0.03] * 3), functions=300)
    assert rec["snapshot_overhead_ms"] == 10.0 and rec["snapshot_overhead_ms_spread"] == [5.0, 20.0]
    assert rec["snapshot_run_ms"] == 65.0 and rec["scenario_ms"] == 50.0
    assert rec["boot_and_run_vs_snapshot"] == 1.54                   # 0.1 / 0.065: the median round
    what = "a scenario run from a snapshot <= 20 ms plus its own work"
    assert (what, "10.0 ms (5.0-20.0)", "within noise") in run.targets({"startup": rec})


def test_check_exits_1_on_a_clear_miss(tmp_path: Path, monkeypatch) -> None:
    """The rounds are given (a slow boot, every round above the target) and
    recorded by the benchmark's own figures(): the verdict logic is under
    test here, not the host's speed."""
    slow = bench_startup.figures(startup_times([0.45, 0.5, 0.6]), functions=300)
    assert slow["first_boot_s"] == 0.5 and slow["first_boot_s_spread"] == [0.45, 0.6]
    monkeypatch.setitem(run.BENCHMARKS, "startup", SimpleNamespace(
        run=lambda quick: dict(slow), report=lambda r: "",
        svg=lambda r: svg_bars("boot", [("boot", r["first_boot_s"])], " s")))
    assert run.main(["startup", "--quick", "--out", str(tmp_path)]) == 0
    assert run.main(["startup", "--quick", "--check", "--out", str(tmp_path)]) == 1


def test_the_machine_is_judged_against_bare_and_bare_with_the_budget_hook() -> None:
    """Issue #15: the whole machine >= 0.7x bare Unicorn on the mix and >=
    0.9x bare with the native budget hook, each from per-round ratios."""
    bare = {(name, mode): [speed] * 3 for name, speeds in (("demo_compute", (300, 60, 200)),
                                                            ("demo_calls", (60, 30, 50)))
            for mode, speed in zip(bench_machine.MODES, speeds)}
    rec = bench_machine.figures(bare, whole=[70.0, 76.0, 81.0], whole_long=[80.0] * 3)
    assert rec["code_mb_s"]["bare mix"] == 100 and rec["code_mb_s"]["bare mix budgeted"] == 80
    assert rec["whole_vs_bare"] == 0.76 and rec["whole_vs_bare_spread"] == [0.7, 0.81]
    assert rec["whole_vs_budgeted"] == 0.95 and rec["whole_vs_budgeted_spread"] == [0.875, 1.0125]
    assert run.targets({"machine": rec}) == [
        ("whole machine >= 0.7x bare Unicorn (the mix)", "0.76x (0.70-0.81)", "within noise"),
        ("whole machine >= 0.9x bare Unicorn with the native budget hook", "0.95x (0.88-1.01)", "within noise")]
    rec = bench_machine.figures(bare, whole=[30.0, 31.0, 32.0], whole_long=[30.0] * 3)
    assert [v for *_, v in run.targets({"machine": rec})] == ["MISSED", "MISSED"]


def test_ad_hoc_results_go_to_a_git_ignored_folder() -> None:
    """A fresh clone stays clean after `klpemu bench --quick`: its default
    output folder is ignored, the committed results are not."""
    if run.COMMITTED is None or shutil.which("git") is None or not (run.COMMITTED.parents[1] / ".git").exists():
        pytest.skip("not a git checkout")
    root = run.COMMITTED.parents[1]
    assert run.LOCAL == run.COMMITTED / "local"
    ignored = lambda path: subprocess.run(["git", "check-ignore", "-q", "--no-index", str(path)],  # noqa: E731
                                          cwd=root, check=False).returncode == 0
    assert ignored(run.LOCAL / "2026-12-04-quick.json") and ignored(run.LOCAL / "2026-12-04-quick-machine.svg")
    assert not ignored(run.COMMITTED / "2026-12-04.json")


def test_the_readme_figures_block_is_what_the_committed_json_makes() -> None:
    if run.README is None:
        pytest.skip("installed: no benchmarks/README.md")
    assert run.readme_block(run.COMMITTED) in run.README.read_text(), \
        "benchmarks/README.md's figures table is stale: run `klpemu bench --readme`"


def test_the_readme_block_shows_each_target_of_the_newest_full_run(tmp_path: Path) -> None:
    """A missed target in bold, a met one plain, each with its spread and its
    run's file; a --quick run (newer) is not what the README shows."""
    def write(name: str, quick: bool, first_boot: list[float]) -> None:
        startup = bench_startup.figures(startup_times(first_boot, import_emu=0.3), functions=300)
        (tmp_path / name).write_text(json.dumps({"quick": quick, "results": {"startup": startup}}))
    write("2026-01-01.json", False, [0.5, 0.5, 0.5])
    write("2026-01-02.json", False, [0.1, 0.12, 0.2])
    write("2026-01-03-quick.json", True, [0.9, 0.9, 0.9])
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in run.readme_block(tmp_path).splitlines()
            if line.startswith("| ") and ("boot" in line or "import" in line)]
    assert rows[:2] == [
        ["boot <= 0.3 s after imports", "0.120 s (0.100-0.200)", "met", "`results/2026-01-02.json`"],
        ["import emu <= 0.15 s, cold", "0.300 s (0.300-0.300)", "**MISSED**", "`results/2026-01-02.json`"]]
