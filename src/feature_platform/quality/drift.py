"""Drift of one feature: its current values against a reference (a training set, or a
baseline window), by a named test that suits its type and the sample's size, against a
threshold.

- numbers, both samples of MIN_ROWS_FOR_PSI rows or more: the population stability index
  over the reference's deciles, with a bin below its least and one above its greatest
  value (`psi`, default threshold 0.2: the usual line between a moderate and a
  significant shift; the outer bins catch a scale change in a small part of the rows,
  which moves few rows across deciles);
- categories, both samples that large: the Jensen-Shannon distance of the two shares,
  base 2, between 0 and 1 (`js`, default 0.1);
- smaller samples, where those two are noise: Kolmogorov-Smirnov for numbers and
  chi-squared for categories, drifted when the p-value is under the threshold (`ks`,
  `chi2`, default 0.01);
- the share of nulls, for every feature: the absolute change (`nulls`, default 0.05).

A feature's verdict is its worst test. Thresholds come from DEFAULTS, overridden per
feature in its expectations (`drift`: test name -> threshold).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from feature_platform.quality.expectations import DRIFT_DEFAULTS

MIN_ROWS_FOR_PSI = 500
DECILES = np.linspace(0, 1, 11)[1:-1]
# A bin empty on one side counts as this share: the index stays finite.
EMPTY_SHARE = 1e-4
DEFAULTS: Mapping[str, float] = DRIFT_DEFAULTS
# Tests whose score is a p-value: drifted below the threshold, not above it.
P_VALUES = frozenset({"ks", "chi2"})


@dataclass(frozen=True)
class Score:
    test: str
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        if self.test in P_VALUES:
            return self.value < self.threshold
        return self.value > self.threshold


@dataclass(frozen=True)
class Histogram:
    """Per bin (a range of the reference's numbers, or a category) a label and each
    sample's share: what the report draws."""

    labels: list[str]
    reference: list[float]
    current: list[float]


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # "number" or "category"
    reference_rows: int
    current_rows: int
    scores: tuple[Score, ...]
    # each side's rows, share of nulls and statistics
    reference_stats: Mapping[str, Any]
    current_stats: Mapping[str, Any]
    histogram: Histogram

    @property
    def drifted(self) -> bool:
        return any(score.drifted for score in self.scores)

    def scores_by_test(self) -> dict[str, dict[str, Any]]:
        """Each test's score, threshold and verdict, as plain data."""
        return {
            s.test: {"value": s.value, "threshold": s.threshold, "drifted": s.drifted}
            for s in self.scores
        }

    @property
    def main(self) -> Score:
        """The distribution test (the first score; `nulls` follows it)."""
        return self.scores[0]


def is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def compare(
    feature: str,
    reference: pd.Series,
    current: pd.Series,
    thresholds: Mapping[str, float] | None = None,
) -> FeatureDrift:
    """`feature`'s drift from `reference` to `current` (nulls judged apart). Each side
    is binned once: the test, the statistics and the report's histogram share it."""
    limits = {**DEFAULTS, **(thresholds or {})}
    ref, cur = reference.dropna(), current.dropna()
    large = min(len(ref), len(cur)) >= MIN_ROWS_FOR_PSI
    if is_number(ref) and is_number(cur):
        kind = "number"
        a, b = ref.to_numpy(dtype=float), cur.to_numpy(dtype=float)
        bins = _number_bins(a, b)
        test = "psi" if large else "ks"
        value = _psi_of(bins) if large else _ks_p(a, b)
        sides = _number_stats(a), _number_stats(b)
    else:
        kind = "category"
        ref_counts, cur_counts = _counts(ref), _counts(cur)
        bins = _category_bins(ref_counts, cur_counts)
        test = "js" if large else "chi2"
        value = _js_of(ref_counts, cur_counts) if large else _chi2_of(ref_counts, cur_counts)
        sides = _category_stats(ref_counts), _category_stats(cur_counts)
    nulls = abs(_null_share(current) - _null_share(reference))
    scores = (Score(test, value, limits[test]), Score("nulls", nulls, limits["nulls"]))
    ref_stats, cur_stats = (
        {"rows": len(values), "nulls": _null_share(values), **side}
        for values, side in zip((reference, current), sides, strict=True)
    )
    return FeatureDrift(
        feature, kind, len(reference), len(current), scores, ref_stats, cur_stats, bins
    )


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """The population stability index of two samples of numbers (`compare`'s bins)."""
    return _psi_of(_number_bins(reference, current))


def js_distance(reference: pd.Series, current: pd.Series) -> float:
    """The Jensen-Shannon distance (base 2, 0 to 1) between the categories' shares."""
    return _js_of(_counts(reference.dropna()), _counts(current.dropna()))


def _edges(reference: np.ndarray) -> np.ndarray:
    """The bins' edges: the least value, the deciles, just past the greatest value."""
    least, greatest = float(np.min(reference)), float(np.max(reference))
    inner = np.quantile(reference, DECILES)
    return np.unique([least, *inner, np.nextafter(greatest, np.inf)])


def _number_bins(reference: np.ndarray, current: np.ndarray) -> Histogram:
    if len(reference) == 0:
        return Histogram(["all"], [0.0], [1.0 if len(current) else 0.0])
    edges = _edges(reference)
    labels = [f"< {edges[0]:.4g}"]
    labels += [f"{lo:.4g} to {hi:.4g}" for lo, hi in pairwise(edges)]
    labels += [f"> {edges[-1]:.4g}"]
    return Histogram(labels, _binned(edges, reference), _binned(edges, current))


def _binned(edges: np.ndarray, values: np.ndarray) -> list[float]:
    count = len(edges) + 1
    if len(values) == 0:
        return [0.0] * count
    bins = np.searchsorted(edges, values, side="right")
    return [float(s) for s in np.bincount(bins, minlength=count) / len(values)]


def _psi_of(bins: Histogram) -> float:
    if not any(bins.reference) or not any(bins.current):
        return 0.0
    ref = np.clip(np.array(bins.reference), EMPTY_SHARE, None)
    cur = np.clip(np.array(bins.current), EMPTY_SHARE, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _counts(values: pd.Series) -> pd.Series:
    """Each category's count, named as text (a category may arrive as a number)."""
    counts = values.value_counts()
    counts.index = counts.index.map(str)
    return counts.groupby(level=0).sum()


def _category_bins(reference: pd.Series, current: pd.Series) -> Histogram:
    names, ref, cur = _aligned(reference, current)
    return Histogram(names, list(ref / max(ref.sum(), 1.0)), list(cur / max(cur.sum(), 1.0)))


def _aligned(reference: pd.Series, current: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The categories seen on either side, and each side's counts of them."""
    names = sorted(set(reference.index) | set(current.index))
    return (
        names,
        reference.reindex(names, fill_value=0).to_numpy(float),
        current.reindex(names, fill_value=0).to_numpy(float),
    )


def _js_of(reference: pd.Series, current: pd.Series) -> float:
    _, ref, cur = _aligned(reference, current)
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    return float(distance.jensenshannon(ref, cur, base=2))


def _chi2_of(reference: pd.Series, current: pd.Series) -> float:
    _, ref, cur = _aligned(reference, current)
    if ref.sum() == 0 or cur.sum() == 0 or len(ref) < 2:
        return 1.0
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    return float(stats.chi2_contingency(table).pvalue)


def _ks_p(reference: np.ndarray, current: np.ndarray) -> float:
    if len(reference) == 0 or len(current) == 0:
        return 1.0
    return float(stats.ks_2samp(reference, current).pvalue)


def _number_stats(numbers: np.ndarray) -> dict[str, Any]:
    """The mean, standard deviation and percentiles of the present values."""
    if len(numbers) == 0:
        return {}
    p = np.percentile(numbers, [0, 5, 25, 50, 75, 95, 100])
    names = ("min", "p05", "p25", "p50", "p75", "p95", "max")
    return {
        "mean": float(numbers.mean()),
        "std": float(numbers.std()),
        **{name: float(v) for name, v in zip(names, p, strict=True)},
    }


def _category_stats(counts: pd.Series) -> dict[str, Any]:
    """The distinct values and the commonest, with its share of the present values."""
    if counts.empty:
        return {"distinct": 0}
    top = str(counts.idxmax())
    share = float(counts.max() / counts.sum())
    return {"distinct": len(counts), "top": top, "top_share": share}


def _null_share(values: pd.Series) -> float:
    return float(values.isna().mean()) if len(values) else 0.0
