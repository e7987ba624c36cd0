"""Feast's private helpers that turn rows, keys and values into what its stores hold.

Each name is Feast's function object itself, not a wrapper: `mmh3` is called on the
feature server's request path (serving/fastpath) and the writers call these per row.
"""

from __future__ import annotations

from feast import utils as _feast_utils
from feast.infra.online_stores import helpers as _helpers
from feast.infra.online_stores import redis as _redis

from feature_platform.feast_seam import feast_private

redis_key = feast_private(_helpers, "_redis_key", "conversion.redis_key")
mmh3 = feast_private(_helpers, "_mmh3", "conversion.mmh3")
build_entity_keys = feast_private(
    _feast_utils, "_build_entity_keys", "conversion.build_entity_keys"
)
versioned_view_name = feast_private(_redis, "_versioned_fv_name", "conversion.versioned_view_name")
column_names = feast_private(_feast_utils, "_get_column_names", "conversion.column_names")
arrow_to_proto = feast_private(_feast_utils, "_convert_arrow_to_proto", "conversion.arrow_to_proto")
