"""Feast's Redis online store, with missing entities reported as missing and the
platform's ttl rule (`online_ttl`) on Feast's read path.

Feast's own Redis store answers an entity that was never written with empty values
and the epoch as event time, so the feature server marks it PRESENT. The SQLite store
says NOT_FOUND for the same request. Clients must be able to tell "no data" from "data
that is null", in every environment, so a view's values without their write timestamp
are reported as not found here.

Every write keeps each entity's newest row by event time and then creation time, as the
offline join picks it (`redis_write`: a restated value replaces the online one), and
records the view's newest event time (`freshness`), which the feature server exposes as a
metric an operator can alert on.

Every client it builds reads the connection string through `redis_connection`, so a
password from REDIS_PASSWORD_FILE is read again for each new connection.

Select it in feature_store.yaml with
`type: feature_platform.stores.redis_online.RedisOnlineStore`; every other setting is Feast's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
from feast import Entity, FeatureView
from feast.infra.online_stores import redis as feast_redis
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.value_type import ValueType
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from feature_platform.feast_seam import patches
from feature_platform.feast_seam.conversion import redis_key
from feature_platform.stores import (
    freshness,
    online_ttl,
    redis_connection,
    redis_encoding,
    redis_sentinel,
    redis_write,
    service_reads,
)

OnlineRows = list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]

TYPE = "feature_platform.stores.redis_online.RedisOnlineStore"

# Feast imports this module by its `type:` path: the ttl patch's import hook (feast_seam.patches).
patches.install_online_ttl(online_ttl.ttl_seconds, online_ttl.is_expired)


class RedisOnlineStoreConfig(feast_redis.RedisOnlineStoreConfig):
    type: Literal["feature_platform.stores.redis_online.RedisOnlineStore"] = TYPE  # type: ignore[assignment]


def cluster_config(store: feast_redis.RedisOnlineStoreConfig) -> Any:
    """A cluster's config without `db=0`: one connection string serves every topology,
    and redis-py's cluster client refuses any `db` argument (a cluster has db 0 only)."""
    items = store.connection_string.split(",")
    dbs = [item.split("=", 1)[1].strip() for item in items if item.startswith("db=")]
    if any(db not in ("", "0") for db in dbs):
        raise ValueError(f"a Redis Cluster has database 0 only, not db={dbs[0]}")
    kept = ",".join(item for item in items if not item.startswith("db="))
    return store.model_copy(update={"connection_string": kept})


def sentinel_primary(store: feast_redis.RedisOnlineStoreConfig, asynchronous: bool) -> Any:
    """Feast's Sentinel client (the same arguments), on a pool that follows a failover
    within a second (`redis_sentinel`)."""
    nodes, kwargs = redis_connection.parse(store.connection_string)
    hosts = [(node["host"], int(node["port"])) for node in nodes]
    if asynchronous:
        sentinels: Any = AsyncSentinel(hosts, **kwargs)
        pool: Any = redis_sentinel.AsyncFollowingSentinelPool
    else:
        sentinels, pool = Sentinel(hosts, **kwargs), redis_sentinel.FollowingSentinelPool
    return sentinels.master_for(store.sentinel_master, connection_pool_class=pool)


