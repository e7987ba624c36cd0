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
process. `TRAINING_RAY_TASKS` bounds the tasks at once (default 2).
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


def tasks_at_once(settings: Mapping[str, str]) -> int:
    raw = settings.get(TASKS_VAR) or "2"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{TASKS_VAR} must be a positive integer, got {raw!r}")
    return int(raw)


def _start(settings: Mapping[str, str]) -> Any:
    import ray

    if not ray.is_initialized():
        address = settings.get(ADDRESS_VAR) or None
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    return ray


def join_chunk(plan: engine.Plan, labels: pa.Table, files: list[list[str]]) -> pa.Table:
    """One chunk of labels with their features, in their order, as `fast` joins them."""
    with tempfile.TemporaryDirectory(prefix="training-chunk-") as tmp:
        stage = engine.Stage(Path(tmp), threads=1)
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
    ray = _start(settings)
    remote = ray.remote(num_cpus=1, max_retries=2)(join_chunk)
    plan_ref = ray.put(plan)
    limit = tasks_at_once(settings)
    starts = iter(range(0, total, size))
    in_flight: deque[Any] = deque()

    def submit() -> None:
        start = next(starts, None)
        if start is not None:
            chunk = labels(start, min(start + size, total))
            in_flight.append(remote.remote(plan_ref, chunk, files))

    for _ in range(limit):
        submit()
    while in_flight:
        table = ray.get(in_flight.popleft())
        submit()
        yield table
