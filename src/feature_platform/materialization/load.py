"""`feature-platform materialize ENV`: bring the online store up to the offline tables.

Feast's `materialize-incremental` windows on event time from the previous run's end, so
a row written late (event time before that end) never goes online while training sets
use it. Here a run up to `end` loads, for each view whose source has a creation column,
the rows of its `LoadWindow` (`stores/load_window.py`):

- created since the view's watermark minus the overlap, whatever their event time;
- with an event time since the view's last materialized interval (Feast's window);
- on the first run (no watermark), both from `end` minus the view's ttl.

The online stores keep each entity's newest row by event time and then creation time,
so a restated value replaces the online one, an older event never does, and loading a
row again changes nothing. Once all of a view's rows are written, the registry records
the interval as `materialize-incremental` does and the watermark moves to `end` (not past
the run's start). A run that fails or is killed moves neither: the next one loads from
the old watermark again. The overlap (MATERIALIZE_OVERLAP_SECONDS, default 600) covers
writers whose creation time precedes their commit, by up to their longest transaction,
and clock skew between them and this job.

Before any write, the online store's Redis is asked for its eviction policy
(`stores/redis_memory.py`): anything but `noeviction` stops the run with a configuration
error (exit 2) unless REDIS_ALLOW_EVICTION=true, since an evicting Redis drops loaded values
silently. Under `noeviction` a full Redis refuses writes (OOM): the view fails like any
failed write, and its watermark stays.

The rows are written in process by default; with MATERIALIZE_ENGINE selecting Feast's
`ray.engine`, from Ray's workers (`materialize_ray`), the same bytes either way.

Views this cannot read by creation time (no creation column, no entities, derived or
transformed views, on-demand views written online) go through `materialize-incremental`.
The others are not flagged MATERIALIZING in the registry as it flags them: that stops
Feast's own servers from serving a view meanwhile, and stays when a run is killed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from feast import FeatureStore, FeatureView
from feast import utils as feast_utils
from feast.feature_view import DUMMY_ENTITY_NAME
from feast.infra.online_stores import redis as feast_redis

from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError, one_line_error
from feature_platform.console import Say
from feature_platform.errors import EXIT_FAILED, PlatformError
from feature_platform.materialization import ray_writes as materialize_ray
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.stores import redis_memory
from feature_platform.stores.load_window import LoadWindow, SourceColumns
from feature_platform.stores.redis_online import TYPE as REDIS_STORE
from feature_platform.stores.redis_online import RedisOnlineStore

OVERLAP_VAR = "MATERIALIZE_OVERLAP_SECONDS"
ENGINE_VAR = "MATERIALIZE_ENGINE"
ENGINES = ("local", "ray.engine")
ENGINE_HELP = 'local, or a JSON mapping of ray.engine settings ({"type": "ray.engine", ...})'
DEFAULT_OVERLAP = timedelta(minutes=10)
# Rows converted and written at a time unless feature_store.yaml sets
# `materialization: online_write_batch_size`.
DEFAULT_WRITE_BATCH_ROWS = 10_000
# Feast's first window for a view without a ttl.
NO_TTL_LOOKBACK = timedelta(weeks=52)


class ViewFailed(PlatformError):
    """Loading one view failed; the cause says why."""

    def __init__(self, view: str) -> None:
        super().__init__(view)
        self.view = view


def overlap(values: Mapping[str, str]) -> timedelta:
    text = values.get(OVERLAP_VAR, "").strip()
    if not text:
        return DEFAULT_OVERLAP
    if not text.isdigit():
        raise ConfigError(f"{OVERLAP_VAR} must be a whole number of seconds, got {text!r}")
    return timedelta(seconds=int(text))


def by_creation_time(view: Any) -> TypeGuard[FeatureView]:
    """Whether a run reads this view's rows itself, by creation time."""
    source = getattr(view, "batch_source", None)
    return (
        type(view) is FeatureView
        and source is not None
        and bool(source.created_timestamp_column)
        and DUMMY_ENTITY_NAME not in view.entities
        and not view.source_views
        and view.mode is None
    )


def window(
    view: FeatureView, watermark: datetime | None, end: datetime, overlap: timedelta
) -> LoadWindow:
    ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else NO_TTL_LOOKBACK
    first = end - ttl
    previous_end = view.most_recent_end_time
    return LoadWindow(
        created_since=watermark - overlap if watermark else first,
        event_since=feast_utils.make_tzaware(previous_end) if previous_end else first,
        end=end,
    )


