"""The hot path's shortcuts give what the long way gives: the values Feast's feature
server answers, Prometheus' own observations, and the per-value column checks."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from feast.feature_server_utils import convert_response_to_dict
from feast.infra.online_stores.redis import RedisOnlineStore as FeastRedisOnlineStore
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import (
    NULL,
    BytesList,
    DoubleList,
    FloatList,
    Int64List,
    StringList,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from feature_platform.errors import HTTPError
from feature_platform.serving.fastpath import online
from feature_platform.serving.metrics import LATENCY_BUCKETS, _HistogramBatch

# The stored kinds the hot path decodes itself (plans.SCALAR_TYPES); for any other kind,
# and for a NaN or infinite double, it hands the request to Feast's path.
FAST_KINDS = {"int64_val", "int32_val", "double_val", "string_val", "bool_val"}


def _feast_answers(protos: list[ValueProto]) -> list[Any]:
    """The values Feast's feature server puts in its JSON answer for these protos."""
    vector = GetOnlineFeaturesResponse.FeatureVector(values=protos)
    answer = convert_response_to_dict(GetOnlineFeaturesResponse(results=[vector]))
    return list(answer["results"][0]["values"])


def _needs_feast(protos: list[ValueProto]) -> bool:
    for proto in protos:
        kind = proto.WhichOneof("val")
        if kind in (None, "null_val"):
            continue
        if kind not in FAST_KINDS or (kind == "double_val" and not math.isfinite(proto.double_val)):
            return True
    return False


def _typed(values: list[Any]) -> list[tuple[str, str]]:
    """Values compared as JSON tells them apart: True is not 1, -0.0 is not 0.0."""
    return [(type(v).__name__, repr(v)) for v in values]


ints64 = st.integers(-(2**63), 2**63 - 1)
# NaN, the infinities and -0.0 in most columns of doubles, not only now and then
floats = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0]), st.floats())

# What an on-demand view's function returns, by the feature's declared type: values of
# that type (all sizes, NaN and infinities), and values of other types that Feast
# converts (1 as a double) or refuses ('a' as an int64).
outputs_by_type = {
    ValueType.INT64: st.integers(),
    ValueType.INT32: st.integers(-(2**40), 2**40),
    ValueType.DOUBLE: floats,
    ValueType.FLOAT: floats,
    ValueType.STRING: st.text(max_size=5),
    ValueType.BOOL: st.booleans(),
    ValueType.INT64_LIST: st.lists(ints64, max_size=3),
    ValueType.DOUBLE_LIST: st.lists(floats, max_size=3),
    ValueType.STRING_LIST: st.lists(st.text(max_size=3), max_size=3),
}
other_outputs = [st.integers(), floats, st.text(max_size=3), st.booleans()]


@st.composite
def on_demand_outputs(draw: st.DrawFn) -> tuple[ValueType, list[Any]]:
    value_type = draw(st.sampled_from(list(outputs_by_type)))
    own = outputs_by_type[value_type]
    other = draw(st.sampled_from(other_outputs))
    # a column of the declared type, of another one, or of both; nulls in any
    kinds = draw(st.sampled_from([[own], [other], [own, other]]))
    return value_type, draw(st.lists(st.one_of(st.none(), *kinds), min_size=1, max_size=6))


def test_on_demand_values_equal_feasts_answer() -> None:
    branches: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None)
    @given(on_demand_outputs())
    @example((ValueType.DOUBLE, [math.nan, None, 1.5]))
    @example((ValueType.DOUBLE, [math.inf]))
    @example((ValueType.STRING, ["", None]))
    @example((ValueType.INT64, [2**63]))
    def check(output: tuple[ValueType, list[Any]]) -> None:
        value_type, column = output
        try:
            protos = python_values_to_proto_values(list(column), value_type)
        except Exception:
            protos = None  # Feast's server answers an error
        given_column = list(column)
        try:
            got = online._served_values(given_column, value_type)
        except online.Fallback:
            branches["handed to Feast"] += 1
            assert protos is None or _needs_feast(protos), (value_type, column)
            return
        except Exception:
            branches["refused"] += 1
            assert protos is None, f"Feast serves {column!r} as {value_type}, the hot path fails"
            return
        branches["as given" if got is given_column else "converted"] += 1
        assert protos is not None, f"Feast refuses {column!r} as {value_type}, the hot path serves"
        assert _typed(got) == _typed(_feast_answers(protos)), (value_type, column)

    check()
    # both of the function's branches, and both ways out of it, were reached
    assert all(branches[b] >= 20 for b in ("as given", "converted", "handed to Feast")), branches
    assert branches["refused"], branches


