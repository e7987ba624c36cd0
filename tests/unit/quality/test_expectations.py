"""The repository's expectations: read from the views' tags, met by the generated data,
and what a batch breaking them gets under each policy."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pandas as pd
import pytest

from feature_platform.config import environments
from feature_platform.devtools import generator
from feature_platform.quality import expectations
from feature_platform.quality.expectations import (
    MIN_ROWS_FOR_SHARE,
    QUARANTINE,
    REFUSE,
    ExpectationError,
    Expectations,
    from_tags,
    judge,
)

VIEWS = ("customer_stats", "merchant_stats", "customer_txn_1h")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """The feature repository's modules, imported as `feast apply` imports them."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OFFLINE_SOURCE", "file")
    patch.setenv("PLATFORM_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    patch.syspath_prepend(str(environments.feature_repo()))
    names = ("expectations", "feature_views")
    # Feast imports a repository's modules by these bare names: an earlier test's copy of
    # the repository (a rollout's changed views) may still be cached under them.
    modules = (*names, "data_sources", "entities")
    for name in modules:
        sys.modules.pop(name, None)
    try:
        yield {name: importlib.import_module(name) for name in names}
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        patch.undo()


@pytest.fixture(scope="module")
def declared(repo: dict[str, ModuleType]) -> dict[str, Expectations]:
    views = repo["feature_views"]
    found = {name: from_tags(name, getattr(views, name).tags) for name in VIEWS}
    assert all(found.values()), "every stored view declares expectations"
    return {name: e for name, e in found.items() if e is not None}


def test_the_views_carry_their_expectations(
    repo: dict[str, ModuleType], declared: dict[str, Expectations]
) -> None:
    for name in VIEWS:
        assert getattr(repo["feature_views"], name).tags.items() >= (
            repo["expectations"].quality_tags(name).items()
        )
    assert declared["customer_stats"].policy == REFUSE
    assert declared["customer_txn_1h"].policy == QUARANTINE


def test_every_feature_has_expectations(
    repo: dict[str, ModuleType], declared: dict[str, Expectations]
) -> None:
    views = repo["feature_views"]
    for name, expected in declared.items():
        assert set(expected.features) == {f.name for f in getattr(views, name).features}


def test_the_known_sets_are_the_generators(repo: dict[str, ModuleType]) -> None:
    module = repo["expectations"]
    assert module.COUNTRIES == generator.COUNTRIES
    assert module.CATEGORIES == generator.CATEGORIES
    rating = module.EXPECTATIONS["merchant_stats"]["features"]["avg_rating"]
    assert (rating["min"], rating["max"]) == generator.RATING_SCALE


@pytest.mark.parametrize("seed", [7, 8])
def test_the_generated_data_meets_every_expectation(
    declared: dict[str, Expectations], seed: int
) -> None:
    tables = generator.generate(generator.Sizes(), seed=seed)
    for name, expected in declared.items():
        assert expected.violations(tables[name]) == [], name


@pytest.mark.parametrize(
    "sizes",
    [generator.Sizes(12, 3, 3, 40), generator.Sizes(40, 5, 3, 300), generator.Sizes(200, 20, 14)],
)
def test_the_newest_rows_of_small_data_sets_meet_them_too(
    declared: dict[str, Expectations], sizes: generator.Sizes
) -> None:
    """What a materialization reads of the tests' and the demo's data: per entity the
    newest row."""
    tables = generator.generate(sizes, seed=11)
    for name, expected in declared.items():
        key = "merchant_id" if name == "merchant_stats" else "customer_id"
        newest = tables[name].sort_values(["event_timestamp", "created_timestamp"])
        assert expected.violations(newest.groupby(key).tail(1)) == [], name


@pytest.mark.parametrize(
    "sizes", [generator.Sizes(60, 8, 6, 400), generator.Sizes(200, 20, 14, 2_000)]
)
def test_small_demos_meet_them_at_every_hour(
    declared: dict[str, Expectations], sizes: generator.Sizes
) -> None:
    """The data depends on the hour it is generated at; the demo's must pass whenever it
    runs (a training set judges whole tables, null shares included)."""
    start = pd.Timestamp("2026-12-05", tz="UTC")
    for hour in range(48):
        as_of = (start + pd.Timedelta(hours=hour)).to_pydatetime()
        tables = generator.generate(sizes, as_of=as_of)
        for name, expected in declared.items():
            assert expected.violations(tables[name]) == [], (name, as_of)


def test_broken_rows_are_named_with_feature_rule_and_value(
    declared: dict[str, Expectations],
) -> None:
    rows = pd.DataFrame(
        {
            "merchant_id": [1, 2, 3, 4],
            "avg_rating": [4.5, 6.0, None, 0.5],
            "n_disputes_30d": pd.array([0, -1, 2, 3], dtype="Int64"),
            "n_sales_30d": [10, 20, 30.5, 40],
            "category": ["grocery", "casino", "travel", None],
        }
    )
    found = {
        (v.row, v.feature, v.rule, v.value) for v in declared["merchant_stats"].violations(rows)
    }
    assert found == {
        (1, "avg_rating", "max 5", 6.0),
        (1, "n_disputes_30d", "min 0", -1),
        (1, "category", "one of " + ", ".join(generator.CATEGORIES), "casino"),
        (2, "n_sales_30d", "type int", 30.5),
        (3, "avg_rating", "min 1", 0.5),
        (3, "category", "not null", None),
    }


def test_the_null_share_is_judged_on_batches_large_enough(
    declared: dict[str, Expectations],
) -> None:
    expected = declared["merchant_stats"]  # avg_rating: at most 30% nulls

    def batch(nulls: int, rows: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "avg_rating": [None] * nulls + [4.0] * (rows - nulls),
                "n_disputes_30d": [0] * rows,
                "n_sales_30d": [1] * rows,
                "category": ["grocery"] * rows,
            }
        )

    assert MIN_ROWS_FOR_SHARE == 20
    assert expected.violations(batch(6, 20)) == []
    over = expected.violations(batch(7, 20))
    assert [(v.row, v.rule) for v in over] == [(i, "nulls <= 0.3") for i in range(7)]
    # Too few rows to judge a share: one pushed row may be null.
    assert expected.violations(batch(1, 1)) == []
    assert expected.violations(batch(19, 19)) == []


