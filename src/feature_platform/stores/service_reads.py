"""When each feature service was last read, kept in Redis beside the data.

The feature servers count reads per service in memory and write, every few seconds and
only after reads, the time of that write into one hash per project: field `fs:<service>`
for a read by feature service, `fv:<view>` for a view read by feature list. A rollout
reads it to tell an old version nobody reads any more (a retirement) from one still in
use, without Prometheus. Each write is an HSET of the flush time: a worker's write may
land a few seconds behind another's, which is nothing against a quiet period of hours.
Field `since` holds the time of the record's first write (HSETNX with each write): a
service absent from a record younger than the quiet period (a new or rebuilt Redis) is
not yet known to be unread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from feature_platform.stores.freshness import KEY_PREFIX

SERVICE_FIELD = "fs:"
VIEW_FIELD = "fv:"
SINCE_FIELD = "since"


def key(project: str) -> str:
    return f"{KEY_PREFIX}reads:{project}"


def fields(services: Iterable[str], views: Iterable[str]) -> list[str]:
    return [*(SERVICE_FIELD + s for s in services), *(VIEW_FIELD + v for v in views)]


async def record_async(client: Any, project: str, names: Iterable[str], at: float) -> None:
    """`names` as `fields` makes them; one HSET, and the record's beginning if it has
    none, in one round trip."""
    mapping = dict.fromkeys(names, at)
    if mapping:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(key(project), mapping=mapping)
            pipe.hsetnx(key(project), SINCE_FIELD, at)
            await pipe.execute()


def read(client: Any, project: str) -> tuple[dict[str, float], dict[str, float], float | None]:
    """(service -> last read, view -> last read by feature list, the record's beginning),
    in epoch seconds."""
    services: dict[str, float] = {}
    views: dict[str, float] = {}
    since = None
    for name, at in client.hgetall(key(project)).items():
        text = name.decode() if isinstance(name, bytes) else str(name)
        if text.startswith(SERVICE_FIELD):
            services[text[len(SERVICE_FIELD) :]] = float(at)
        elif text.startswith(VIEW_FIELD):
            views[text[len(VIEW_FIELD) :]] = float(at)
        elif text == SINCE_FIELD:
            since = float(at)
    return services, views, since


def forget(client: Any, project: str, services: Iterable[str], views: Iterable[str]) -> None:
    """Drop the record of retired services and views."""
    names = fields(services, views)
    if names:
        client.hdel(key(project), *names)
