"""Feast's SQLite online store (the embedded default) under the platform's ttl rule,
keeping each entity's newest row as the Redis store does.

Feast's SQLite store overwrites whatever it is given: an older event loaded later
replaces a newer one. Here a batch is first narrowed to the rows newer than the stored
ones by event time and then creation time (`training_rule.row_version`), under SQLite's
write lock, so local answers what dev answers.

Select it in feature_store.local.yaml with
`type: feature_platform.stores.sqlite_online.SqliteOnlineStore`; every other setting is
Feast's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores import sqlite as feast_sqlite
from feast.repo_config import RepoConfig

from feature_platform.feast_seam import patches
from feature_platform.feast_seam.stores import sqlite_quote_id, sqlite_table_id
from feature_platform.stores import online_ttl
from feature_platform.stores.training_rule import row_version

TYPE = "feature_platform.stores.sqlite_online.SqliteOnlineStore"
# Entity keys per lookup, well under SQLite's limit on bound parameters.
KEYS_PER_QUERY = 500

# Feast imports this module by its `type:` path: the ttl patch's import hook (feast_seam.patches).
patches.install_online_ttl(online_ttl.ttl_seconds, online_ttl.is_expired)

Version = tuple[datetime, datetime]


class SqliteOnlineStoreConfig(feast_sqlite.SqliteOnlineStoreConfig):
    type: Literal["feature_platform.stores.sqlite_online.SqliteOnlineStore"] = TYPE  # type: ignore[assignment]


def _as_datetime(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _stored_versions(
    conn: sqlite3.Connection, table_name: str, keys: Iterable[bytes]
) -> dict[bytes, Version]:
    """The newest stored (event time, creation time) per entity key."""
    wanted = list(dict.fromkeys(keys))
    stored: dict[bytes, Version] = {}
    for start in range(0, len(wanted), KEYS_PER_QUERY):
        chunk = wanted[start : start + KEYS_PER_QUERY]
        rows = conn.execute(
            f"SELECT entity_key, event_ts, created_ts FROM {sqlite_quote_id(table_name)} "
            f"WHERE entity_key IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for key, event_ts, created_ts in rows:
            event = _as_datetime(event_ts)
            if event is None:
                continue
            version = row_version(event, _as_datetime(created_ts))
            if key not in stored or version > stored[key]:
                stored[key] = version
    return stored


def newer_rows(
    data: Sequence[Any], keys: Sequence[bytes], stored: dict[bytes, Version]
) -> list[Any]:
    """Per entity key, the batch's newest row if it is newer than the stored one."""
    newest: dict[bytes, tuple[Version, Any]] = {}
    for key, row in zip(keys, data, strict=True):
        version = row_version(row[2], row[3])
        floor = newest[key][0] if key in newest else stored.get(key)
        if floor is None or version > floor:
            newest[key] = (version, row)
    return [row for _, row in newest.values()]


class SqliteOnlineStore(feast_sqlite.SqliteOnlineStore):
    def forget_entities(
        self, config: RepoConfig, view: FeatureView, keys: Sequence[Any], remove: bool
    ) -> int:
        """How many of the entity keys (EntityKey protos) hold values of `view`; with
        `remove`, those values deleted."""
        table = sqlite_quote_id(
            sqlite_table_id(
                config.project, view, config.registry.enable_online_feature_view_versioning
            )
        )
        serialized = [
            serialize_entity_key(
                key, entity_key_serialization_version=config.entity_key_serialization_version
            )
            for key in keys
        ]
        marks = ", ".join("?" * len(serialized))
        conn = self._get_conn(config)
        (held,) = conn.execute(
            f"SELECT count(DISTINCT entity_key) FROM {table} WHERE entity_key IN ({marks})",
            serialized,
        ).fetchone()
        if remove:
            conn.execute(f"DELETE FROM {table} WHERE entity_key IN ({marks})", serialized)
            conn.commit()
        return int(held)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[Any],
        progress: Callable[[int], Any] | None,
    ) -> None:
        conn = self._get_conn(config)
        table_name = sqlite_table_id(
            config.project, table, config.registry.enable_online_feature_view_versioning
        )
        keys = [
            serialize_entity_key(
                row[0], entity_key_serialization_version=config.entity_key_serialization_version
            )
            for row in data
        ]
        # The write lock before reading, so no other writer slips in between; Feast's
        # write below commits the transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = newer_rows(data, keys, _stored_versions(conn, table_name, keys))
            super().online_write_batch(config, table, rows, None)
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        if conn.in_transaction:
            conn.commit()
        if progress:
            progress(len(data))
