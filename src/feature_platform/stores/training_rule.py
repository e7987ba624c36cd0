"""The platform's point-in-time rule, shared by its offline stores.

A training row at label time t uses, per view, the newest value whose event time is
at or before t, whose creation time is at or before t, and that is inside the view's
ttl. Feast's own rule ignores the creation time (it only breaks ties), so a snapshot
written two hours after its event time is used for labels inside those two hours,
before it existed anywhere; the model trains on the future. Feast implements the
stricter rule behind `filter_by_created_timestamp`, off by default; the platform's
stores turn it on for every caller (the training module, the offline server, a thin
client). A NULL creation time counts as the event time, in every store.

`include_values_created_after_label: true` in the `offline_store` block of
feature_store.yaml restores Feast's rule, for comparison with older training sets.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from feast.utils import make_tzaware

CREATED_OR_EVENT = "__created_or_event"


def filter_by_created(config: object, requested: bool) -> bool:
    """The flag to hand Feast's join: on unless the configuration says otherwise."""
    include = getattr(config, "include_values_created_after_label", False)
    return requested or not include


def row_version(event: datetime, created: datetime | None) -> tuple[datetime, datetime]:
    """Which of an entity's rows supersedes which: the later event time, then the later
    creation time, a missing one (None, NaT) counting as the event time; naive times are
    UTC. The join picks the newest row this way; the online stores keep it this way."""
    event = make_tzaware(event)
    return event, event if created is None or pd.isna(created) else make_tzaware(created)
