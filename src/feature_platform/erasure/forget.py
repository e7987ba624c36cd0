"""`feature-platform forget ENV --entity KEY=VALUE`: an entity's values out of every place
the platform keeps them, on request (a customer who asks to be forgotten).

The places, in the order a real run empties them:

1. in Redis, the entity's hash, replaced by a tombstone that the platform's writes skip
   (so no push or materialization brings it back), then a wait for writes already under
   way;
2. the offline rows of every view keyed by it (a Postgres table, or locally a parquet
   file): the source every other place is rebuilt from, so a materialization, a rebuild
   or a mirror refresh afterwards has nothing to bring back;
3. the parquet mirror of those tables, every part file of the table's copy (the current
   manifest's and the previous one's), rewritten without its rows;
4. a SQLite online store's rows of it (`local`);
5. the served vectors the feature services logged (a `postgresql:` table, or parquet
   files) and the quarantine table's rows of it.

Training sets cannot be recalled: those recorded since the entity's first row that hold
it are named. A dry run (the default) counts what each place holds; with `yes`, each
place is emptied and the run recorded in `platform_forget_audit`, beside the quarantine:
who asked, the entity, what was removed where, and the training sets named.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, FileSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.types import PrimitiveFeastType
from feast.value_type import ValueType
from psycopg import sql

from feature_platform.config.guard import ConfigError
from feature_platform.console import Say
from feature_platform.feast_seam.feature_store import provider
from feature_platform.feast_seam.stores import (
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import database as quality_db
from feature_platform.quality import history, quarantine
from feature_platform.stores import served_vectors
from feature_platform.stores.redis_online import RedisOnlineStore
from feature_platform.stores.sqlite_online import SqliteOnlineStore

AUDIT = "platform_forget_audit"
AUDIT_COLUMNS = {"id": "id", "forgotten_at": "time", "environment": "text",
                 "requested_by": "text", "entity": "json", "removed": "json",
                 "training_sets": "json"}  # fmt: skip
_INTEGERS = {ValueType.INT32, ValueType.INT64}


@dataclass
class Place:
    """Where some of the entity's values are, and how many."""

    kind: str  # offline, mirror, online, served vectors, quarantine
    where: str
    rows: int


