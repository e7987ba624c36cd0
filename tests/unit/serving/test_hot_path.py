"""The hot path's shortcuts give what the long way gives: Feast's conversions, Prometheus'
own observations, and the per-value column checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from feature_platform.errors import HTTPError
from feature_platform.serving.fastpath import online
from feature_platform.serving.metrics import LATENCY_BUCKETS, _HistogramBatch

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


def _feast_served(column: list[Any], value_type: ValueType) -> list[Any] | str:
    """What Feast's conversion serves, or 'refused' where the hot path would fall back."""
    try:
        protos = python_values_to_proto_values(column, value_type)
        return [online._decode_proto(p) for p in protos]
    except (online.Fallback, Exception):
        return "refused"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(scalars, min_size=1, max_size=6),
    st.sampled_from([ValueType.INT64, ValueType.DOUBLE, ValueType.STRING, ValueType.BOOL]),
)
def test_on_demand_values_equal_feasts_conversion(column: list[Any], value_type: ValueType) -> None:
    expected = _feast_served(column, value_type)
    try:
        got: list[Any] | str = online._served_values(list(column), value_type)
    except Exception:
        got = "refused"
    assert got == expected or (
        # NaN never equals itself; the hot path never serves one anyway
        got == "refused" and expected != "refused" and any(_nan(v) for v in expected)
    )


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(scalars, min_size=1, max_size=6), st.sampled_from([int, str, float]))
def test_column_check_equals_the_per_value_rule(column: list[Any], kind: type) -> None:
    def ok(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if kind is float:
            return isinstance(v, (int, float)) and math.isfinite(v)
        return isinstance(v, kind)

    bad = [i for i, v in enumerate(column) if not ok(v)]
    if bad:
        with pytest.raises(HTTPError) as raised:
            online._check_column("c", column, kind)
        assert f"entities.c[{bad[0]}]" in raised.value.body()["detail"]
    else:
        online._check_column("c", column, kind)


def test_a_huge_integer_is_refused_as_a_double_not_a_crash() -> None:
    with pytest.raises(HTTPError):
        online._check_column("amount", [1.0, 10**400], float)


stored = st.one_of(
    st.none(),
    st.just(b""),
    st.builds(
        lambda v: ValueProto(int64_val=v).SerializeToString(), st.integers(-(2**63), 2**63 - 1)
    ),
    st.builds(lambda v: ValueProto(string_val=v).SerializeToString(), st.text(max_size=4)),
    st.builds(lambda v: ValueProto(double_val=v).SerializeToString(), st.floats(-1e9, 1e9)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(stored, max_size=8))
def test_decoded_columns_equal_value_by_value_decoding(raws: list[bytes | None]) -> None:
    def one(raw: bytes | None) -> Any:
        if not raw:
            return None
        proto = ValueProto()
        proto.ParseFromString(raw)
        return online._decode_proto(proto)

    assert online._decode_column(raws) == [one(r) for r in raws]
    assert online._decode_column(raws) == [one(r) for r in raws]  # from the cache


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 30, allow_nan=False), max_size=40))
def test_batched_histogram_exposes_what_direct_observations_do(amounts: list[float]) -> None:
    amounts += list(LATENCY_BUCKETS[:3])  # exactly on a bound: the bound's own bucket
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=direct_registry)
    batched = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=batched_registry)
    batch = _HistogramBatch(batched)
    for amount in amounts:
        direct.observe(amount)
        batch.observe(amount)
    batch.flush()
    batch.flush()  # a second flush adds nothing

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    got, expected = samples(batched_registry), samples(direct_registry)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
