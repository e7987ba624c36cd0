"""Which offline rows one materialization run of a view loads.

A run up to `end` loads the offline table as it stands at `end`: rows whose event time and
creation time are at or before it, a NULL creation time counting as the event time. Of
those, the rows new to the online store: created at or after `created_since` (late rows
too, whatever their event time), or with an event time at or after `event_since` (rows
written ahead of their event time, which an earlier run could not load yet). Per entity
the newest of them by event time, then creation time, as the offline join would pick.

The platform's offline stores read it (`pull_latest_created_since`); `materialize`
chooses the bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LoadWindow:
    created_since: datetime
    event_since: datetime
    end: datetime


@dataclass(frozen=True)
class SourceColumns:
    """A view's columns as its batch source names them."""

    join_keys: list[str]
    features: list[str]
    timestamp: str
    created: str