@dataclass
class Report:
    environment: str
    entity: dict[str, Any]
    requested_by: str
    removed: bool
    places: list[Place] = field(default_factory=list)
    training_sets: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_entity(store: FeatureStore, pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs as join key -> value, typed as the key's entity declares."""
    types = {e.join_key: e.value_type for e in store.list_entities()}
    entity: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--entity takes KEY=VALUE, got {pair!r}")
        if key not in types:
            raise ConfigError(f"{key} is no entity's join key (known: {', '.join(sorted(types))})")
        if types[key] in _INTEGERS:
            try:
                entity[key] = int(value)
            except ValueError:
                raise ConfigError(f"{key} is a whole number, got {value!r}") from None
        else:
            entity[key] = value
    return entity


def views_keyed_by(store: FeatureStore, entity: Mapping[str, Any]) -> list[FeatureView]:
    """The views whose join keys include every key of `entity`."""
    views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    return sorted((v for v in views if set(entity) <= set(v.join_keys)), key=lambda view: view.name)


def forget(
    env: str,
    store: FeatureStore,
    settings: Mapping[str, str],
    entity: dict[str, Any],
    requested_by: str,
    yes: bool,
    say: Say,
    settle_s: float | None = None,
) -> Report:
    """Count (a dry run) or remove the entity's values everywhere; the report says where
    and how many.

    In Redis the entity's hash becomes a tombstone first: from then on the platform's
    writes skip it (pushes check it before their offline write, every online write in
    its script). A push that passed that check just before is still writing: the
    offline rows are deleted `settle_s` later (by default twice the offline store's
    write timeout, the longest a push may take), so none lands after its delete."""
    views = views_keyed_by(store, entity)
    if not views:
        raise ConfigError(f"no feature view is keyed by {', '.join(entity)}")
    report = Report(env, entity, requested_by, removed=yes)
    target = quality_db.for_store(store.config)
    online = provider(store).online_store
    tombstones = isinstance(online, RedisOnlineStore)
    first_seen: datetime | None = None
    offline: dict[str, int] = {}
    online_keys: dict[str, list[EntityKey]] = {}
    for view in views:
        offline[view.name], seen, online_keys[view.name] = _offline(store, view, entity, False)
        if seen is not None and (first_seen is None or seen < first_seen):
            first_seen = seen
    online_rows = {}
    if tombstones or not yes:
        # all counted before any is removed: in Redis the views keyed alike share a hash
        online_rows = {v.name: _online(store, v, online_keys[v.name], False) for v in views}
        if yes:
            for view in views:
                _online(store, view, online_keys[view.name], True)
    if yes:
        if tombstones:
            timeout = getattr(store.config.offline_store, "write_timeout_seconds", 5)
            wait = 2 * timeout if settle_s is None else settle_s
            say(f"  online: tombstones set; waiting {wait:g}s for writes already under way")
            time.sleep(wait)
        offline = {view.name: _offline(store, view, entity, True)[0] for view in views}
    report.places += [Place("offline", _source_name(v), offline[v.name]) for v in views]
    for where, rows in _mirror(store, settings, views, entity, yes):
        report.places.append(Place("mirror", where, rows))
    if not online_rows:
        online_rows = {v.name: _online(store, v, online_keys[v.name], yes) for v in views}
    report.places += [Place("online", v.name, online_rows[v.name]) for v in views]
    for where, rows in _served(store, entity, yes):
        report.places.append(Place("served vectors", where, rows))
    report.places.append(Place("quarantine", quarantine.TABLE, _quarantine(target, entity, yes)))
    if first_seen is not None:
        report.training_sets = _training_sets(target, entity, first_seen)
    for place in report.places:
        verb = "removed" if yes else "holds"
        say(f"  {place.kind} {place.where}: {verb} {place.rows:,} row(s)")
    if yes:
        _audit(target, report)
    return report


# -- offline ----------------------------------------------------------------------------


def _source_name(view: FeatureView) -> str:
    source = view.batch_source
    if isinstance(source, PostgreSQLSource):
        return postgres_table(source) or source.name
    if isinstance(source, FileSource):
        return source.path
    return view.name


def _columns(view: FeatureView, entity: Mapping[str, Any]) -> dict[str, str]:
    """The view's join key -> its source column."""
    source = view.batch_source
    mapping = source.field_mapping if source is not None else {}
    by_view = {view_name: column for column, view_name in mapping.items()}
    return {key: by_view.get(key, key) for key in view.join_keys}


def _offline(
    store: FeatureStore, view: FeatureView, entity: Mapping[str, Any], yes: bool
) -> tuple[int, datetime | None, list[EntityKey]]:
    """The entity's rows of the view's offline table: how many, when the first was made,
    and every join-key combination they hold (its online keys); removed with `yes`."""
    source = view.batch_source
    if source is None:
        raise ConfigError(f"{view.name}: no batch source to forget rows from")
    columns = _columns(view, entity)
    times = [c for c in (source.timestamp_field, source.created_timestamp_column) if c]
    if isinstance(source, PostgreSQLSource):
        table = postgres_table(source)
        if not table:
            raise ConfigError(f"{view.name}: its source is a query; forget needs a table")
        config = store.config.offline_store
        match = sql.SQL(" AND ").join(
            sql.SQL("{} = %s").format(sql.Identifier(columns[k])) for k in entity
        )
        params = [entity[k] for k in entity]
        select = sql.SQL("SELECT {}, {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(sql.Identifier(columns[k]) for k in view.join_keys),
            sql.SQL(", ").join(sql.Identifier(t) for t in times),
            offline_tables.identifier(table),
            match,
        )
        with _connect(config) as conn:
            found = pd.DataFrame(
                conn.execute(select, params).fetchall(), columns=[*view.join_keys, *times]
            )
            if yes:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {}").format(
                        offline_tables.identifier(table), match
                    ),
                    params,
                )
    elif isinstance(source, FileSource):
        path = Path(source.path)
        table_rows = pq.read_table(path)
        hit = offline_mirror.rows_matching(table_rows, {columns[k]: v for k, v in entity.items()})
        found = table_rows.filter(hit).select([columns[k] for k in view.join_keys] + times)
        found = found.to_pandas().rename(columns={columns[k]: k for k in view.join_keys})
        if yes and len(found):
            _rewrite(path, table_rows.filter(pc.invert(hit)))
    else:
        raise ConfigError(f"{view.name}: forget reads Postgres tables and parquet files")
    seen = None
    if len(found):
        seen = min(pd.to_datetime(found[t], utc=True).min() for t in times).to_pydatetime()
    keys = _entity_keys(view, found[view.join_keys].drop_duplicates())
    return len(found), seen, keys


