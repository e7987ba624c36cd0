"""Every change the platform makes to Feast's own code, installed from here.

- `install_online_ttl`: the ttl rule on every online read (stores/online_ttl.py). It
  rides on an import: Feast imports an online store by its `type:` path, also in
  processes the platform does not start (stock `feast serve` with the platform's store
  type), so the platform's online store modules (stores/redis_online.py,
  stores/sqlite_online.py) call it when imported; nothing else does.
- `install_postgres_password`: Feast's PostgreSQL connections open with the password of
  the moment from POSTGRES_PASSWORD_FILE (config/credentials.py). Installed, like the ttl
  rule, by the import of the platform's offline store (stores/postgres_offline.py).
- `import_feast_unchecked`: Feast imported without typeguard's instrumentation.
- `compared_also_by`: a feature service whose `==` also compares what Feast's leaves out.

Feast is imported inside the functions: `import_feast_unchecked` must run before it is.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureService

TtlSeconds = Callable[[timedelta | None], int]
"""A view's ttl as the bound the rule compares with, 0 for none."""
IsExpired = Callable[[float, int, float], bool]
"""(event time, ttl bound, now), epoch seconds -> whether the value is withheld."""


def _within_ttl(
    populate: Callable[..., None], ttl_seconds: TtlSeconds, is_expired: IsExpired
) -> Callable[..., None]:
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    outside_max_age = FieldStatus.OUTSIDE_MAX_AGE

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
                    vector.statuses[out] = outside_max_age

    populate_within_ttl.__wrapped__ = populate  # type: ignore[attr-defined]
    return populate_within_ttl


def install_online_ttl(ttl_seconds: TtlSeconds, is_expired: IsExpired) -> None:
    """Serve a value read online as null with status OUTSIDE_MAX_AGE, its event time kept,
    once `is_expired` says so for its view's `ttl_seconds`, in every online read of this
    process. Every online read in Feast, whatever the store, builds its response per
    feature view in `feast.utils._populate_response_from_feature_data`, before on-demand
    views are computed: wrapped there, Feast's own path, every store and the on-demand
    views built on them see the nulls. Installed once; later calls keep it."""
    from feast import utils as feast_utils

    current = feast_utils._populate_response_from_feature_data
    if not hasattr(current, "__wrapped__"):
        wrapped = _within_ttl(current, ttl_seconds, is_expired)
        feast_utils._populate_response_from_feature_data = wrapped


def install_postgres_password() -> None:
    """Every connection of Feast's PostgreSQL code (the offline store's `_get_conn`, the
    async one, the pools) takes its conninfo from `connection_utils._get_conninfo`, looked
    up at call time: replaced there by the seam's `postgres_conninfo`, a password that came
    from POSTGRES_PASSWORD_FILE is read again for each connection. Installed once."""
    from feast.infra.utils.postgres import connection_utils

    from feature_platform.feast_seam.stores import postgres_conninfo

    connection_utils._get_conninfo = postgres_conninfo


def import_feast_unchecked() -> None:
    """Feast wraps 22 of its functions and classes in typeguard's `@typechecked`, which
    re-parses and recompiles each one's source when Feast is imported: about 3 s of the
    5 s a process takes to import Feast here, on every server and job start (typeguard's
    own documentation says the checks are not meant to run in production). Servers and
    jobs call Feast on objects Feast built from the registry, so their processes skip
    that instrumentation. No effect once Feast is imported."""
    if "feast" in sys.modules:
        return
    import typeguard

    real = typeguard.typechecked
    typeguard.typechecked = lambda target=None, **_options: (  # type: ignore[assignment]
        target if target is not None else (lambda inner: inner)
    )
    try:
        import feast  # noqa: F401
    finally:
        typeguard.typechecked = real


def compared_also_by(service: FeatureService, key: Callable[[Any], object]) -> FeatureService:
    """A copy of `service` equal to another feature service only if Feast's `==` says so
    and their `key`s are equal. A registry's apply skips a service equal to the stored
    one; Feast has no other way in, so the copy's class is swapped for a subclass."""
    from feast import FeatureService

    class Compared(FeatureService):
        def __eq__(self, other: object) -> bool:
            return (
                super().__eq__(other)
                and isinstance(other, FeatureService)
                and key(self) == key(other)
            )

        __hash__ = FeatureService.__hash__

    compared = copy.copy(service)
    compared.__class__ = Compared
    return compared