# A stored value of each kind, as a writer serializes it; NaN, infinities, empty strings
# and empty lists included.
stored_by_kind = {
    "int64_val": ints64,
    "int32_val": st.integers(-(2**31), 2**31 - 1),
    "double_val": floats,
    "float_val": floats,
    "string_val": st.text(max_size=4),
    "bool_val": st.booleans(),
    "bytes_val": st.binary(max_size=4),
    "null_val": st.just(NULL),
    "int64_list_val": st.lists(ints64, max_size=3).map(lambda v: Int64List(val=v)),
    "double_list_val": st.lists(floats, max_size=3).map(lambda v: DoubleList(val=v)),
    "float_list_val": st.lists(floats, max_size=3).map(lambda v: FloatList(val=v)),
    "string_list_val": st.lists(st.text(max_size=3), max_size=3).map(lambda v: StringList(val=v)),
    "bytes_list_val": st.lists(st.binary(max_size=3), max_size=3).map(lambda v: BytesList(val=v)),
}


def _serialized(kind: str, value: Any) -> bytes:
    field: dict[str, Any] = {kind: value}
    return ValueProto(**field).SerializeToString()


def _stored(kind: str) -> st.SearchStrategy[bytes | None]:
    serialized = stored_by_kind[kind].map(lambda v: _serialized(kind, v))
    # an absent field (None) and an empty value (b"") between the written ones
    return st.one_of(st.none(), st.just(b""), serialized, serialized, serialized)


# One feature's column across entities: one kind, or now and then a mix (a view whose
# type changed while older rows stayed).
stored_columns = st.one_of(
    st.sampled_from(sorted(stored_by_kind)).flatmap(
        lambda kind: st.lists(_stored(kind), min_size=1, max_size=8)
    ),
    st.lists(st.sampled_from(sorted(stored_by_kind)).flatmap(_stored), min_size=1, max_size=8),
)
# the row's write timestamp, without which Feast's store reads no field of it
_WRITTEN = Timestamp(seconds=1_700_000_000).SerializeToString()


def _feast_reads(raws: list[bytes | None]) -> list[ValueProto]:
    """Feast's Redis store's reading of the fields of one written row."""
    names = [f"f{i}" for i in range(len(raws))]
    _, protos = FeastRedisOnlineStore()._get_features_for_entity(
        [*raws, _WRITTEN], "view", [*names, "_ts:view"]
    )
    assert protos is not None
    return [protos[name] for name in names]


def test_decoded_columns_equal_feasts_answer() -> None:
    branches: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None)
    @given(stored_columns)
    @example([ValueProto(double_val=math.nan).SerializeToString(), None, b""])
    @example([ValueProto(double_val=-math.inf).SerializeToString()])
    @example([ValueProto(string_val="").SerializeToString(), ValueProto().SerializeToString()])
    @example([ValueProto(int64_list_val=Int64List(val=[1])).SerializeToString()])
    def check(raws: list[bytes | None]) -> None:
        protos = _feast_reads(raws)
        try:
            got = online._decode_column(raws)
        except online.Fallback:
            branches["handed to Feast"] += 1
            assert _needs_feast(protos), raws
            return
        branches["decoded"] += 1
        assert _typed(got) == _typed(_feast_answers(protos)), raws
        assert online._decode_column(raws) == got  # the second time from the cache

    check()
    assert branches["decoded"] >= 100 and branches["handed to Feast"] >= 100, branches


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


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
