"""FeatureStore's private methods, and the repository reader behind `feast apply`.

Each name is Feast's function object, called with the store first
(`provider(store)`): the feature server's /push reaches the provider this way.
"""

from __future__ import annotations

from feast import FeatureStore
from feast import repo_operations as _repo_operations

from feature_platform.feast_seam import feast_private

provider = feast_private(FeatureStore, "_get_provider", "feature_store.provider")
views_to_materialize = feast_private(
    FeatureStore, "_get_feature_views_to_materialize", "feature_store.views_to_materialize"
)
precompute_services = feast_private(
    FeatureStore, "_precompute_affected_services", "feature_store.precompute_services"
)
repo_contents = feast_private(_repo_operations, "_get_repo_contents", "feature_store.repo_contents")
