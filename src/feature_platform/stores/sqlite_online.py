"""Feast's SQLite online store (the embedded default) under the platform's ttl rule.

Select it in feature_store.local.yaml with
`type: feature_platform.stores.sqlite_online.SqliteOnlineStore`; every other setting is
Feast's.
"""

from __future__ import annotations

from typing import Literal

from feast.infra.online_stores import sqlite as feast_sqlite

from feature_platform.stores import online_ttl

TYPE = "feature_platform.stores.sqlite_online.SqliteOnlineStore"

online_ttl.install()


class SqliteOnlineStoreConfig(feast_sqlite.SqliteOnlineStoreConfig):
    type: Literal["feature_platform.stores.sqlite_online.SqliteOnlineStore"] = TYPE  # type: ignore[assignment]


class SqliteOnlineStore(feast_sqlite.SqliteOnlineStore):
    pass
