"""Freshness as of a scrape: what was written online and when materialization last succeeded.

Read when Prometheus scrapes `/metrics`, never from what a request served: the newest
event time per view from the record the platform's Redis store keeps
(`stores/freshness.py`), and each view's ttl and newest materialized interval from the
cached registry (Feast records an interval only after the view's run succeeded). Redis
gets the server's store deadline; when it does not answer, the scrape still does, with
`up` 0 and without the Redis-derived series.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from feast import FeatureStore
from redis.exceptions import RedisError

from feature_platform.feast_seam import feature_store
from feature_platform.stores.redis_online import RedisOnlineStore

log = logging.getLogger("feature_platform.server")


@dataclass(frozen=True)
class ViewInfo:
    ttl_s: float
    materialized_until: float | None


@dataclass(frozen=True)
class Freshness:
    views: dict[str, ViewInfo]
    """Online views of the cached registry, the only label values reported."""
    newest_event: dict[str, float]
    loaded: dict[str, float]
    """View -> when a materialization run last found it whole (`stores/freshness.py`)."""
    online_read_ok: bool | None
    """None where the online store keeps no record (SQLite)."""


class FreshnessReader:
    def __init__(self, store: FeatureStore, timeout_s: float) -> None:
        self.store = store
        self.timeout_s = timeout_s
        online_store = feature_store.provider(store).online_store
        self.online_store = online_store if isinstance(online_store, RedisOnlineStore) else None

    async def read(self) -> Freshness:
        views = self._views()
        if self.online_store is None:
            return Freshness(views, {}, {}, None)
        try:
            record = await asyncio.wait_for(
                self.online_store.written_record(self.store.config), self.timeout_s
            )
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("freshness not read from the online store: %s", type(exc).__name__)
            return Freshness(views, {}, {}, False)
        return Freshness(
            views,
            {v: t for v, t in record.newest_event.items() if v in views},
            {v: t for v, t in record.loaded.items() if v in views},
            True,
        )

    def _views(self) -> dict[str, ViewInfo]:
        registry, project = self.store.registry, self.store.project
        try:
            views = [
                *registry.list_feature_views(project, allow_cache=True),
                *registry.list_stream_feature_views(project, allow_cache=True),
            ]
        except Exception:
            return {}  # registry not loaded yet: nothing to report per view
        info = {}
        for view in views:
            if view.online:
                until = view.most_recent_end_time
                info[view.name] = ViewInfo(
                    ttl_s=view.ttl.total_seconds() if view.ttl else 0.0,
                    materialized_until=until.timestamp() if until else None,
                )
        return info
