"""Feast's Redis online store, with missing entities reported as missing and the
platform's ttl rule (`online_ttl`) on Feast's read path.

Feast's own Redis store answers an entity that was never written with empty values
and the epoch as event time, so the feature server marks it PRESENT. The SQLite store
says NOT_FOUND for the same request. Clients must be able to tell "no data" from "data
that is null", in every environment, so a view's values without their write timestamp
are reported as not found here.

Select it in feature_store.yaml with
`type: feature_platform.stores.redis_online.RedisOnlineStore`; every other setting is Feast's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from feast.infra.online_stores import redis as feast_redis
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_platform.stores import online_ttl

TYPE = "feature_platform.stores.redis_online.RedisOnlineStore"

online_ttl.install()


class RedisOnlineStoreConfig(feast_redis.RedisOnlineStoreConfig):
    type: Literal["feature_platform.stores.redis_online.RedisOnlineStore"] = TYPE  # type: ignore[assignment]


class RedisOnlineStore(feast_redis.RedisOnlineStore):
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
