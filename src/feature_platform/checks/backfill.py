"""A new version of a view, made fit to serve before any service reads it.

Apply (`rollouts/apply.py`) registers the new view first and its new services last; in
between this loads the view up to the instant its predecessor is materialized to (the
predecessor's watermark: both versions then hold the same rows), and compares what the
online store serves for it with the training values at the same instant (the skew
check's rule, `skew.check_view`). Only then does the view get its watermark. What marks
a version done is its services being registered: until then every apply loads and checks
it again, even if the materialization job loaded it in between.

A source that gained rows since the predecessor's last materialization shows them as
mismatches: materialize, then apply again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from feature_platform.checks import skew
from feature_platform.config.guard import one_line_error
from feature_platform.console import Say
from feature_platform.errors import PlatformError
from feature_platform.materialization import load
from feature_platform.materialization.watermarks import Watermarks

ROWS = 200
SEED = 0
SHOWN = 3


class BackfillFailed(PlatformError):
    """A new version could not be loaded or does not serve its training values."""


def backfill(store: Any, views: Sequence[tuple[str, str]], say: Say) -> None:
    """Load and check each (new view, predecessor)."""
    watermarks = Watermarks(store.registry, store.project)
    for name, old in views:
        until = watermarks.get(old) or datetime.now(UTC)
        try:
            view = store.registry.get_feature_view(name, store.project, allow_cache=False)
            rows = load.backfill(store, view, until, say)
            say(f"  {name}: {rows:,} rows loaded up to {until.isoformat()} ({old}'s watermark)")
            found = skew.check_view(store, name, ROWS, SEED)
        except PlatformError as exc:
            raise BackfillFailed(f"{name}: {exc}") from exc
        except Exception as exc:
            raise BackfillFailed(f"{name}: {one_line_error(exc, {})}") from exc
        if found:
            shown = "; ".join(
                f"{m.feature} online {m.online!r}, training {m.offline!r}" for m in found[:SHOWN]
            )
            raise BackfillFailed(
                f"{name}: skew check found {len(found)} mismatched value(s) in {ROWS} rows: {shown}"
            )
        say(f"  {name}: skew check passed ({ROWS} rows, served equals training)")
        watermarks.advance(name, until)
