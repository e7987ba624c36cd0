"""What was written online, per feature view, kept in Redis beside the data: the newest
event time, and when a materialization run last found the view whole.

Feast keeps no such record, and the age of the values one request happened to read says
nothing about the view. Every batch the platform's Redis store writes (materialization,
`/push`, `/write-to-online-store`) adds its newest event time to one sorted set per
project: member the view's name, score the event time in epoch seconds. `ZADD GT` keeps
the maximum atomically, so a concurrent or later write of older rows never moves it back
(Redis 6.2 or newer). The server reads it at scrape time (`serving/freshness.py`).

The newest event time cannot tell a lost store: after a FLUSHDB the next push writes it
again, fresh-looking, over a mostly empty store. So `materialize` also keeps a load record,
one hash per project: field the view's name, value the time of the last run that found
the view whole (its sampled coverage) or made it whole (a rebuild). Only that job writes
it, so it stays gone after a loss until a run has rebuilt the view, whatever is pushed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feast.utils import make_tzaware

# Keys the platform owns in the online store's Redis db: none of them is an entity hash.
KEY_PREFIX = "feature_platform:"


def key(project: str) -> str:
    return f"{KEY_PREFIX}freshness:{project}"


def loaded_key(project: str) -> str:
    return f"{KEY_PREFIX}loaded:{project}"


@dataclass(frozen=True)
class Record:
    newest_event: dict[str, float]
    """View name -> newest event time written (epoch seconds)."""
    loaded: dict[str, float]
    """View name -> when a run last found it whole or made it whole (epoch seconds)."""


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


def mark_loaded(client: Any, project: str, views: Iterable[str], at: float) -> None:
    names = list(views)
    if names:
        client.hset(loaded_key(project), mapping=dict.fromkeys(names, at))


def forget(client: Any, project: str, views: Iterable[str]) -> None:
    """Drop the record of views whose online data Feast deleted."""
    names = list(views)
    if names:
        client.zrem(key(project), *names)
        client.hdel(loaded_key(project), *names)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_async(client: Any, project: str) -> Record:
    # Two keys, two commands: on a Redis Cluster they may live on different nodes.
    pairs = await client.zrange(key(project), 0, -1, withscores=True)
    loaded = await client.hgetall(loaded_key(project))
    return Record(
        newest_event={_text(member): float(score) for member, score in pairs},
        loaded={_text(view): float(at) for view, at in loaded.items()},
    )
