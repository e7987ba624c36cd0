"""hooks.*: Feast's private methods that the platform's subclasses override or call."""

from __future__ import annotations

import inspect
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from seam_helpers import assert_params, repo_config


@pytest.mark.seam("hooks.redis_client")
def test_the_redis_store_reads_through_the_overridden_methods() -> None:
    assert_params(RedisOnlineStore._get_client, "self, online_store_config")
    assert_params(RedisOnlineStore._get_client_async, "self, online_store_config")
    assert_params(
        RedisOnlineStore._get_features_for_entity,
        "self, values, feature_view, requested_features",
    )
    source = inspect.getsource(RedisOnlineStore)
    # through self, so the platform's overrides are the ones called
    assert "self._get_client(" in source
    assert "self._get_client_async(" in source
    assert "self._get_features_for_entity(" in source


@pytest.mark.seam("hooks.redis_client")
def test_the_clients_are_built_from__parse_connection_string() -> None:
    # the platform's override reads the password file again for each connection
    assert_params(RedisOnlineStore._parse_connection_string, "connection_string")
    assert isinstance(
        inspect.getattr_static(RedisOnlineStore, "_parse_connection_string"), staticmethod
    )
    for method in (RedisOnlineStore._get_client, RedisOnlineStore._get_client_async):
        assert "self._parse_connection_string(" in inspect.getsource(method)


@pytest.mark.seam("hooks.redis_client")
def test_the_sync_client_is_cached_in__client() -> None:
    store = RedisOnlineStore()
    assert store._client is None and store._client_async is None
    # redis-py connects on the first command: nothing is sent here
    client = store._get_client(RedisOnlineStoreConfig(connection_string="127.0.0.1:1"))
    assert store._client is client


@pytest.mark.seam("hooks.redis_client")
def test_a_row_is_its_values_and_the__ts_field() -> None:
    stamp = Timestamp(seconds=1_700_000_000).SerializeToString()
    row = RedisOnlineStore()._get_features_for_entity(
        [Value(int64_val=7).SerializeToString(), stamp], "counts", ["n", "_ts:counts"]
    )
    assert row == (datetime.fromtimestamp(1_700_000_000, UTC), {"n": Value(int64_val=7)})
    # What the platform's override corrects: no row at all is read as values at the epoch.
    event_time, values = RedisOnlineStore()._get_features_for_entity(
        [None, None], "counts", ["n", "_ts:counts"]
    )
    assert event_time == datetime.fromtimestamp(0, UTC)
    assert values == {"n": Value()}


@pytest.mark.seam("hooks.sqlite_connection")
def test_the_sqlite_store_connection_is_kept(tmp_path: Path) -> None:
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    assert_params(SqliteOnlineStore._get_conn, "self, config")
    store, config = SqliteOnlineStore(), repo_config(tmp_path)
    conn = store._get_conn(config)
    assert isinstance(conn, sqlite3.Connection)
    assert store._get_conn(config) is conn


@pytest.mark.seam("hooks.offline_call_api")
def test_every_put_goes_through__call_api() -> None:
    from feast.offline_server import OfflineServer

    assert_params(OfflineServer._call_api, "self, api, command, key")
    assert 'self._call_api(command["api"], command, key)' in inspect.getsource(OfflineServer.do_put)
    dispatched = inspect.getsource(OfflineServer._call_api)
    for api in ("offline_write_batch", "write_logged_features", "persist"):
        assert f"OfflineServer.{api}.__name__" in dispatched
