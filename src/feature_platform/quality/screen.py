"""A batch of rows screened on its way into the stores: a rule broken under `refuse`
raises `Refused` (nothing of the batch may be written); the rows breaking a rule under
`quarantine` are written to the quarantine table, and their positions returned, for the
caller to leave out of every store it writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from feature_platform.quality import database, quarantine
from feature_platform.quality.expectations import Expectations, Refused, judge


def screen(
    expected: Sequence[Expectations],
    rows: pd.DataFrame,
    target: database.Target,
    source: str,
    at: datetime,
    keys: Sequence[str] = (),
    origin: quarantine.Origin | None = None,
) -> list[int]:
    """The positions of `rows` set aside (already in the quarantine table and, with
    `origin`, out of the offline table they were read from), in order. A refusal names a
    row by its `keys` (a table's join keys), else by its position."""
    if not expected:
        return []
    verdict = judge(expected, rows)
    if verdict.refused:
        raise Refused(verdict.refusal(rows, keys))
    if verdict.set_aside:
        entries = quarantine.entries(rows, verdict.set_aside, source, at)
        withdrawn = origin.keys(rows.iloc[sorted(verdict.set_aside)]) if origin else []
        quarantine.write(target, entries, origin, withdrawn)
    return sorted(verdict.set_aside)
