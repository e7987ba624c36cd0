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

A view's rows are checked against its expectations before any is written
(`rows.screened`): under `refuse` a bad row stops that view (not loaded, watermark kept,
the job fails naming it) and the other views load; under `quarantine` the bad rows move
from the offline table to the quarantine table and are skipped, and the window is read
again so an entity's row before a quarantined one goes online as training reads it.

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

After the load, with OFFLINE_MIRROR_DIR set and Postgres offline tables, the job brings
the offline mirror of every view's table up to date (`offline/mirror.py`): a table
replaced, updated or deleted from is copied whole here, not in the next training set. A
failure there is said in one line and fails nothing: the training set refreshes the
mirror itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from feast import FeatureStore, FeatureView
from feast import utils as feast_utils

from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError, one_line_error
from feature_platform.console import Say
from feature_platform.errors import EXIT_FAILED, PlatformError
from feature_platform.feast_seam import feature_store
from feature_platform.materialization import rebuild
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.offline import mirror as offline_mirror
from feature_platform.quality.expectations import Refused
from feature_platform.stores import redis_memory
from feature_platform.stores.load_window import LoadWindow
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig
from feature_platform.stores.redis_online import RedisOnlineStore

OVERLAP_VAR = "MATERIALIZE_OVERLAP_SECONDS"
ENGINE_VAR = "MATERIALIZE_ENGINE"
ENGINES = ("local", "ray.engine")
ENGINE_HELP = 'local, or a JSON mapping of ray.engine settings ({"type": "ray.engine", ...})'
DEFAULT_OVERLAP = timedelta(minutes=10)


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


def window(
    view: FeatureView, watermark: datetime | None, end: datetime, overlap: timedelta
) -> LoadWindow:
    first = end - view_rows.lookback(view)
    previous_end = view.most_recent_end_time
    return LoadWindow(
        created_since=watermark - overlap if watermark else first,
        event_since=feast_utils.make_tzaware(previous_end) if previous_end else first,
        end=end,
    )


# Reads of a view's window in one run while rows are being quarantined (see `_load`).
MAX_PASSES = 3


def _load(store: FeatureStore, view: FeatureView, rows: LoadWindow, say: Say) -> int:
    """Write the window's rows of `view` online; the number of rows read.

    The window is read as each entity's newest row. A quarantined row leaves the offline
    table, so the entity's row before it, if the window holds one, is its newest now, and
    training reads it: the window is read again, and that row written, until a pass
    quarantines nothing (at most MAX_PASSES; the compare-and-set write leaves every row
    already online as it is)."""
    read = 0
    for _ in range(MAX_PASSES):
        set_aside: list[int] = []
        read += view_rows.write(store, view, view_rows.read(store, view, rows), say, set_aside)
        if not set_aside:
            break
    return read


def backfill(store: FeatureStore, view: FeatureView, until: datetime, say: Say) -> int:
    """Load a new view as a first run up to `until` would, and record the interval; the
    watermark is left to the caller, which moves it once the view is checked (a new
    version of a view, loaded up to its predecessor's watermark). The rows read."""
    first = until - view_rows.lookback(view)
    loaded = _load(store, view, LoadWindow(first, first, until), say)
    store.registry.apply_materialization(view, store.project, first, until)
    return loaded