def _load(store: FeatureStore, view: FeatureView, rows: LoadWindow, say: Say) -> int:
    """Write the window's rows of `view` online; the number of rows read."""
    provider = store._get_provider()
    offline = provider.offline_store
    if not hasattr(offline, "pull_latest_created_since"):
        raise ConfigError(
            f"offline store {store.config.offline_store.type} cannot read rows by creation "
            "time: use the platform's (feature_platform.stores.postgres_offline or "
            "feature_platform.stores.duckdb_offline)"
        )
    entities = [store.registry.get_entity(name, store.project) for name in view.entities]
    # Feast's own mapping of the view's names back to its source's columns.
    join_keys, features, timestamp, created = feast_utils._get_column_names(view, entities)
    assert view.batch_source is not None and created
    columns = SourceColumns(join_keys, features, timestamp, created)
    table = offline.pull_latest_created_since(
        store.config, view.batch_source, columns, rows
    ).to_arrow()
    mapping = view.batch_source.field_mapping
    if mapping:
        table = table.rename_columns([mapping.get(c, c) for c in table.column_names])
    key_types = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    batch_rows = (
        store.config.materialization_config.online_write_batch_size or DEFAULT_WRITE_BATCH_ROWS
    )
    online = provider.online_store
    # The columns Feast's conversion reads the times from.
    source = view.batch_source
    if materialize_ray.enabled(store.config):
        if not isinstance(online, RedisOnlineStore):
            raise ConfigError(f"batch_engine ray.engine needs the online store {REDIS_STORE}")
        say(f"  {view.name}: {table.num_rows:,} rows to write from Ray workers")
        materialize_ray.write(store.config, view, table, key_types, source.timestamp_field,
                              source.created_timestamp_column, batch_rows)  # fmt: skip
        return int(table.num_rows)
    written = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        if isinstance(online, RedisOnlineStore):
            online.online_write_arrow(store.config, view, batch, key_types,
                source.timestamp_field, source.created_timestamp_column)  # fmt: skip
        else:
            data = feast_utils._convert_arrow_to_proto(batch, view, key_types)
            provider.online_write_batch(store.config, view, data, progress=None)
        written += batch.num_rows
        if written < table.num_rows:
            say(f"  {view.name}: {written:,}/{table.num_rows:,} rows written")
    return int(table.num_rows)


def _load_by_creation_time(
    store: FeatureStore, views: list[FeatureView], margin: timedelta, end: datetime, say: Say
) -> None:
    # Rows created after the run started are not all visible to it yet.
    until = min(end, datetime.now(UTC))
    watermarks = Watermarks(store.registry, store.project)
    for view in views:
        rows = window(view, watermarks.get(view.name), end, margin)
        try:
            loaded = _load(store, view, rows, say)
            store.registry.apply_materialization(view, store.project, rows.event_since, end)
            watermarks.advance(view.name, until)
        except ConfigError:
            raise
        except Exception as exc:
            raise ViewFailed(view.name) from exc
        say(
            f"  {view.name}: {loaded:,} rows loaded, created since "
            f"{rows.created_since.isoformat()} or with event time since "
            f"{rows.event_since.isoformat()}; watermark {until.isoformat()}"
        )
    store._precompute_affected_services([view.name for view in views])


def engine_name(store: FeatureStore) -> str:
    """`local` or `ray.engine`: which engine the configuration selects (MATERIALIZE_ENGINE)."""
    try:
        name = str(store.config.batch_engine.type)
    except Exception as exc:
        raise ConfigError(f"{ENGINE_VAR}: {ENGINE_HELP}: {one_line_error(exc, {})}") from exc
    if name not in ENGINES:
        raise ConfigError(f"{ENGINE_VAR}: {ENGINE_HELP}, not {name!r}")
    return name


def _run(
    store: FeatureStore,
    env: str,
    values: Mapping[str, str],
    margin: timedelta,
    end: datetime,
    say: Say,
) -> None:
    engine = engine_name(store)
    online = store._get_provider().online_store
    if isinstance(online, feast_redis.RedisOnlineStore):
        # Before any write: on an evicting Redis a load can drop the values it loaded.
        warning = redis_memory.check(online, store.config, values)
        if warning:
            say(warning)
    views = store._get_feature_views_to_materialize(None)
    ours = [view for view in views if by_creation_time(view)]
    feasts = [view.name for view in views if not by_creation_time(view)]
    say(
        f"materialize {env} up to {end.isoformat()}: {len(ours)} view(s) by creation time "
        f"(overlap {int(margin.total_seconds())} s, engine {engine})"
        + (f", {len(feasts)} by Feast's event-time window" if feasts else "")
    )
    if ours:
        _load_by_creation_time(store, ours, margin, end, say)
    if feasts:
        store.materialize_incremental(end, feature_views=feasts)


def job(env: str, end: datetime | None, say: Say) -> int:
    """Materialize `env` up to `end` (default: now). 0 when every view is loaded, 1 with
    one line (no secret in it) otherwise; a configuration error goes up (exit 2)."""
    values = feast_commands.prepare(env)
    margin = overlap(values)
    end = feast_utils.make_tzaware(end) if end else datetime.now(UTC)
    try:
        with feast_commands.job_store(env) as store:
            _run(store, env, values, margin, end, say)
    except ConfigError:
        raise
    except ViewFailed as failed:
        cause = failed.__cause__ or failed
        say(
            f"materialize failed: {failed.view}: {one_line_error(cause, values)}; its "
            "watermark and interval stay, the next run loads its rows again"
        )
        return EXIT_FAILED
    except Exception as exc:
        say(f"materialize failed: {one_line_error(exc, values)}")
        return EXIT_FAILED
    return 0
