"""The write endpoints: `POST /push` (rows reach training as well as serving) and
`POST /write-to-online-store` (rows of one feature view, online only), both validated
before any store sees them.

Feast's app writes the online store first and the offline store after it, and Feast's
PostgreSQL store cannot write at all: a push `to: online_and_offline` answered 500 with the
value already served, and no training set ever saw it. Here the offline write comes first,
in one transaction (the platform's offline stores), then the online write: a failed
offline write leaves both stores as they were. Every row's creation time is the time the
server received it, whatever the client sent: a creation time in the past would let a
training row see a value before it existed (`stores/training_rule.py`).
`/write-to-online-store` follows the same rules for one view's rows: every column the view
needs, in its declared type, the creation time the server's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import redis
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode, PushSource
from feast.errors import FeatureViewNotFoundException
from feast.value_type import ValueType

from feature_platform.config import credentials
from feature_platform.config.guard import one_line_error
from feature_platform.errors import HTTPError, bad_request, not_found, unavailable
from feature_platform.feast_seam import feature_store
from feature_platform.quality import database as quality_db
from feature_platform.quality import expectations
from feature_platform.quality.screen import screen
from feature_platform.serving.errors import require_booleans
from feature_platform.serving.settings import MIN_WRITE_TOKEN_CHARS
from feature_platform.stores import redis_encoding
from feature_platform.stores.redis_online import RedisOnlineStore

log = logging.getLogger("feature_platform.server")

MODES = {
    "online": PushMode.ONLINE,
    "offline": PushMode.OFFLINE,
    "online_and_offline": PushMode.ONLINE_AND_OFFLINE,
}
# What a store raises when it is unreachable or refuses the write: a 503, not a 500.
OFFLINE_STORE_ERRORS = (psycopg.Error, OSError, pa.ArrowException)
ONLINE_STORE_ERRORS = (redis.RedisError, OSError, sqlite3.Error)

# Feast's optional write flags: true or false when given.
WRITE_FLAGS = ("allow_registry_cache", "transform_on_write")
_INTEGER_TYPES = {ValueType.INT64, ValueType.INT32}
_FLOAT_TYPES = {ValueType.DOUBLE, ValueType.FLOAT}
_INT64_RANGE = range(-(2**63), 2**63)


def token_accepted(authorization: bytes, configured: str) -> bool:
    """Whether an Authorization header carries a write token: the configured one or, when
    it came from FEATURE_SERVER_WRITE_TOKEN_FILE, any line of that file now, so a rotation
    accepts the old token and the new one at once."""
    tokens = credentials.WRITE_TOKEN.values(configured)
    # every token compared, each in constant time: how long it takes names none of them
    matches = [
        hmac.compare_digest(authorization, f"Bearer {token}".encode())
        for token in tokens
        if len(token) >= MIN_WRITE_TOKEN_CHARS
    ]
    return any(matches)


async def push(store: FeatureStore, request: dict[str, Any]) -> None:
    """Validate one push request (the body's JSON object) and write it: offline first,
    then online."""
    received = datetime.now(UTC)
    source, mode, columns = _parse_push(request)
    views = await asyncio.to_thread(_views_fed_by, store, source)
    writes_offline = mode in (PushMode.OFFLINE, PushMode.ONLINE_AND_OFFLINE)
    rows = _rows(views, columns, received, writes_offline)
    rows = await asyncio.to_thread(_screened, store, views, rows, received, "push")
    rows = await asyncio.to_thread(_not_forgotten, store, views, rows)
    if rows.empty:
        return
    if writes_offline:
        try:
            await asyncio.to_thread(_write_offline, store, views, rows)
        except OFFLINE_STORE_ERRORS as exc:
            log.warning("offline write of a push to %s failed: %s", source, _failure(exc))
            raise unavailable(f"offline store: {type(exc).__name__}; nothing was written") from None
    if mode in (PushMode.ONLINE, PushMode.ONLINE_AND_OFFLINE):
        try:
            await asyncio.to_thread(store.push, source, rows, to=PushMode.ONLINE)
        except ONLINE_STORE_ERRORS as exc:
            log.warning("online write of a push to %s failed: %s", source, _failure(exc))
            detail = f"online store: {type(exc).__name__}"
            if writes_offline:
                detail += "; the rows were written offline, a retry writes them again"
            raise unavailable(detail) from None


async def write_to_online_store(store: FeatureStore, request: dict[str, Any]) -> None:
    """Validate one `/write-to-online-store` request and write its rows online."""
    received = datetime.now(UTC)
    name = request.get("feature_view_name")
    if not isinstance(name, str) or not name:
        raise HTTPError(422, "unprocessable", "'feature_view_name' must be a non-empty string")
    require_booleans(request, *WRITE_FLAGS)
    columns = _df(request)
    view = await asyncio.to_thread(_feature_view, store, name)
    rows = _rows([view], columns, received, writes_offline=False)
    rows = await asyncio.to_thread(
        _screened, store, [view], rows, received, "write-to-online-store"
    )
    if rows.empty:
        return
    try:
        await asyncio.to_thread(store.write_to_online_store, view.name, df=rows)
    except ONLINE_STORE_ERRORS as exc:
        log.warning("online write to %s failed: %s", name, _failure(exc))
        raise unavailable(f"online store: {type(exc).__name__}") from None


def _screened(
    store: FeatureStore,
    views: list[FeatureView],
    rows: pd.DataFrame,
    received: datetime,
    source: str,
) -> pd.DataFrame:
    """The rows that meet the views' expectations (`quality/`). A rule broken under
    `refuse` is a 422 naming view, feature and rule, and nothing is written; under
    `quarantine` the rows breaking one go to the quarantine table, first, and are left
    out of every store the write reaches. A row set aside by one view of a push source is
    withheld from all of them: a push is one write."""
    expected = [e for view in views if (e := expectations.of_view(view.name, view.tags))]
    timeout_s = getattr(store.config.offline_store, "write_timeout_seconds", 5)
    target = quality_db.for_store(store.config, timeout_s) if expected else None
    try:
        set_aside = screen(expected, rows, target, source, received) if target else []
    except expectations.Refused as exc:
        raise HTTPError(422, "unprocessable", str(exc)) from None
    except (psycopg.Error, sqlite3.Error, OSError) as exc:
        log.warning("quarantine write failed: %s", _failure(exc))
        raise unavailable(f"quarantine table: {type(exc).__name__}; nothing was written") from None
    if not set_aside:
        return rows
    log.info("quarantined %d of %d rows (%s)", len(set_aside), len(rows), source)
    return rows.drop(index=rows.index[set_aside]).reset_index(drop=True)


def _not_forgotten(
    store: FeatureStore, views: list[FeatureView], rows: pd.DataFrame
) -> pd.DataFrame:
    """The rows without those of entities `feature-platform forget` removed (their Redis
    hash is a tombstone): checked before the offline write, so a push never brings a
    forgotten entity back to training; the online write skips it in Redis itself."""
    online = feature_store.provider(store).online_store
    if not isinstance(online, RedisOnlineStore) or rows.empty:
        return rows
    config = store.config
    dropped = np.zeros(len(rows), dtype=bool)
    for view in views:
        join_keys = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        batch = pa.RecordBatch.from_pandas(rows[list(join_keys)], preserve_index=False)
        keys = redis_encoding.entity_keys(
            batch, join_keys, config.project, config.entity_key_serialization_version
        )
        dropped |= np.array(online.forgotten(config, keys), dtype=bool)
    if not dropped.any():
        return rows
    log.info("dropped %d of %d pushed rows: forgotten entities", dropped.sum(), len(rows))
    return rows[~dropped].reset_index(drop=True)


def _feature_view(store: FeatureStore, name: str) -> FeatureView:
    try:
        return store.get_feature_view(name, allow_registry_cache=True)
    except FeatureViewNotFoundException:
        pass
    on_demand = {view.name for view in store.list_on_demand_feature_views(allow_cache=True)}
    if name in on_demand:
        raise HTTPError(
            422, "unprocessable", f"{name!r} is an on-demand view: computed at read time"
        )
    raise not_found(f"no feature view named {name!r}")


def _failure(exc: Exception) -> str:
    """A store failure as the log shows it: never the pushed values. PostgreSQL's DETAIL
    and CONTEXT lines, Arrow's cast errors and redis-py's pipeline errors quote them, so
    those are left out."""
    if isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__}: {exc.diag.message_primary or exc}"
    if isinstance(exc, pa.ArrowException):
        return type(exc).__name__
    return one_line_error(exc, {})


def _parse_push(request: dict[str, Any]) -> tuple[str, PushMode, dict[str, Any]]:
    source = request.get("push_source_name")
    if not isinstance(source, str) or not source:
        raise HTTPError(422, "unprocessable", "'push_source_name' must be a non-empty string")
    to = request.get("to", "online")
    if not isinstance(to, str) or to not in MODES:
        raise HTTPError(422, "unprocessable", f"'to' must be one of {', '.join(MODES)}")
    require_booleans(request, *WRITE_FLAGS)
    return source, MODES[to], _df(request)


def _df(request: dict[str, Any]) -> dict[str, Any]:
    columns = request.get("df")
    if not isinstance(columns, dict) or not columns:
        raise bad_request("'df' must be a non-empty object of column lists")
    return columns


def _views_fed_by(store: FeatureStore, source: str) -> list[FeatureView]:
    views = [
        view
        for view in store.list_feature_views(allow_cache=True)
        if isinstance(view.stream_source, PushSource) and view.stream_source.name == source
    ]
    if not views:
        raise not_found(f"no feature view is fed by push source {source!r}")
    return views


def _write_offline(store: FeatureStore, views: list[FeatureView], rows: pd.DataFrame) -> None:
    """Each view's rows to its batch source, through the platform's offline store (one
    transaction each). Not Feast's `write_to_offline_store`: it first asks the table for
    its columns on a connection without any timeout, so DDL holding the table would
    hold the request too."""
    provider = feature_store.provider(store)
    for view in views:
        columns = [*_declared_columns(view), *_created_columns([view])]
        provider.ingest_df_to_offline_store(
            view, pa.Table.from_pandas(rows[columns], preserve_index=False)
        )


def _declared_columns(view: FeatureView) -> dict[str, ValueType]:
    """What a push to `view` must carry, with the declared types: its join keys,
    features and event time."""
    declared = {
        field.name: field.dtype.to_value_type() for field in (*view.entity_columns, *view.features)
    }
    if view.batch_source is not None:
        declared[view.batch_source.timestamp_field] = ValueType.UNIX_TIMESTAMP
    return declared


def _created_columns(views: list[FeatureView]) -> list[str]:
    """The creation-time columns of the views' batch sources: the server sets them."""
    names = (view.batch_source.created_timestamp_column for view in views if view.batch_source)
    return sorted({name for name in names if name})


def _rows(
    views: list[FeatureView], columns: dict[str, Any], received: datetime, writes_offline: bool
) -> pd.DataFrame:
    """The request's columns as typed rows, each creation time set to `received`."""
    for name, column in columns.items():
        if not isinstance(column, list):
            raise bad_request(f"df.{name} must be a list")
    lengths = sorted({len(column) for column in columns.values()})
    if len(lengths) > 1:
        raise bad_request(f"df columns differ in length: {lengths}")
    if lengths == [0]:
        raise bad_request("df columns are empty")
    declared = {name: kind for view in views for name, kind in _declared_columns(view).items()}
    created_columns = _created_columns(views)
    missing = [name for name in declared if name not in columns]
    if missing:
        raise bad_request(f"missing columns: {', '.join(missing)}")
    for key in {key for view in views for key in view.join_keys}:
        if None in columns[key]:
            raise bad_request(f"df.{key}[{columns[key].index(None)}] is null: a join key needs one")
    unknown = [name for name in columns if name not in declared and name not in created_columns]
    if unknown and writes_offline:
        raise bad_request(f"columns the offline table does not have: {', '.join(unknown)}")
    rows = pd.DataFrame(
        {
            name: _typed(name, column, declared.get(name))
            for name, column in columns.items()
            if name not in created_columns
        }
    )
    for name in created_columns:
        rows[name] = pd.Series([received] * len(rows), dtype="datetime64[us, UTC]")
    return rows


def _typed(name: str, values: list[Any], kind: ValueType | None) -> Any:
    """One column in its declared type; the first value that does not fit is a 400."""

    def refuse(i: int, expected: str) -> HTTPError:
        return bad_request(f"df.{name}[{i}] = {values[i]!r} is not {expected}")

    if kind in _INTEGER_TYPES:
        for i, value in enumerate(values):
            fits = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (fits and value in _INT64_RANGE):
                raise refuse(i, "an integer")
        return pd.array(values, dtype="Int64")
    if kind in _FLOAT_TYPES:
        for i, value in enumerate(values):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                raise refuse(i, "a number")
        return pd.Series(values, dtype="float64")
    if kind == ValueType.STRING:
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                raise refuse(i, "a string")
        return values
    if kind == ValueType.BOOL:
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, bool):
                raise refuse(i, "a boolean")
        return pd.array(values, dtype="boolean")
    if kind == ValueType.UNIX_TIMESTAMP:
        times = []
        for i, value in enumerate(values):
            try:
                stamp = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise refuse(i, "an ISO 8601 timestamp") from None
            # A time without an offset is UTC; microseconds, as the stores keep them.
            times.append(stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp)
        return pd.Series(pd.to_datetime(times, utc=True), dtype="datetime64[us, UTC]")
    return values
