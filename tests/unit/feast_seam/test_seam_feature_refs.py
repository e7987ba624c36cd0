"""feature_refs.*: references resolved as Feast's own retrieval resolves them."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from seam_helpers import assert_params


@pytest.mark.seam("feature_refs.parse_feature_ref")
def test_the_view_comes_first(feature_refs: ModuleType) -> None:
    assert_params(feature_refs.parse_feature_ref, "ref")
    assert feature_refs.parse_feature_ref("counts:n")[0] == "counts"


@pytest.mark.seam("feature_refs.resolve")
def test_references_and_services_resolve_to_views_and_on_demand_views(
    feature_refs: ModuleType, store: Any
) -> None:
    from feast import utils

    assert_params(utils._get_features, "registry, project, features, allow_cache")
    assert_params(utils._get_feature_views_to_use, "registry, project, features, allow_cache")
    assert_params(
        utils._group_feature_refs, "features, all_feature_views, all_on_demand_feature_views"
    )
    refs, grouped, odfvs = feature_refs.resolve(store, ["counts:n", "doubled:n2"])
    assert refs == ["counts:n", "doubled:n2"]
    assert [(view.name, names) for view, names in grouped] == [("counts", ["n"])]
    assert [(odfv.name, names) for odfv, names in odfvs] == [("doubled", ["n2"])]
    assert not odfvs[0][0].write_to_online_store
    refs, grouped, _ = feature_refs.resolve(store, store.get_feature_service("svc"))
    assert refs == ["counts:n"]
    assert [(view.name, names) for view, names in grouped] == [("counts", ["n"])]


@pytest.mark.seam("feature_refs.projected_feature_name")
def test_an_on_demand_output_is_named_view__feature(
    feature_refs: ModuleType, objects: dict[str, Any]
) -> None:
    from feast.on_demand_feature_view import OnDemandFeatureView

    assert_params(OnDemandFeatureView._get_projected_feature_name, "self, feature")
    assert feature_refs.projected_feature_name(objects["doubled"], "n2") == "doubled__n2"