def _rewrite(path: Path, kept: pa.Table) -> None:
    """`path` replaced by `kept`, atomically: a reader sees the old file or the new."""
    partial = path.with_name(f".{path.name}.forget")
    pq.write_table(kept, partial)
    partial.replace(path)


def _entity_keys(view: FeatureView, keys: pd.DataFrame) -> list[EntityKey]:
    from feast.type_map import python_values_to_proto_values

    types = {c.name: c.dtype for c in view.entity_columns}
    protos = []
    for row in keys.itertuples(index=False):
        names = sorted(view.join_keys)  # Feast sorts several join keys by name
        values = []
        for name in names:
            value = getattr(row, name)
            dtype = types[name]
            value_type = (
                dtype.to_value_type() if isinstance(dtype, PrimitiveFeastType) else ValueType.STRING
            )
            values.append(python_values_to_proto_values([value], value_type)[0])
        protos.append(EntityKey(join_keys=names, entity_values=values))
    return protos


def _connect(config: Any) -> psycopg.Connection:
    return psycopg.connect(postgres_conninfo(config), **postgres_conn_kwargs(config))


# -- the mirror ---------------------------------------------------------------------------


def _mirror(
    store: FeatureStore,
    settings: Mapping[str, str],
    views: list[FeatureView],
    entity: Mapping[str, Any],
    yes: bool,
) -> Iterator[tuple[str, int]]:
    """Per mirrored table, the entity's rows in its part files (all of them: the current
    copy and the one kept for readers), rewritten without them under the mirror's lock."""
    root = settings.get(offline_mirror.DIR_VAR, "")
    if not root:
        return
    config = store.config.offline_store
    done: set[str] = set()
    for view in views:
        source = view.batch_source
        table = postgres_table(source) if isinstance(source, PostgreSQLSource) else ""
        if not table or table in done:
            continue
        done.add(table)
        values = {_columns(view, entity)[k]: v for k, v in entity.items()}
        with _connect(config) as conn:
            conn.autocommit = True
            rows = offline_mirror.forget_rows(conn, table, Path(root), values, yes)
        if rows is not None:
            yield table, rows


# -- online -------------------------------------------------------------------------------


def _online(store: FeatureStore, view: FeatureView, keys: list[EntityKey], yes: bool) -> int:
    """How many of the entity's keys hold online values of `view`; removed with `yes`."""
    if not keys:
        return 0
    online = provider(store).online_store
    if not isinstance(online, RedisOnlineStore | SqliteOnlineStore):
        raise ConfigError(f"forget removes online values from Redis or SQLite, not {online}")
    return online.forget_entities(store.config, view, keys, yes)


# -- served vectors and the quarantine ------------------------------------------------------


