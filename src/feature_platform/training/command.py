"""`feature-platform training-set ENV`: labels in, a point-in-time training set out as
parquet, in chunks of `--chunk-rows` labels, progress on stderr.

Three engines give the same rows: `fast` (`engine`: DuckDB ASOF joins over rows staged
from the offline store or its mirror), used wherever it applies; `ray` (`ray_engine`:
the same join, one chunk per Ray task, over parquet files only); and `feast` (Feast's
`get_historical_features` per chunk), for stores and sources the fast one does not
read. Either way the output holds the label rows in their input order, so the chunk size
changes memory and speed, never the result.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore

from feature_platform.config import feast_commands
from feature_platform.console import Say
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.offline import mirror as offline_mirror
from feature_platform.quality import database as quality_db
from feature_platform.quality import expectations, history
from feature_platform.training import engine, labels, ray_engine
from feature_platform.training.feast_join import FEATURE_SERVICE
from feature_platform.training.labels import LabelError

DEFAULT_CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class Request:
    env: str
    output: Path
    labels_path: Path | None = None
    labels_sql: str | None = None
    feature_service: str = FEATURE_SERVICE
    features: list[str] | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    engine: str = "auto"
    # recorded under this name (`quality/history.py`); None: the output's stem
    name: str | None = None


def _features(store: FeatureStore, request: Request) -> list[str] | FeatureService:
    if request.features:
        bad = [ref for ref in request.features if ref.count(":") != 1]
        if bad:
            raise LabelError(f"feature references are view:feature, got {', '.join(bad)}")
        return request.features
    return store.get_feature_service(request.feature_service)


def build(request: Request, say: Say) -> int:
    """Write the training set; the number of rows written."""
    started = time.monotonic()
    settings = feast_commands.prepare(request.env)
    store = feast_commands.open_store(request.env)
    try:
        written = _build(store, settings, request, started, say)
        # the sample kept with the record holds values, not who they belong to
        entity_keys = {entity.join_key for entity in store.list_entities()}
    finally:
        # A long-lived caller (a notebook, a test session) would keep the registry's
        # database connections and refresh timer of every run.
        feast_registry.release(store)
    elapsed = time.monotonic() - started
    say(
        f"wrote {written:,} rows to {request.output} in {elapsed:.1f}s "
        f"({written / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    name = request.name or request.output.stem
    history.record_training_set(
        quality_db.for_settings(settings),
        history.TrainingSet(
            created_at=datetime.now(UTC),
            environment=request.env,
            name=name,
            features=",".join(request.features or []) or request.feature_service,
            labels=request.labels_sql or str(request.labels_path),
            output=str(request.output.resolve()),
            rows=written,
        ),
        history.sample_of(request.output, entity_keys),
    )
    say(f"recorded as training set {name!r}")
    return written


def _check_labels(service: FeatureService, stage: engine.Stage, say: Say) -> None:
    """The labels' shares against the service's expectations (`quality.labels`): a
    share outside them refuses the training set."""
    shares = expectations.label_shares(service.tags)
    held = [name for name in shares if name in stage.label_columns()]
    if not held:
        return
    labels = stage.con.execute(f"SELECT {', '.join(map(engine.ident, held))} FROM labels").df()
    broken = expectations.label_violations(shares, labels)
    if broken:
        raise expectations.Refused(f"{service.name}: {'; '.join(broken)}")
    say(f"  labels: {', '.join(held)} within {service.name}'s expected shares")


def _screening(store: FeatureStore, view: str) -> engine.Screening | None:
    """What `view`'s rows must meet (`feature_repo/expectations.py`); None without rules."""
    expected = expectations.of_view(view, store.get_feature_view(view).tags)
    if expected is None:
        return None
    return engine.Screening(expected, quality_db.for_store(store.config))


