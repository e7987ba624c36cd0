"""Feast's private helpers that turn rows, keys and values into what its stores hold.

Each name is Feast's function object itself, not a wrapper: `mmh3` is called on the
feature server's request path (serving/fastpath) and the writers call these per row.
"""

from __future__ import annotations

from feast import utils as _feast_utils
from feast.infra.online_stores import helpers as _helpers
from feast.infra.online_stores import redis as _redis

redis_key = _helpers._redis_key
mmh3 = _helpers._mmh3
build_entity_keys = _feast_utils._build_entity_keys
versioned_view_name = _redis._versioned_fv_name
column_names = _feast_utils._get_column_names
arrow_to_proto = _feast_utils._convert_arrow_to_proto
