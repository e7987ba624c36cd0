"""The platform's versioning convention: a breaking change ships as a new object beside
the old one, never in place.

A view `X_v{N}` succeeds `X_v{N-1}`, or `X` itself when N is 2; feature services alike
(`fraud_detection_v2` succeeds `fraud_detection_v1`). The old version keeps serving its
readers until they have moved; once nobody has read it for the quiet period, deleting it
is a retirement, not a breaking change.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from feature_platform.config.guard import positive_number

QUIET_PERIOD_VAR = "ROLLOUT_QUIET_PERIOD_SECONDS"
DEFAULT_QUIET_PERIOD = timedelta(hours=24)

_VERSIONED = re.compile(r"^(?P<base>.+)_v(?P<n>[1-9][0-9]*)$")


def parse(name: str) -> tuple[str, int]:
    """(base name, version): `X_v3` is (X, 3); a name without a suffix is version 1."""
    match = _VERSIONED.match(name)
    if match is None:
        return name, 1
    return match["base"], int(match["n"])


def successor(name: str) -> str:
    """The name of the next version: `X` -> `X_v2`, `X_v2` -> `X_v3`."""
    base, n = parse(name)
    return f"{base}_v{n + 1}"


def predecessors(name: str) -> list[str]:
    """The names `name` succeeds by the convention, most likely first; none for version 1."""
    base, n = parse(name)
    if n < 2:
        return []
    return [f"{base}_v{n - 1}", base] if n == 2 else [f"{base}_v{n - 1}"]


def predecessor_in(name: str, existing: Collection[str]) -> str | None:
    """The existing object `name` is the next version of, if any."""
    return next((p for p in predecessors(name) if p in existing), None)


def successor_in(name: str, existing: Collection[str]) -> str | None:
    """The newest existing later version of `name`, if any."""
    base, n = parse(name)
    later = [
        other
        for other in existing
        if other != name and parse(other)[0] == base and parse(other)[1] > n
    ]
    return max(later, key=lambda other: parse(other)[1], default=None)


def quiet_period(values: Mapping[str, str]) -> timedelta:
    """How long an old version must have gone unread before deleting it is a retirement."""
    default = DEFAULT_QUIET_PERIOD.total_seconds()
    return timedelta(seconds=positive_number(values, QUIET_PERIOD_VAR, default))


def ago(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Readers:
    """When each feature service was last read, as the feature servers recorded it
    (`stores/service_reads.py`), and views read by feature list rather than by service."""

    now: float
    quiet: timedelta
    services: dict[str, float] = field(default_factory=dict)
    views: dict[str, float] = field(default_factory=dict)
    # Why the record could not be read; then no deletion counts as a retirement.
    unknown: str | None = None
    # When the record began (its first write): a service absent from a record younger than
    # the quiet period (a new or rebuilt Redis) may be read daily, so it is not unread yet.
    since: float | None = None

    def last_read(self, service_names: Collection[str], view: str | None = None) -> float | None:
        """The latest read of any of the services (and of the view by feature list)."""
        times = [self.services[s] for s in service_names if s in self.services]
        if view is not None and view in self.views:
            times.append(self.views[view])
        return max(times, default=None)

    def quiet_since(self, last: float | None) -> bool:
        if last is None:
            last = self.since
        return last is not None and self.now - last >= self.quiet.total_seconds()

    def too_young(self) -> str:
        """Why a service the record never saw is not unread yet (with `quiet_since` false)."""
        began = (
            "has no beginning yet"
            if self.since is None
            else (f"began {ago(self.now - self.since)} ago")
        )
        return f"not read since the record of reads {began}, within the quiet period " + ago(
            self.quiet.total_seconds()
        )


def next_free(name: str, taken: Collection[str]) -> str:
    """The first later version of `name` that no object holds yet."""
    candidate = successor(name)
    while candidate in taken:
        candidate = successor(candidate)
    return candidate
