"""Classification of Feast's structured registry diff: no services, Feast objects only."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.diff.property_diff import TransitionType
from feast.diff.registry_diff import FeastObjectDiff, RegistryDiff, diff_registry_objects
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.infra.registry.registry import FeastObjectType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.permissions.action import AuthzedAction
from feast.permissions.permission import Permission
from feast.permissions.policy import GroupBasedPolicy, RoleBasedPolicy
from feast.types import Float64, Int64, String

from feature_platform.rollouts.diff import BREAKING, SAFE, Plan, classify
from feature_platform.rollouts.plan import with_logging_changes

SOURCE = FileSource(name="src", path="/nowhere.parquet", timestamp_field="ts")


def entity(join_key: str = "customer_id", **kwargs: Any) -> Entity:
    return Entity(name="customer", join_keys=[join_key], value_type=ValueType.INT64, **kwargs)


def view(
    name: str = "stats",
    features: dict[str, Any] | None = None,
    ttl: timedelta = timedelta(days=2),
    source: FileSource = SOURCE,
    **kwargs: Any,
) -> FeatureView:
    features = features or {"avg": Float64, "count": Int64}
    return FeatureView(
        name=name,
        entities=[entity()],
        ttl=ttl,
        schema=[Field(name="customer_id", dtype=Int64)]
        + [Field(name=n, dtype=t) for n, t in features.items()],
        source=source,
        **kwargs,
    )


def service(*views: Any, name: str = "model_v1") -> FeatureService:
    return FeatureService(name=name, features=list(views))


def kind(obj: Any) -> FeastObjectType:
    if isinstance(obj, Permission):
        return FeastObjectType.PERMISSION
    if isinstance(obj, Entity):
        return FeastObjectType.ENTITY
    if isinstance(obj, FeatureService):
        return FeastObjectType.FEATURE_SERVICE
    if isinstance(obj, FeatureView):
        return FeastObjectType.FEATURE_VIEW
    return FeastObjectType.ON_DEMAND_FEATURE_VIEW


def diff(*, updates: tuple = (), creates: tuple = (), deletes: tuple = (), keeps: tuple = ()):
    """A RegistryDiff as diff_between builds it: kept objects appear as UNCHANGED."""
    result = RegistryDiff()
    for old, new in updates:
        result.add_feast_object_diff(diff_registry_objects(old, new, kind(new)))
    for obj in keeps:
        result.add_feast_object_diff(diff_registry_objects(obj, obj, kind(obj)))
    for obj in creates:
        result.add_feast_object_diff(
            FeastObjectDiff(obj.name, kind(obj), None, obj, [], TransitionType.CREATE)
        )
    for obj in deletes:
        result.add_feast_object_diff(
            FeastObjectDiff(obj.name, kind(obj), obj, None, [], TransitionType.DELETE)
        )
    return result


def findings(registry_diff: RegistryDiff) -> dict[str, tuple[str, set[str]]]:
    """name -> (classification, finding kinds)"""
    return {
        c.name: (c.classification, {f.kind for f in c.findings}) for c in classify(registry_diff)
    }


def test_nothing_changed_is_no_change() -> None:
    v = view()
    assert classify(diff(keeps=(entity(), v, service(v)))) == []


def test_new_view_feature_and_service_are_safe() -> None:
    old = view()
    new = view(features={"avg": Float64, "count": Int64, "max": Float64})
    got = findings(
        diff(
            updates=((old, new), (service(old), service(new))),
            creates=(view("fresh"), service(new, name="model_v2")),
        )
    )
    assert got == {
        "stats": (SAFE, {"feature_added"}),
        "model_v1": (SAFE, {"feature_added"}),
        "fresh": (SAFE, {"created"}),
        "model_v2": (SAFE, {"created"}),
    }


def test_description_and_tag_changes_are_safe() -> None:
    old_view, new_view = view(), view(description="now documented", tags={"team": "fraud"})
    got = findings(
        diff(updates=((entity(), entity(description="a card holder")), (old_view, new_view)))
    )
    assert got == {"customer": (SAFE, {"metadata_changed"}), "stats": (SAFE, {"metadata_changed"})}


def test_turning_served_vector_logging_on_is_safe() -> None:
    logged = FeatureService(
        name="model_v1",
        features=[view()],
        logging_config=LoggingConfig(destination=FileLoggingDestination(path="/logs")),
    )
    # Feast's diff sees no change here; the rollout's plan adds it.
    registry_diff = diff(updates=((service(view()), logged),))
    assert findings(registry_diff) == {}
    assert [s.name for s in with_logging_changes(registry_diff)] == ["model_v1"]
    assert findings(registry_diff) == {"model_v1": (SAFE, {"metadata_changed"})}


@pytest.mark.parametrize(
    ("new_features", "expected"),
    [
        ({"avg": Float64}, "feature_removed"),
        ({"avg": Float64, "n": Int64}, "feature_renamed"),
        ({"avg": Float64, "count": Float64}, "feature_type_changed"),
    ],
)
def test_removing_renaming_or_retyping_a_feature_is_breaking(
    new_features: dict[str, Any], expected: str
) -> None:
    got = findings(diff(updates=((view(), view(features=new_features)),)))
    assert got == {"stats": (BREAKING, {expected})}


def test_a_service_losing_a_feature_is_breaking() -> None:
    old, new = view(), view(features={"avg": Float64})
    got = findings(diff(updates=((old, new), (service(old), service(new)))))
    assert got["model_v1"] == (BREAKING, {"feature_removed"})
    got = findings(diff(updates=((service(old, view("other")), service(old)),), keeps=(old,)))
    assert got["model_v1"] == (BREAKING, {"feature_removed"})


def test_join_key_change_is_breaking() -> None:
    got = findings(diff(updates=((entity(), entity("card_id")),)))
    assert got == {"customer": (BREAKING, {"join_key_changed"})}


def test_ttl_shrink_is_breaking_only_where_a_service_depends_on_the_view() -> None:
    old, short = view(), view(ttl=timedelta(hours=1))
    assert findings(diff(updates=((old, short),), keeps=(service(short),)))["stats"] == (
        BREAKING,
        {"ttl_shortened"},
    )
    assert findings(diff(updates=((old, short),))) == {"stats": (SAFE, {"ttl_shortened"})}
    longer = view(ttl=timedelta(days=9))
    assert findings(diff(updates=((old, longer),), keeps=(service(longer),))) == {
        "stats": (SAFE, {"ttl_extended"})
    }


def test_a_service_depends_on_the_sources_of_its_on_demand_views() -> None:
    old, short = view(), view(ttl=timedelta(hours=1))
    request = RequestSource(name="req", schema=[Field(name="amount", dtype=Float64)])

    @on_demand_feature_view(
        sources=[short, request], schema=[Field(name="ratio", dtype=Float64)], mode="python"
    )
    def ratio(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"ratio": [a / b for a, b in zip(inputs["amount"], inputs["avg"], strict=True)]}

    got = findings(diff(updates=((old, short),), keeps=(ratio, service(ratio))))
    assert got["stats"] == (BREAKING, {"ttl_shortened"})


@pytest.mark.parametrize("obj", [entity(), view(), service(view())], ids=lambda o: o.name)
def test_deleting_an_entity_view_or_service_is_breaking(obj: Any) -> None:
    assert findings(diff(deletes=(obj,))) == {obj.name: (BREAKING, {"deleted"})}


def test_a_deletion_paired_with_the_same_definition_is_reported_as_a_rename() -> None:
    changes = classify(diff(deletes=(view("stats"),), creates=(view("stats_v2"),)))
    by_name = {c.name: c for c in changes}
    assert by_name["stats"].classification == BREAKING
    assert [f.kind for f in by_name["stats"].findings] == ["renamed"]
    assert "stats_v2" in by_name["stats"].findings[0].detail
    assert by_name["stats_v2"].classification == SAFE


def test_changes_not_on_the_safe_list_are_held_as_breaking() -> None:
    moved = FileSource(name="src", path="/elsewhere.parquet", timestamp_field="ts")
    got = findings(
        diff(updates=((view(), view(online=False)), (view("b"), view("b", source=moved))))
    )
    assert got["stats"] == (BREAKING, {"online_disabled"})
    assert got["b"] == (BREAKING, {"source_changed"})


def test_exit_code_json_and_summary() -> None:
    breaking = Plan("dev", "p", "initialized", classify(diff(deletes=(view(),))))
    safe = Plan("prod", "p", "initialized", classify(diff(creates=(view("n", {"s": String}),))))
    empty = Plan("prod", "p", "initialized", [])
    assert (breaking.exit_code, safe.exit_code, empty.exit_code) == (3, 0, 0)

    data = json.loads(breaking.to_json())
    assert data["breaking"] is True and data["exit_code"] == 3
    assert data["counts"] == {"created": 0, "updated": 0, "deleted": 1, "safe": 0, "breaking": 1}
    assert data["changes"][0]["findings"][0]["kind"] == "deleted"

    assert "refused" in breaking.markdown() and "allow-breaking-changes" in breaking.markdown()
    breaking.breaking_allowed = True
    assert "**allowed**" in breaking.markdown() and "refused" not in breaking.markdown()
    assert "`prod`: safe" in safe.markdown() and "| create | feature view | `n` | safe |" in (
        safe.markdown()
    )
    assert "`prod`: no changes" in empty.markdown()


READ, DESCRIBE, WRITE = (
    AuthzedAction.READ_ONLINE,
    AuthzedAction.DESCRIBE,
    AuthzedAction.WRITE_ONLINE,
)


def permission(name: str = "read", **kwargs: Any) -> Permission:
    spec: dict[str, Any] = {
        "types": [FeatureView, FeatureService],
        "actions": [READ, DESCRIBE],
        "policy": RoleBasedPolicy(roles=["feature-reader"]),
    }
    spec.update(kwargs)
    return Permission(name=name, **spec)


def test_the_first_permission_of_a_serving_registry_is_breaking() -> None:
    v = view()
    got = findings(diff(keeps=(v,), creates=(permission(), permission("other"))))
    assert got == {
        "read": (BREAKING, {"first_permission"}),
        "other": (BREAKING, {"first_permission"}),
    }


def test_permissions_of_a_registry_still_empty_are_safe() -> None:
    got = findings(diff(creates=(view(), permission())))
    assert got == {"stats": (SAFE, {"created"}), "read": (SAFE, {"permission_added"})}


def test_a_permission_added_next_to_others_is_safe() -> None:
    got = findings(diff(keeps=(view(), permission()), creates=(permission("write"),)))
    assert got == {"write": (SAFE, {"permission_added"})}


def test_deleting_a_permission_is_breaking_the_last_one_too() -> None:
    some_left = findings(diff(keeps=(permission("write"),), deletes=(permission(),)))
    assert some_left == {"read": (BREAKING, {"permission_deleted"})}
    none_left = findings(diff(keeps=(view(),), deletes=(permission(),)))
    assert none_left == {"read": (BREAKING, {"last_permission_deleted"})}


def test_a_permission_renamed_without_other_change_is_safe() -> None:
    got = findings(diff(deletes=(permission("read"),), creates=(permission("read_v2"),)))
    assert got == {
        "read": (SAFE, {"permission_renamed"}),
        "read_v2": (SAFE, {"permission_renamed"}),
    }
    changed = findings(
        diff(deletes=(permission("read"),), creates=(permission("read_v2", actions=[READ]),))
    )
    assert changed["read"] == (BREAKING, {"permission_deleted"})


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ({"actions": [READ]}, BREAKING),
        ({"actions": [READ, DESCRIBE, WRITE]}, SAFE),
        ({"actions": [DESCRIBE, READ]}, SAFE),
        ({"policy": RoleBasedPolicy(roles=["training"])}, BREAKING),
        ({"policy": RoleBasedPolicy(roles=["feature-reader", "training"])}, SAFE),
        ({"policy": GroupBasedPolicy(groups=["feature-reader"])}, BREAKING),
        ({"types": [FeatureView]}, BREAKING),
        ({"types": [FeatureView, FeatureService, Entity]}, SAFE),
        ({"name_patterns": ["fraud_.*"]}, BREAKING),
        ({"required_tags": {"team": "fraud"}}, BREAKING),
        ({"tags": {"owner": "fraud-team"}}, SAFE),
    ],
)
def test_narrowing_a_permission_is_breaking_widening_it_safe(
    new: dict[str, Any], expected: str
) -> None:
    got = findings(diff(updates=((permission(), permission(**new)),)))
    assert got["read"][0] == expected, got


def test_name_patterns_and_required_tags_widen_and_narrow() -> None:
    few = permission(name_patterns=["a_.*"], required_tags={"team": "fraud", "tier": "1"})
    more = permission(name_patterns=["a_.*", "b_.*"], required_tags={"team": "fraud"})
    assert findings(diff(updates=((few, more),)))["read"] == (SAFE, {"permission_widened"})
    assert findings(diff(updates=((more, few),)))["read"] == (BREAKING, {"permission_narrowed"})
    every = permission()
    assert findings(diff(updates=((few, every),)))["read"][0] == SAFE
