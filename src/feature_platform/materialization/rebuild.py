"""Refill a lost online store from the offline tables, and tell a lost store from a quiet
source.

`materialize` loads only the rows created since each view's watermark (less the overlap)
or with event times past its last end, so it cannot refill a store that lost its data (a
restart without persistence, a failover to an empty replica, a FLUSHDB): the entities
without a new row stay NOT_FOUND. A rebuild loads, for every entity, its newest row within
the view's ttl, whatever the watermark, through the same compare-and-set write as
`materialize`: a newer value written meanwhile (a push, a load) stays. It moves no
watermark and records no interval, so the next `materialize` goes on where it was.

Coverage tells a lost store from a quiet source. Of the entities whose newest row within
the ttl was created before the view's watermark (less the overlap), an earlier run loaded
every one, so each must be online with that row or a newer one: a sample of them is read
back. A quiet source changes nothing there; a flushed or replaced store shows 0%, a
partial loss its share. The freshness record cannot tell: the next push writes it again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from feast import FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values

from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError, one_line_error
from feature_platform.console import Say
from feature_platform.errors import EXIT_FAILED, EXIT_OK
from feature_platform.feast_seam import feature_store
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.stores.load_window import LoadWindow

REBUILD_VAR = "MATERIALIZE_REBUILD"
REBUILD_MODES = ("auto", "off")
# Entities read back per view, and the share of them that must be online.
COVERAGE_SAMPLE = 200
COVERAGE_FLOOR = 0.95
# Rows this close to the ttl boundary are left out of the sample: they may expire while
# it is read (a Redis key_ttl_seconds, or the ttl rule itself).
BOUNDARY_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class Coverage:
    view: str
    sampled: int
    online: int

    @property
    def share(self) -> float:
        return self.online / self.sampled if self.sampled else 1.0

    @property
    def lost(self) -> bool:
        return self.share < COVERAGE_FLOOR

    def __str__(self) -> str:
        return f"{self.view}: {self.online}/{self.sampled} sampled entities online"


def rebuild_mode(values: Mapping[str, str]) -> str:
    mode = values.get(REBUILD_VAR, "").strip() or "auto"
    if mode not in REBUILD_MODES:
        raise ConfigError(f"{REBUILD_VAR} must be one of {', '.join(REBUILD_MODES)}, not {mode!r}")
    return mode


def coverage(
    store: FeatureStore, view: FeatureView, watermark: datetime, overlap: timedelta, now: datetime
) -> Coverage:
    """How many of a sample of the entities an earlier run loaded are online."""
    loaded_until = watermark - overlap
    since = now - view_rows.lookback(view) + BOUNDARY_MARGIN
    # Nothing created after `end` is read, so `created_since` past it leaves the event time
    # alone to pick the rows.
    window = LoadWindow(created_since=loaded_until + timedelta(days=1), event_since=since,
                        end=loaded_until)  # fmt: skip
    if since >= loaded_until:
        return Coverage(view.name, 0, 0)
    table = view_rows.read(store, view, window, sample=COVERAGE_SAMPLE)
    key_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
    names = sorted(key_types)
    columns = {
        name: python_values_to_proto_values(
            table.column(name).to_numpy(zero_copy_only=False), key_types[name]
        )
        for name in names
    }
    keys = [
        EntityKeyProto(join_keys=names, entity_values=[columns[n][i] for n in names])
        for i in range(table.num_rows)
    ]
    read = feature_store.provider(store).online_read(store.config, view, keys) if keys else []
    return Coverage(view.name, len(keys), sum(1 for stamp, _ in read if stamp is not None))


def rebuild(store: FeatureStore, views: list[FeatureView], end: datetime, say: Say) -> int:
    """Load every entity's newest row within each view's ttl up to `end`; rows written."""
    until = min(end, datetime.now(UTC))
    total = 0
    for number, view in enumerate(views, start=1):
        since = until - view_rows.lookback(view)
        say(f"  rebuilding {view.name} ({number}/{len(views)}): rows with event time since "
            f"{since.isoformat()}")  # fmt: skip
        batches = view_rows.read_batches(store, view, LoadWindow(since, since, until))
        total += view_rows.write_batches(store, view, batches, say)
    return total


def check_and_rebuild(
    store: FeatureStore,
    views: list[FeatureView],
    overlap: timedelta,
    end: datetime,
    mode: str,
    say: Say,
) -> list[Coverage]:
    """The views whose sampled coverage shows a lost store, rebuilt unless `mode` is off;
    their coverage either way. Views never loaded are not sampled."""
    watermarks = Watermarks(store.registry, store.project)
    now = min(end, datetime.now(UTC))
    lost = []
    for view in views:
        watermark = watermarks.get(view.name)
        if watermark is None:
            continue
        found = coverage(store, view, watermark, overlap, now)
        say(f"  coverage {found}")
        if found.lost:
            lost.append(found)
    if lost and mode == "auto":
        names = {c.view for c in lost}
        say(f"online store lost for {', '.join(sorted(names))}: rebuilding from the offline store")
        rebuild(store, [v for v in views if v.name in names], end, say)
    return lost


def job(env: str, names: list[str] | None, say: Say) -> int:
    """`feature-platform rebuild-online ENV`: rebuild the named views (default: every view
    `materialize` reads by creation time). 0 when done, 1 with one line otherwise."""
    values = feast_commands.prepare(env)
    try:
        with view_rows.job_store(env) as store:
            views = [
                view
                for view in feature_store.views_to_materialize(store, None)
                if view_rows.by_creation_time(view)
            ]
            unknown = sorted(set(names or []) - {view.name for view in views})
            if unknown:
                raise ConfigError(
                    f"no view {', '.join(unknown)} to rebuild (known: "
                    f"{', '.join(view.name for view in views)})"
                )
            views = [view for view in views if not names or view.name in names]
            say(f"rebuild-online {env}: {len(views)} view(s) from the offline store")
            started = time.monotonic()
            written = rebuild(store, views, datetime.now(UTC), say)
            elapsed = time.monotonic() - started
            say(f"rebuilt {written:,} rows in {elapsed:.1f}s ({written / elapsed:,.0f} rows/s)")
    except ConfigError:
        raise
    except Exception as exc:
        say(f"rebuild-online failed: {one_line_error(exc, values)}")
        return EXIT_FAILED
    return EXIT_OK
