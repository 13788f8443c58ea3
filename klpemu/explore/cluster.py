"""The same runs on a Ray cluster (`klpemu explore --ray auto|ADDRESS`):
batches of runs become Ray tasks, each worker keeps a booted Zygote per
configuration as the local pool's workers do, and the outcomes come back
in run order, so the table is the local pool's.

`ray` is an optional extra: `pip install -e '.[cluster]'`. `auto` joins
the cluster this machine belongs to (RAY_ADDRESS, or a `ray start` here);
`local` starts a private Ray instance on this machine; anything else is
the address of the head node (`ray://host:10001` or `host:6379`).
"""
from __future__ import annotations

from collections.abc import Callable

from klpemu.errors import KlpemuError
from klpemu.explore.fork import Script
from klpemu.explore.outcome import Outcome
from klpemu.explore.pool import Run, batches, run_batch


def run_ray(runs: list[Run], script: Script, address: str, stop: Callable[[Outcome], bool] | None = None,
            progress: Callable[[int], None] | None = None) -> list[tuple[Run, Outcome]]:
    try:
        import ray
    except ImportError:
        raise KlpemuError("--ray needs Ray: pip install 'klpemu[cluster]' (or pip install ray)") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False,
                 include_dashboard=False)
    task = ray.remote(run_batch)
    script_ref = ray.put(script)
    by_index = {run.index: run for run in runs}
    pending = [task.remote(batch, script_ref) for batch in batches(runs, int(ray.cluster_resources().get("CPU", 1)))]
    results: dict[int, Outcome] = {}
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for index, outcome in ray.get(done[0]):
            results[index] = outcome
        if progress:
            progress(len(results))
        if stop and any(stop(o) for o in results.values()):
            for ref in pending:
                ray.cancel(ref)
            break
    return [(by_index[i], results[i]) for i in sorted(results)]
