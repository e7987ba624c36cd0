"""The quality run reads served vectors while the feature server writes them: a file
still being written is left out and counted, not a failure."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from feature_platform.config.guard import ConfigError
from feature_platform.quality import monitor

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
WINDOW = monitor.Window(NOW - timedelta(hours=1), NOW)


def _vectors(directory: Path, minutes_ago: list[int]) -> None:
    frame = pd.DataFrame(
        {
            "customer_stats__avg_purchase_30d": [float(m) for m in minutes_ago],
            "__log_timestamp": [pd.Timestamp(NOW - timedelta(minutes=m)) for m in minutes_ago],
        }
    )
    frame.to_parquet(directory / "done.parquet")


def test_a_file_being_written_is_left_out_and_counted(tmp_path: Path) -> None:
    _vectors(tmp_path, [5, 30, 90])
    (tmp_path / "writing.parquet").write_bytes(b"PAR1")  # what a reader sees mid-write
    said: list[str] = []
    rows = monitor.read_served_files(tmp_path, WINDOW, said.append)
    assert rows["customer_stats__avg_purchase_30d"].tolist() == [5.0, 30.0]  # 90 is outside
    assert said == ["  served vectors: 1 file(s) still being written, left out"]


def test_no_readable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "writing.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="no served vectors under"):
        monitor.read_served_files(tmp_path, WINDOW, lambda _line: None)