def test_policies_refuse_or_set_rows_aside(declared: dict[str, Expectations]) -> None:
    rows = pd.DataFrame(
        {"customer_id": [1, 2, 3], "n_txn_1h": [1, -1, 2], "sum_amount_1h": [5.0, 1.0, -2.0]}
    )
    quarantined = judge([declared["customer_txn_1h"]], rows)
    assert not quarantined.refused
    assert quarantined.set_aside == {
        1: {"customer_txn_1h": ["n_txn_1h: min 0"]},
        2: {"customer_txn_1h": ["sum_amount_1h: min 0"]},
    }
    refusing = Expectations("customer_txn_1h", REFUSE, declared["customer_txn_1h"].features)
    refused = judge([refusing], rows)
    assert not refused.set_aside
    assert refused.refusal(rows, ["customer_id"], limit=1) == (
        "customer_txn_1h.n_txn_1h breaks 'min 0' at customer_id=2 (value -1); and 1 more"
    )
    assert refused.refusal(rows) == (
        "customer_txn_1h.n_txn_1h breaks 'min 0' at row 1 (value -1); "
        "customer_txn_1h.sum_amount_1h breaks 'min 0' at row 2 (value -2.0)"
    )


def test_a_missing_column_sets_every_row_aside(declared: dict[str, Expectations]) -> None:
    rows = pd.DataFrame({"customer_id": [1, 2], "n_txn_1h": [1, 2]})
    verdict = judge([declared["customer_txn_1h"]], rows)
    assert verdict.set_aside == {
        0: {"customer_txn_1h": ["sum_amount_1h: present"]},
        1: {"customer_txn_1h": ["sum_amount_1h: present"]},
    }


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"quality.expectations": "{}", "quality.policy": "drop"}, "must be one of"),
        ({"quality.expectations": "{"}, "not JSON"),
        ({"quality.expectations": "[]"}, "must map features"),
        ({"quality.expectations": '{"x": {"above": 1}}'}, "unknown rules above"),
        ({"quality.expectations": '{"x": {"type": "date"}}'}, "type must be one of"),
        ({"quality.expectations": '{"x": {"drift": {"kl": 1}}}'}, "drift must map tests"),
        ({"quality.expectations": '{"x": {"drift": {"psi": "high"}}}'}, "drift must map tests"),
    ],
)
def test_unreadable_tags_are_refused(tags: dict[str, str], message: str) -> None:
    with pytest.raises(ExpectationError, match=message):
        from_tags("v", tags)


def test_a_view_without_tags_has_no_expectations() -> None:
    assert from_tags("v", {"team": "fraud"}) is None
    assert expectations.of_view("v", {}) is None


def test_the_repository_module_needs_nothing_but_the_standard_library() -> None:
    source = (environments.feature_repo() / "expectations.py").read_text()
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports <= {"json", "typing"}, imports
