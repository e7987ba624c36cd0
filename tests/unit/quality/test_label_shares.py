"""A feature service's label expectations (`quality.labels`): the share of positive
labels a training set's labels must hold, judged from 1,000 labels on."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from feature_platform.devtools import generator
from feature_platform.quality import expectations

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "feature_repo"))
import expectations as repo_expectations  # the repository's own module, on the path above

SHARES = {"is_fraud": (0.002, 0.1)}


def _labels(positives: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"is_fraud": [True] * positives + [False] * (rows - positives)})


def test_the_repositorys_labels_hold_their_expected_share() -> None:
    shares = expectations.label_shares(repo_expectations.label_tags())
    assert shares == SHARES
    tables = generator.generate(
        generator.Sizes(customers=2_000, merchants=1_000, days=3, transactions=20_000),
        seed=1,
        progress=lambda _: None,
    )
    assert expectations.label_violations(shares, tables["transactions"]) == []


@pytest.mark.parametrize(
    ("positives", "said"),
    [
        (1_000, "label is_fraud: share of positives 1, expected 0.002 to 0.1"),
        (0, "label is_fraud: share of positives 0, expected 0.002 to 0.1"),
        (150, "label is_fraud: share of positives 0.15, expected 0.002 to 0.1"),
    ],
)
def test_a_share_outside_is_named_with_its_value(positives: int, said: str) -> None:
    assert expectations.label_violations(SHARES, _labels(positives, 1_000)) == [said]


def test_a_share_inside_few_labels_or_no_label_column_passes() -> None:
    assert expectations.label_violations(SHARES, _labels(20, 1_000)) == []
    assert expectations.label_violations(SHARES, _labels(999, 999)) == []  # too few to judge
    assert expectations.label_violations(SHARES, pd.DataFrame({"x": [1] * 2_000})) == []


@pytest.mark.parametrize("tag", ['{"is_fraud": {"share": 0.1}}', "[1]", "not json"])
def test_a_tag_that_cannot_be_read_is_a_clear_error(tag: str) -> None:
    with pytest.raises(expectations.ExpectationError, match=r"quality\.labels"):
        expectations.label_shares({expectations.LABELS_TAG: tag})