def _load_by_creation_time(
    store: FeatureStore, views: list[FeatureView], margin: timedelta, end: datetime, say: Say
) -> None:
    # Rows created after the run started are not all visible to it yet.
    until = min(end, datetime.now(UTC))
    watermarks = Watermarks(store.registry, store.project)
    refused: dict[str, Refused] = {}
    for view in views:
        rows = window(view, watermarks.get(view.name), end, margin)
        try:
            loaded = _load(store, view, rows, say)
            store.registry.apply_materialization(view, store.project, rows.event_since, end)
            watermarks.advance(view.name, until)
        except ConfigError:
            raise
        except Refused as exc:
            # Its rows break its expectations: it stops, the other views load.
            say(f"  {view.name}: not loaded, {exc}; watermark stays")
            refused[view.name] = exc
            continue
        except Exception as exc:
            raise ViewFailed(view.name) from exc
        say(
            f"  {view.name}: {loaded:,} rows loaded, created since "
            f"{rows.created_since.isoformat()} or with event time since "
            f"{rows.event_since.isoformat()}; watermark {until.isoformat()}"
        )
    loaded_views = [view.name for view in views if view.name not in refused]
    feature_store.precompute_services(store, loaded_views)
    if refused:
        first = next(iter(refused.values()))
        raise ViewFailed(", ".join(refused)) from first


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
    mode: str,
    say: Say,
) -> list[rebuild.Coverage]:
    """Load every view up to `end`, after rebuilding (mode auto) the views whose sampled
    coverage shows a lost store; the coverage of those."""
    engine = engine_name(store)
    online = feature_store.provider(store).online_store
    if isinstance(online, RedisOnlineStore):
        # Before any write: on an evicting Redis a load can drop the values it loaded.
        warning = redis_memory.check(online, store.config, values)
        if warning:
            say(warning)
    views = feature_store.views_to_materialize(store, None)
    ours = [view for view in views if view_rows.by_creation_time(view)]
    feasts = [view.name for view in views if not view_rows.by_creation_time(view)]
    say(
        f"materialize {env} up to {end.isoformat()}: {len(ours)} view(s) by creation time "
        f"(overlap {int(margin.total_seconds())} s, engine {engine})"
        + (f", {len(feasts)} by Feast's event-time window" if feasts else "")
    )
    lost = rebuild.check_and_rebuild(store, ours, margin, end, mode, say) if ours else []
    if ours:
        _load_by_creation_time(store, ours, margin, end, say)
    if feasts:
        store.materialize_incremental(end, feature_views=feasts)
    if isinstance(online, RedisOnlineStore):
        # Found whole, rebuilt, or loaded for the first time; not a loss left as it is.
        left = {c.view for c in lost} if mode == "off" else set()
        whole = [view.name for view in ours if view.name not in left] + feasts
        online.mark_loaded(store.config, whole, datetime.now(UTC).timestamp())
    return lost


def _refresh_mirror(store: FeatureStore, values: Mapping[str, str], say: Say) -> None:
    """The offline mirror of every view's table brought up to date, so the next training
    set finds nothing to copy whole; a failure is said, not raised."""
    root = values.get(offline_mirror.DIR_VAR)
    config = store.config.offline_store
    if not root or not isinstance(config, PostgreSQLOfflineStoreConfig):
        return
    sources = [view.batch_source for view in store.list_feature_views()]
    try:
        keep = offline_mirror.keep(values)
        offline_mirror.refresh_sources(config, sources, Path(root), say, keep)
    except (psycopg.Error, PlatformError, OSError) as exc:
        say(
            f"mirror refresh failed: {one_line_error(exc, values)}; the next training set "
            "copies what it needs itself"
        )


def job(env: str, end: datetime | None, say: Say) -> int:
    """Materialize `env` up to `end` (default: now). 0 when every view is loaded, 1 with
    one line (no secret in it) otherwise; a configuration error goes up (exit 2)."""
    values = feast_commands.prepare(env)
    margin = overlap(values)
    mode = rebuild.rebuild_mode(values)
    end = feast_utils.make_tzaware(end) if end else datetime.now(UTC)
    try:
        with view_rows.job_store(env) as store:
            lost = _run(store, env, values, margin, end, mode, say)
            _refresh_mirror(store, values, say)
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
    if lost and mode == "off":
        say(
            f"materialize: the online store lost {', '.join(str(c) for c in lost)}; with "
            f"{rebuild.REBUILD_VAR}=off nothing was rebuilt: run feature-platform "
            f"rebuild-online {env}"
        )
        return EXIT_FAILED
    return 0
