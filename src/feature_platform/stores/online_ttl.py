"""A feature view's ttl on online reads, at the offline store's exact boundary.

Offline, a point-in-time join uses a value for a label at time t only while
`event_time >= t - ttl`: Postgres compares with `ttl` in whole seconds
(`int(ttl.total_seconds())`), duckdb with the same bound, both inclusive. Feast's
online reads ignore ttl, so a value the training set sees as null is still served.
Here an online value is served only under the same bound, with t the time of the
read; past it the value is null and its status `OUTSIDE_MAX_AGE`. A view without a
ttl (None or 0) never expires.

Every online read in Feast, whatever the store, builds its response per feature view
in `feast.utils._populate_response_from_feature_data`, before on-demand views are
computed: `install()` puts the rule there, so Feast's own path, every store and the
on-demand views built on them see the nulls training would. The platform's stores
install it when Feast imports them; the Redis fast path applies `ttl_seconds` itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from feast import utils as feast_utils
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

OUTSIDE_MAX_AGE = FieldStatus.OUTSIDE_MAX_AGE


def ttl_seconds(ttl: timedelta | None) -> int:
    """The bound the Postgres offline store uses: whole seconds, 0 for none."""
    return int(ttl.total_seconds()) if ttl else 0


def is_expired(event_time_s: float, ttl_s: int, now_s: float) -> bool:
    """True when a training row at `now_s` would no longer see this value."""
    return ttl_s > 0 and event_time_s < now_s - ttl_s


def _with_ttl(populate: Callable[..., None]) -> Callable[..., None]:
    def populate_within_ttl(
        requested_features: list[str],
        read_rows: list[tuple[datetime | None, dict[str, Any] | None]],
        indexes: Iterable[list[int]],
        online_features_response: Any,
        full_feature_names: bool,
        table: Any,
        output_len: int,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        ttl_s = ttl_seconds(getattr(table, "ttl", None))
        now_s = time.time()
        expired = {
            i
            for i, (event_time, data) in enumerate(read_rows)
            if data is not None
            and event_time is not None
            and is_expired(event_time.timestamp(), ttl_s, now_s)
        }
        indexes = tuple(indexes)
        # The timestamp stays, so a client can see how old the withheld value is.
        rows = [
            (ts, None) if i in expired else (ts, data) for i, (ts, data) in enumerate(read_rows)
        ]
        first = len(online_features_response.results)
        populate(
            requested_features,
            rows,
            indexes,
            online_features_response,
            full_feature_names,
            table,
            output_len,
            *args,
            **kwargs,
        )
        if not expired:
            return
        for vector in online_features_response.results[first:]:
            for i in expired:
                for out in indexes[i]:
                    vector.statuses[out] = OUTSIDE_MAX_AGE

    populate_within_ttl.__wrapped__ = populate  # type: ignore[attr-defined]
    return populate_within_ttl


def install() -> None:
    """Apply the rule to every online read in this process; safe to call again."""
    current = feast_utils._populate_response_from_feature_data
    if not hasattr(current, "__wrapped__"):
        feast_utils._populate_response_from_feature_data = _with_ttl(current)
