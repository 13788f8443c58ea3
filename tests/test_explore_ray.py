"""--ray: the same schedules on a real (local, two-CPU) Ray instance give
the local pool's outcomes, byte for byte (the kernel log's digest)."""
from __future__ import annotations

from pathlib import Path

import pytest

from emu.schedule import ScheduleSpec
from klpemu.explore.fork import Script
from klpemu.explore.pool import Run, run_local
from klpemu.explore.summary import summarize
from klpemu.session import RunConfig

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent
STALL = "insmod klpemu_test_target.ko sleeper=1\ninsmod klpemu_test_patch.ko\nsleep 2\n"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_and_the_local_pool_give_the_same_outcomes(local_ray) -> None:
    from klpemu.explore.cluster import run_ray
    path = ROOT / "scenarios" / "selftests" / "test-livepatch.sh"
    script = Script(path.read_text(), str(path))
    runs = [Run(i, RunConfig(cpus=c), ScheduleSpec("pct", s, (("depth", 2.0),)))
            for i, (c, s) in enumerate((c, s) for c in (1, 2) for s in range(4))]
    on_ray = run_ray(runs, script, "auto")
    local = list(run_local(runs, script, jobs=2))
    assert [(r.index, o) for r, o in on_ray] == [(r.index, o) for r, o in local]
    table = lambda results: [(c["kind"], c["key"], c["count"]) for c in summarize("s", results, 1)["classes"]]
    assert table(on_ray) == table(local)


def test_ray_stops_on_the_first_failure_too(local_ray) -> None:
    from klpemu.explore.cluster import run_ray
    runs = [Run(i, RunConfig(), ScheduleSpec("random", i)) for i in range(6)]
    got = run_ray(runs, Script(STALL), "auto", stop=lambda o: o.kind != "pass")
    assert got and all(o.kind == "stalled" for _, o in got) and len(got) < len(runs)