def _served(store: FeatureStore, entity: Mapping[str, Any], yes: bool) -> Iterator[tuple[str, int]]:
    """Per feature service that logs, the vectors served for the entity."""
    for service in store.list_feature_services():
        config = service.logging_config
        path = getattr(config.destination, "path", "") if config is not None else ""
        if not path:
            continue
        if served_vectors.Destination.named_by(path):
            offline = store.config.offline_store
            yield (
                path,
                served_vectors.Destination(path).forget(
                    postgres_conninfo(offline),
                    postgres_conn_kwargs(offline),
                    service.name,
                    entity,
                    yes,
                ),
            )
        elif Path(path).is_dir():
            rows = 0
            for file in sorted(Path(path).rglob("*.parquet")):
                table = pq.read_table(file)
                hit = offline_mirror.rows_matching(table, entity)
                found = pc.sum(hit).as_py() or 0
                if found and yes:
                    _rewrite(file, table.filter(pc.invert(hit)))
                rows += found
            yield path, rows


def _quarantine(target: quality_db.Target, entity: Mapping[str, Any], yes: bool) -> int:
    """The quarantined rows of the entity (each row kept as JSON)."""
    sqlite = target.sqlite is not None
    where = " AND ".join(
        "json_extract(row, %s) = %s" if sqlite else "row ->> %s = %s" for _ in entity
    )
    params: list[Any] = []
    for key, value in entity.items():
        params += [f"$.{key}", value] if sqlite else [key, str(value)]
    with target.cursor() as cursor:
        cursor.execute(target.create(quarantine.TABLE, quarantine.COLUMNS))
        (held,) = cursor.execute(
            f"SELECT count(*) FROM {quarantine.TABLE} WHERE {where}", params
        ).fetchall()[0]
        if yes and held:
            cursor.execute(f"DELETE FROM {quarantine.TABLE} WHERE {where}", params)
    return int(held)


# -- training sets and the audit -----------------------------------------------------------


def _training_sets(
    target: quality_db.Target, entity: Mapping[str, Any], since: datetime
) -> list[dict[str, Any]]:
    """The training sets recorded since `since` that hold the entity: `holds` true, or
    null where the file is not here to look."""
    named = []
    for recorded in history.training_sets(target, limit=100_000):
        if recorded.created_at < since:
            continue
        path = Path(recorded.output)
        holds: bool | None = None
        if path.is_file():
            columns = pq.read_schema(path).names
            if not set(entity) <= set(columns):
                continue
            table = pq.read_table(path, columns=list(entity))
            holds = bool(pc.any(offline_mirror.rows_matching(table, entity)).as_py())
            if not holds:
                continue
        named.append({"name": recorded.name, "created_at": recorded.created_at.isoformat(),
                      "output": recorded.output, "holds": holds})  # fmt: skip
    return named


def _audit(target: quality_db.Target, report: Report) -> None:
    removed = [asdict(place) for place in report.places]
    row = [
        datetime.now(UTC).isoformat(),
        report.environment,
        report.requested_by,
        json.dumps(report.entity),
        json.dumps(removed),
        json.dumps(report.training_sets),
    ]
    names = [c for c in AUDIT_COLUMNS if c != "id"]
    with target.cursor() as cursor:
        cursor.execute(target.create(AUDIT, AUDIT_COLUMNS))
        cursor.execute(
            f"INSERT INTO {AUDIT} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
            row,
        )


def audit_log(target: quality_db.Target, limit: int = 20) -> list[dict[str, Any]]:
    """The recorded runs, newest first."""
    names = [c for c in AUDIT_COLUMNS if c != "id"]
    with target.cursor() as cursor:
        cursor.execute(target.create(AUDIT, AUDIT_COLUMNS))
        found = cursor.execute(
            f"SELECT {', '.join(names)} FROM {AUDIT} ORDER BY id DESC LIMIT %s", [limit]
        ).fetchall()
    return quality_db.decoded(names, found, ("entity", "removed", "training_sets"))
