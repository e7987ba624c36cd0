"""Materialization's online writes spread over Ray workers, with `batch_engine: ray.engine`.

Feast's Ray engine (0.67) reads a PostgreSQL source on the driver anyway (its retrieval
job has no Ray dataset: the engine falls back to `to_arrow` and `ray.data.from_arrow`),
windows on event time only, so a late row never goes online, and converts every batch to
protobufs in its workers. Here the driver reads the run's rows by creation time as the
in-process engine does (`materialize._load`), and Ray only writes them: the table is
split into blocks and each worker writes its blocks with the platform's Redis store
(`online_write_arrow`), the same bytes and the same compare-and-set as in process, so
the order in which workers finish never matters.

Ray starts as Feast's engine starts it (`ensure_ray_initialized`: local, `ray_address`,
KubeRay), with its `ray_conf`; `write_concurrency` (else `max_workers`, else 1) bounds
the writers. The repository configuration travels to the workers as Feast's engine
sends it (`SerializedArtifacts`), credentials included: the Ray cluster must be trusted
as the materialization pod is.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from feast import FeatureView
from feast.infra.common.serde import SerializedArtifacts
from feast.infra.compute_engines.ray.config import RayComputeEngineConfig
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

WRITTEN = "written"


def enabled(config: RepoConfig) -> bool:
    return isinstance(config.batch_engine, RayComputeEngineConfig)


def _concurrency(engine: RayComputeEngineConfig) -> int:
    return engine.write_concurrency or engine.max_workers or 1


def write(
    config: RepoConfig,
    view: FeatureView,
    table: pa.Table,
    join_keys: dict[str, ValueType],
    timestamp: str,
    created: str | None,
    batch_rows: int,
) -> int:
    """Write `table` (the run's rows of `view`) online from Ray workers; rows written."""
    import ray
    from feast.infra.ray_initializer import ensure_ray_initialized

    engine = config.batch_engine
    assert isinstance(engine, RayComputeEngineConfig)
    ensure_ray_initialized(engine)
    if table.num_rows == 0:
        return 0
    artifacts = SerializedArtifacts.serialize(feature_view=view, repo_config=config)

    def write_block(block: pa.Table) -> pa.Table:
        worker_view, online, _offline, worker_config = artifacts.unserialize()
        written = 0
        for batch in block.to_batches():
            written += online.online_write_arrow(
                worker_config, worker_view, batch, join_keys, timestamp, created
            )
        return pa.table({WRITTEN: [written]})

    options: dict[str, Any] = dict(engine.worker_task_options or {})
    dataset = ray.data.from_arrow(table)
    results = dataset.map_batches(
        write_block,
        batch_format="pyarrow",
        batch_size=batch_rows,
        concurrency=_concurrency(engine),
        **options,
    )
    return int(results.sum(WRITTEN) or 0)
