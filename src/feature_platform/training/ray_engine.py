"""Training sets on Ray: the fast engine's join, one label chunk per Ray task.

Each task stages its chunk's labels and the rows those labels can use, read from parquet
files every worker can open (file sources, or the offline mirror on a shared volume),
and runs the same ASOF joins and on-demand transformations as `fast` does in one process.
The join of a label depends only on the label and the rows, so a chunk gives the rows it
would give inside the whole set: the result equals `fast` for any chunking. The driver
writes the chunks back in label order, with at most `tasks` in flight, so its memory is
bounded by the chunk size as in `fast`.

Workers get the plan (views, sources, on-demand views) and file paths; never database
credentials. Feast's own Ray offline store is not used: it ignores ttl and the
creation-time rule (0.67).

`TRAINING_RAY_ADDRESS` names the cluster (`ray://<head>:10001`); empty starts Ray in this
process. `TRAINING_RAY_TASKS` bounds the tasks at once (default 2); each task asks for its
share of the cluster's CPUs (`cpus_per_task`) and joins with that many DuckDB threads.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from feature_platform.config.guard import ConfigError
from feature_platform.training import engine

ADDRESS_VAR, TASKS_VAR = "TRAINING_RAY_ADDRESS", "TRAINING_RAY_TASKS"
# Each worker imports Feast as the command does, without typeguard's instrumentation:
# with it (and the dashboard on), a fresh worker's first task took 3.2 to 3.5 s longer
# than a warm one's, now about 2 s (docs/training-sets.md). Ray runs the hook in every
# worker of the job it starts.
WORKER_SETUP = "feature_platform.feast_seam.patches.import_feast_unchecked"


def tasks_at_once(settings: Mapping[str, str]) -> int:
    raw = settings.get(TASKS_VAR) or "2"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{TASKS_VAR} must be a positive integer, got {raw!r}")
    return int(raw)


def start(settings: Mapping[str, str]) -> Any:
    import ray

    if not ray.is_initialized():
        address = settings.get(ADDRESS_VAR) or None
        # A Ray started here runs no dashboard: nobody looks at it for one job, and its
        # processes start on the cores the first tasks need.
        local = {} if address else {"include_dashboard": False}
        ray.init(
            address=address,
            logging_level="ERROR",
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": WORKER_SETUP},
            **local,
        )
    return ray


def cpus_per_task(nodes: list[dict[str, Any]], tasks: int) -> int:
    """The CPUs each task asks Ray for and gives DuckDB: the live `nodes`' CPUs (as
    `ray.nodes()` lists them) shared among the tasks at once, at most one node's, as a
    task runs on one node and a larger ask would never be scheduled. One task alone on
    two cores joins with both, as `fast` does in process."""
    cpus = [int(node["Resources"].get("CPU", 0)) for node in nodes if node["Alive"]]
    return max(1, min(sum(cpus) // max(tasks, 1), max(cpus, default=1)))


def join_chunk(
    plan: engine.Plan, labels: pa.Table, files: list[list[str]], threads: int = 1
) -> pa.Table:
    """One chunk of labels with their features, in their order, as `fast` joins them."""
    with tempfile.TemporaryDirectory(prefix="training-chunk-") as tmp:
        stage = engine.Stage(Path(tmp), threads=threads)
        try:
            stage.add_labels(iter(labels.to_batches()), plan, lambda _: None)
            for i, view in enumerate(plan.views):
                stage.add_view(i, view, files[i], lambda _: None)
            return stage.join(plan, 0, labels.num_rows)
        finally:
            stage.close()


def chunks(
    settings: Mapping[str, str],
    plan: engine.Plan,
    files: list[list[str]],
    labels: Callable[[int, int], pa.Table],
    total: int,
    size: int,
) -> Iterator[pa.Table]:
    """The joined chunks in label order, each from its own Ray task."""
    ray = start(settings)
    limit = min(tasks_at_once(settings), -(-total // size))
    cpus = cpus_per_task(ray.nodes(), limit)
    remote = ray.remote(num_cpus=cpus, max_retries=2)(join_chunk)
    plan_ref = ray.put(plan)
    starts = iter(range(0, total, size))
    in_flight: deque[Any] = deque()

    def submit() -> None:
        first = next(starts, None)
        if first is not None:
            chunk = labels(first, min(first + size, total))
            in_flight.append(remote.remote(plan_ref, chunk, files, cpus))

    for _ in range(limit):
        submit()
    while in_flight:
        table = ray.get(in_flight.popleft())
        submit()
        yield table
