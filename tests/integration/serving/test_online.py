"""What clients of the feature server see: missing entities and pushed events."""

from __future__ import annotations

from datetime import UTC, datetime

from stacks import WRITE_TOKEN

from feature_platform.devtools.launcher import FeatureServer
from feature_platform.serving.client import response_rows
from feature_platform.training import FEATURE_SERVICE

STORED_VIEWS = {
    "customer_stats": ["avg_purchase_30d", "n_purchases_7d", "home_country"],
    "merchant_stats": ["avg_rating", "category"],
    "customer_txn_1h": ["n_txn_1h", "sum_amount_1h"],
}


def _statuses(response: dict) -> dict[str, list[str]]:
    names = response["metadata"]["feature_names"]
    return {n: col["statuses"] for n, col in zip(names, response["results"], strict=True)}


def test_unknown_entities_are_not_found_with_null_values(server: FeatureServer) -> None:
    entities = {
        "customer_id": [910_000_001, 910_000_002],
        "merchant_id": [920_000_001] * 2,
        "amount": [12.5, 99.0],
    }
    response = server.online_features(entities, feature_service=FEATURE_SERVICE)
    statuses = _statuses(response)
    rows = response_rows(response)
    for features in STORED_VIEWS.values():
        for name in features:
            assert statuses[name] == ["NOT_FOUND", "NOT_FOUND"], name
            assert [row[name] for row in rows] == [None, None], name
    # Without history the on-demand ratio is null too, not an error.
    assert [row["amount_to_avg_30d"] for row in rows] == [None, None]


def test_a_pushed_event_is_served_on_the_next_read(server: FeatureServer) -> None:
    customer = 930_000_001
    features = ["customer_txn_1h:n_txn_1h", "customer_txn_1h:sum_amount_1h"]
    before = server.online_features({"customer_id": [customer]}, features=features)
    assert _statuses(before)["n_txn_1h"] == ["NOT_FOUND"]

    now = datetime.now(UTC).replace(microsecond=0)
    server.push(
        "customer_txn_1h_push",
        {
            "customer_id": [customer],
            "event_timestamp": [now.isoformat()],
            "created_timestamp": [now.isoformat()],
            "n_txn_1h": [7],
            "sum_amount_1h": [123.45],
        },
        token=WRITE_TOKEN,
    )
    after = server.online_features({"customer_id": [customer]}, features=features)
    assert _statuses(after)["n_txn_1h"] == ["PRESENT"]
    assert response_rows(after) == [
        {"customer_id": customer, "n_txn_1h": 7, "sum_amount_1h": 123.45}
    ]