class RedisOnlineStore(feast_redis.RedisOnlineStore):
    @staticmethod
    def _parse_connection_string(connection_string: str) -> Any:
        # Feast's _get_client and _get_client_async read the string through this.
        return redis_connection.parse(connection_string)

    def _get_client(self, online_store_config: Any) -> Any:
        if online_store_config.redis_type == feast_redis.RedisType.redis_cluster:
            online_store_config = cluster_config(online_store_config)
        if online_store_config.redis_type == feast_redis.RedisType.redis_sentinel:
            if not self._client:
                self._client = sentinel_primary(online_store_config, asynchronous=False)
            return self._client
        return super()._get_client(online_store_config)

    async def _get_client_async(self, online_store_config: Any) -> Any:
        if online_store_config.redis_type == feast_redis.RedisType.redis_cluster:
            online_store_config = cluster_config(online_store_config)
        if online_store_config.redis_type == feast_redis.RedisType.redis_sentinel:
            if not self._client_async:
                self._client_async = sentinel_primary(online_store_config, asynchronous=True)
            return self._client_async
        return await super()._get_client_async(online_store_config)

    def forget_entities(
        self, config: RepoConfig, view: FeatureView, keys: Sequence[EntityKeyProto], remove: bool
    ) -> int:
        """How many of the entity keys hold values of `view` (its `_ts:<view>` field, written
        with every row); with `remove`, each key's hash (every view keyed alike shares it)
        replaced by a tombstone, FORGOTTEN_FIELD alone, in one transaction: the platform's
        writes skip a tombstoned key from then on."""
        client = self._get_client(config.online_store)
        version = config.entity_key_serialization_version
        names = [redis_key(config.project, key, entity_key_serialization_version=version)
                 for key in keys]  # fmt: skip
        held = 0
        for name in names:  # one by one: in a cluster each key has its own slot
            held += int(client.hexists(name, f"_ts:{view.name}"))
            if remove:
                with client.pipeline(transaction=True) as pipe:
                    pipe.delete(name)
                    pipe.hset(name, redis_write.FORGOTTEN_FIELD, datetime.now(UTC).isoformat())
                    pipe.execute()
        return held

    def forgotten(self, config: RepoConfig, keys: Sequence[bytes]) -> list[bool]:
        """Whether each Redis key (`redis_encoding.entity_keys`) is a forgotten entity's."""
        client = self._get_client(config.online_store)
        # a cluster's pipeline sends each command to its key's node
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hexists(key, redis_write.FORGOTTEN_FIELD)
            return [bool(found) for found in pipe.execute()]

    def sync_client(self, online_store_config: Any) -> Any:
        """The store's own cached client, for work beside reads and writes (a check)."""
        return self._get_client(online_store_config)

    def drop_sync_client(self) -> None:
        """Close and forget the cached client: a process about to fork keeps none."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _get_features_for_entity(
        self,
        values: Sequence[bytes | bytearray | memoryview | None],
        feature_view: str,
        requested_features: list[str],
    ) -> tuple[datetime | None, dict[str, ValueProto] | None]:
        # Feast writes `_ts:<view>` with every row; without it the view has no row here.
        ts_index = requested_features.index(f"_ts:{feature_view}")
        if not values[ts_index]:
            return None, None
        return super()._get_features_for_entity(values, feature_view, requested_features)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: OnlineRows,
        progress: Callable[[int], Any] | None,
    ) -> None:
        client = self._get_client(config.online_store)
        redis_write.write_newer(client, config, table, data)
        if progress:
            progress(len(data))
        freshness.record(client, config.project, table.name, data)

    def online_write_arrow(
        self,
        config: RepoConfig,
        table: FeatureView,
        batch: pa.RecordBatch,
        join_keys: dict[str, ValueType],
        timestamp: str,
        created: str | None,
    ) -> int:
        """`online_write_batch` for offline rows as Arrow, its columns named as the view
        names them, without Feast's conversion to protobufs; the number written."""
        rows = redis_encoding.encode(
            batch, table, join_keys, config.project, config.entity_key_serialization_version,
            timestamp, created,
        )  # fmt: skip
        client = self._get_client(config.online_store)
        written = redis_write.write_encoded(client, config, table, rows)
        if len(rows):
            newest = datetime.fromtimestamp(max(rows.event_micros) / 1e6, UTC)
            freshness.record(client, config.project, table.name, [(None, None, newest, None)])
        return written

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: OnlineRows,
        progress: Callable[[int], Any] | None,
    ) -> None:
        # Feast's /push writes through this one.
        client = await self._get_client_async(config.online_store)
        await redis_write.write_newer_async(client, config, table, data)
        if progress:
            progress(len(data))
        await freshness.record_async(client, config.project, table.name, data)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        super().update(
            config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        client = self._get_client(config.online_store)
        freshness.forget(client, config.project, (t.name for t in tables_to_delete))
        service_reads.forget(client, config.project, [], (t.name for t in tables_to_delete))

    def teardown(
        self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]
    ) -> None:
        super().teardown(config, tables, entities)
        freshness.forget(
            self._get_client(config.online_store), config.project, (t.name for t in tables)
        )

    async def written_record(self, config: RepoConfig) -> freshness.Record:
        """What was written online per view, on Feast's own async client."""
        client = await self._get_client_async(config.online_store)
        return await freshness.read_async(client, config.project)

    def last_reads(
        self, config: RepoConfig
    ) -> tuple[dict[str, float], dict[str, float], float | None]:
        """When each service (and each view, by feature list) was last read, and when the
        record began: the feature servers' record (`service_reads`)."""
        return service_reads.read(self._get_client(config.online_store), config.project)

    def mark_loaded(self, config: RepoConfig, views: Iterable[str], at: float) -> None:
        """Record that a materialization run found `views` whole, or made them whole."""
        freshness.mark_loaded(self._get_client(config.online_store), config.project, views, at)
