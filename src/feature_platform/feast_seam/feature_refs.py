"""Feast's private resolution of feature references, as its own retrieval does it."""

from __future__ import annotations

from typing import Any

from feast import utils as _feast_utils
from feast.on_demand_feature_view import OnDemandFeatureView

from feature_platform.feast_seam import feast_private

parse_feature_ref = feast_private(
    _feast_utils, "_parse_feature_ref", "feature_refs.parse_feature_ref"
)


def resolve(store: Any, features: Any) -> tuple[list[str], list[Any], list[Any]]:
    """`features` (references or a FeatureService) resolved as `get_historical_features`
    resolves them: (references, [(view, names)], [(on-demand view, names)]). As there,
    on-demand views are marked not written online: a training set computes them."""
    refs = _feast_utils._get_features(store.registry, store.project, features, allow_cache=True)
    all_views, all_odfvs = _feast_utils._get_feature_views_to_use(
        store.registry, store.project, features, allow_cache=True
    )
    for odfv in all_odfvs:
        odfv.write_to_online_store = False
    grouped, odfvs = _feast_utils._group_feature_refs(refs, all_views, all_odfvs)
    return refs, grouped, odfvs


def projected_feature_name(odfv: OnDemandFeatureView, feature: str) -> str:
    """The column an on-demand view's transformation names `feature` (`<view>__<name>`)."""
    return odfv._get_projected_feature_name(feature)
