"""The newest event time written online, per feature view, kept in Redis beside the data.

Feast keeps no such record, and the age of the values one request happened to read says
nothing about the view. Every batch the platform's Redis store writes (materialization,
`/push`, `/write-to-online-store`) adds its newest event time to one sorted set per
project: member the view's name, score the event time in epoch seconds. `ZADD GT` keeps
the maximum atomically, so a concurrent or later write of older rows never moves it back
(Redis 6.2 or newer). The server reads it at scrape time (`serving/freshness.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from feast.utils import make_tzaware

# Keys the platform owns in the online store's Redis db: none of them is an entity hash.
KEY_PREFIX = "feature_platform:"


def key(project: str) -> str:
    return f"{KEY_PREFIX}freshness:{project}"


def newest_event_time(rows: Sequence[tuple[Any, Any, datetime, Any]]) -> float | None:
    """The newest event time of a batch of Feast online rows, in epoch seconds.

    Feast skips a row no newer than the stored one, so a batch's newest row may not be
    written; the stored row is then at least as new, so the record never claims a value
    newer than one the store holds.
    """
    return max((make_tzaware(row[2]).timestamp() for row in rows), default=None)


def record(client: Any, project: str, view: str, rows: Sequence[Any]) -> None:
    newest = newest_event_time(rows)
    if newest is not None:
        client.zadd(key(project), {view: newest}, gt=True)


async def record_async(client: Any, project: str, view: str, rows: Sequence[Any]) -> None:
    newest = newest_event_time(rows)
    if newest is not None:
        await client.zadd(key(project), {view: newest}, gt=True)


def forget(client: Any, project: str, views: Iterable[str]) -> None:
    """Drop the record of views whose online data Feast deleted."""
    names = list(views)
    if names:
        client.zrem(key(project), *names)


async def read_async(client: Any, project: str) -> dict[str, float]:
    """View name -> newest event time written (epoch seconds)."""
    pairs = await client.zrange(key(project), 0, -1, withscores=True)
    return {
        member.decode() if isinstance(member, bytes) else str(member): float(score)
        for member, score in pairs
    }