def _build(
    store: FeatureStore, settings: dict[str, str], request: Request, started: float, say: Say
) -> int:
    features = _features(store, request)
    plan = engine.plan(store, features)
    why_not = engine.unsupported(store, plan)
    chosen = request.engine
    if chosen == "auto":
        chosen = "feast" if why_not else "fast"
    elif chosen in ("fast", "ray") and why_not:
        raise LabelError(f"the {chosen} engine does not apply: {why_not}")
    say(f"training set for {request.env}: {chosen} engine" + (f" ({why_not})" if why_not else ""))
    request.output.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="training-set-", dir=request.output.parent) as tmp,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-files") as ahead,
    ):
        # The views' files (the mirror brought up to date: Postgres and the copy's
        # decoding, off the GIL) while the labels are read and staged. Leaving early
        # (bad labels) waits for it: a refresh is never cut off halfway.
        files_ahead = (
            ahead.submit(engine.view_files, store, plan, settings, say)
            if chosen == "fast"
            else None
        )
        work = Path(tmp)
        if request.labels_sql is not None:
            batches = labels.from_sql(settings, request.labels_sql, work, request.chunk_rows)
        else:
            assert request.labels_path is not None
            batches = labels.from_file(request.labels_path, request.chunk_rows)
        stage = engine.Stage(work)
        try:
            total = stage.add_labels(batches, plan, say)
            if isinstance(features, FeatureService):
                _check_labels(features, stage, say)
            chunks: Iterator[pa.Table]
            if files_ahead is not None:
                files = files_ahead.result()
                for i, view in enumerate(plan.views):
                    stage.add_view(i, view, files[i], say, store, _screening(store, view.name))
                chunks = stage.chunks(plan, request.chunk_rows)
            elif chosen == "ray":
                chunks = ray_engine.chunks(
                    settings, plan, _files_for_ray(store, plan, settings, say),
                    lambda a, b: stage.labels(a, b).drop_columns([engine.ROW]),
                    total, request.chunk_rows,
                )  # fmt: skip
            else:
                chunks = _chunks(
                    total,
                    request.chunk_rows,
                    lambda a, b: _feast_chunk(store, features, stage, a, b),
                )
            written = _write(chunks, request.output, work, total, started, say)
        finally:
            stage.close()
    return written


def _files_for_ray(
    store: FeatureStore, plan: engine.Plan, settings: dict[str, str], say: Say
) -> list[list[str]]:
    files = engine.view_files(store, plan, settings, say)
    missing = [view.name for view, f in zip(plan.views, files, strict=True) if f is None]
    if missing:
        raise LabelError(
            f"the ray engine reads parquet files, and {', '.join(missing)} "
            f"come from Postgres: set {offline_mirror.DIR_VAR} to mirror them"
        )
    return [f for f in files if f is not None]


def _chunks(total: int, size: int, join: Callable[[int, int], pa.Table]) -> Iterator[pa.Table]:
    for start in range(0, total, size):
        yield join(start, min(start + size, total))


def _feast_chunk(
    store: FeatureStore, features: list[str] | FeatureService, stage: engine.Stage, a: int, b: int
) -> pa.Table:
    """One chunk through Feast's `get_historical_features`, back in label order."""
    entity_df = stage.labels(a, b).to_pandas()
    table = store.get_historical_features(entity_df=entity_df, features=features).to_arrow()
    table = table.sort_by(engine.ROW).drop_columns([engine.ROW])
    # The Postgres store returns naive UTC times, the duckdb store aware ones: one form.
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            utc = pa.timestamp(field.type.unit, tz="UTC")
            table = table.set_column(i, field.name, table.column(i).cast(utc))
    return table


def _write(
    chunks: Iterator[pa.Table],
    output: Path,
    work: Path,
    total: int,
    started: float,
    say: Say,
) -> int:
    """Each chunk into one parquet file, replaced whole at the end: a failed run leaves
    no half-written training set. Arrow writes without the GIL, so a chunk is written
    in a thread while the next is made; one write at a time."""
    partial = work / "output.parquet"
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-write") as pool:
        writing: Future[None] | None = None
        try:
            for table in chunks:
                if writer is None or schema is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(partial, schema)
                table = table.cast(schema)
                if writing is not None:
                    writing.result()
                writing = pool.submit(writer.write_table, table)
                written += table.num_rows
                rate = written / max(time.monotonic() - started, 1e-9)
                say(
                    f"  joined {written:,}/{total:,} label rows "
                    f"({written * 100 // total}%), {rate:,.0f} rows/s"
                )
            if writing is not None:
                writing.result()
        finally:
            if writing is not None:
                wait([writing])
            if writer is not None:
                writer.close()
    partial.replace(output)
    return written
