"""FeatureStore's private methods, and the repository reader behind `feast apply`.

Each name is Feast's function object, called with the store first
(`provider(store)`): the feature server's /push reaches the provider this way.
"""

from __future__ import annotations

from feast import FeatureStore
from feast import repo_operations as _repo_operations

provider = FeatureStore._get_provider
views_to_materialize = FeatureStore._get_feature_views_to_materialize
precompute_services = FeatureStore._precompute_affected_services
repo_contents = _repo_operations._get_repo_contents
