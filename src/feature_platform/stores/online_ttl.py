"""A feature view's ttl on online reads, at the offline store's exact boundary.

Offline, a point-in-time join uses a value for a label at time t only while
`event_time >= t - ttl`: Postgres compares with `ttl` in whole seconds
(`int(ttl.total_seconds())`), duckdb with the same bound, both inclusive. Feast's
online reads ignore ttl, so a value the training set sees as null is still served.
Here an online value is served only under the same bound, with t the time of the
read; past it the value is null and its status `OUTSIDE_MAX_AGE`. A view without a
ttl (None or 0) never expires.

The rule is put on Feast's read path by `feast_seam.patches.install_online_ttl`: Feast's
own path, every store and the on-demand views built on them then see the nulls training
would. The platform's stores
install it when Feast imports them; the Redis fast path applies `ttl_seconds` itself.
"""

from __future__ import annotations

from datetime import timedelta


def ttl_seconds(ttl: timedelta | None) -> int:
    """The bound the Postgres offline store uses: whole seconds, 0 for none."""
    return int(ttl.total_seconds()) if ttl else 0


def is_expired(event_time_s: float, ttl_s: int, now_s: float) -> bool:
    """True when a training row at `now_s` would no longer see this value."""
    return ttl_s > 0 and event_time_s < now_s - ttl_s
