"""What a materialization run reads, and which row an online store keeps: the rules
without the services (tests/integration/materialization/test_late_rows.py runs them for real)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from feature_platform import cli
from feature_platform.config.guard import ConfigError
from feature_platform.errors import EXIT_CONFIG_ERROR
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rows as view_rows
from feature_platform.stores.sqlite_online import newer_rows
from feature_platform.stores.training_rule import row_version

END = datetime(2026, 12, 1, 12, tzinfo=UTC)
CUSTOMER = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)


def _view(
    created_column: str | None = "created_timestamp", ttl: timedelta | None = None
) -> FeatureView:
    source = FileSource(
        name="stats_source",
        path="/tmp/stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column=created_column or "",
    )
    return FeatureView(
        name="stats",
        entities=[CUSTOMER],
        ttl=timedelta(days=2) if ttl is None else ttl,
        schema=[Field(name="customer_id", dtype=Int64), Field(name="avg", dtype=Float64)],
        source=source,
    )


def test_the_overlap_defaults_to_ten_minutes_and_must_be_whole_seconds() -> None:
    assert materialize.overlap({}) == timedelta(minutes=10)
    assert materialize.overlap({materialize.OVERLAP_VAR: "0"}) == timedelta(0)
    assert materialize.overlap({materialize.OVERLAP_VAR: "90"}) == timedelta(seconds=90)
    for bad in ("-5", "1.5", "ten"):
        with pytest.raises(ConfigError, match=materialize.OVERLAP_VAR):
            materialize.overlap({materialize.OVERLAP_VAR: bad})


def test_a_bad_overlap_stops_the_command_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(materialize.OVERLAP_VAR, "ten")
    assert cli.main(["materialize", "local"]) == EXIT_CONFIG_ERROR
    assert materialize.OVERLAP_VAR in capsys.readouterr().err


def test_the_first_run_loads_the_ttl_window_by_event_and_by_creation_time() -> None:
    rows = materialize.window(_view(), None, END, timedelta(minutes=10))
    assert rows.created_since == rows.event_since == END - timedelta(days=2)
    assert rows.end == END
    # Feast's fallback for a view without a ttl: a year.
    no_ttl = materialize.window(_view(ttl=timedelta(0)), None, END, timedelta(minutes=10))
    assert no_ttl.event_since == END - timedelta(weeks=52)


def test_later_runs_read_from_the_watermark_minus_the_overlap_and_the_last_interval() -> None:
    view = _view()
    previous = END - timedelta(minutes=30)
    view.materialization_intervals.append((previous - timedelta(days=2), previous))
    rows = materialize.window(view, previous, END, timedelta(minutes=10))
    assert rows.created_since == previous - timedelta(minutes=10)
    assert rows.event_since == previous


def test_only_plain_views_with_a_creation_column_are_read_by_creation_time() -> None:
    assert view_rows.by_creation_time(_view())
    assert not view_rows.by_creation_time(_view(created_column=None))

    @on_demand_feature_view(
        sources=[_view()], schema=[Field(name="double", dtype=Float64)], mode="python"
    )
    def doubled(inputs: dict) -> dict:
        return {"double": [2 * a for a in inputs["avg"]]}

    assert not view_rows.by_creation_time(doubled)


def test_a_missing_creation_time_counts_as_the_event_time() -> None:
    event = datetime(2026, 12, 1, tzinfo=UTC)
    assert row_version(event, None) == row_version(event, pd.NaT) == (event, event)
    # Naive times are UTC.
    assert row_version(event.replace(tzinfo=None), None) == (event, event)


def test_sqlite_keeps_the_newest_row_by_event_then_creation_time() -> None:
    t = datetime(2026, 12, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    stored = {b"a": (t, t), b"b": (t, t), b"c": (t, t)}
    rows = [
        ("a", {}, t, t + hour),  # restated: same event time, later creation time
        ("b", {}, t - hour, t + hour),  # an older event written later
        ("c", {}, t, t),  # what is stored already
        ("d", {}, t, None),  # a new entity
        ("d", {}, t + hour, None),  # ...twice in one batch: the newer wins
    ]
    keys = [row[0].encode() for row in rows]
    assert newer_rows(rows, keys, stored) == [rows[0], rows[4]]
