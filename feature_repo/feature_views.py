"""Feature views: what is known about customers and merchants, and how fresh it must be."""

from datetime import timedelta
from typing import Any

from data_sources import (
    customer_stats_source,
    customer_txn_1h_push,
    merchant_stats_source,
    transaction_request,
)
from entities import customer, merchant
from expectations import quality_tags
from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

# Daily snapshots: a value older than two days means a pipeline stopped.
customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=2),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="avg_purchase_30d", dtype=Float64, description="Mean amount, 30 days."),
        Field(name="n_purchases_7d", dtype=Int64),
        Field(name="n_purchases_30d", dtype=Int64),
        Field(name="account_age_days", dtype=Int64),
        Field(name="home_country", dtype=String),
    ],
    source=customer_stats_source,
    online=True,
    tags={"team": "fraud", "cadence": "daily", **quality_tags("customer_stats")},
)

# Merchants change slowly; three days of tolerance for a late snapshot.
merchant_stats = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    ttl=timedelta(days=3),
    schema=[
        Field(name="merchant_id", dtype=Int64),
        Field(name="avg_rating", dtype=Float64, description="Null until rated."),
        Field(name="n_disputes_30d", dtype=Int64),
        Field(name="n_sales_30d", dtype=Int64),
        Field(name="category", dtype=String),
    ],
    source=merchant_stats_source,
    online=True,
    tags={"team": "fraud", "cadence": "daily", **quality_tags("merchant_stats")},
)

# Real-time counters pushed by the payment stream; stale after two hours.
customer_txn_1h = FeatureView(
    name="customer_txn_1h",
    entities=[customer],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="customer_id", dtype=Int64),
        Field(name="n_txn_1h", dtype=Int64),
        Field(name="sum_amount_1h", dtype=Float64),
    ],
    source=customer_txn_1h_push,
    online=True,
    tags={"team": "fraud", "cadence": "streaming", **quality_tags("customer_txn_1h")},
)


@on_demand_feature_view(
    sources=[customer_stats, transaction_request],
    schema=[
        Field(name="amount_to_avg_30d", dtype=Float64),
        Field(name="amount_over_avg_30d", dtype=Float64),
    ],
    mode="python",
)
def transaction_vs_history(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """How unusual this amount is for this customer; null without history."""
    ratios: list[float | None] = []
    excesses: list[float | None] = []
    for amount, avg in zip(inputs["amount"], inputs["avg_purchase_30d"], strict=True):
        known = amount is not None and avg is not None and avg == avg and avg > 0
        ratios.append(round(amount / avg, 6) if known else None)
        excesses.append(round(amount - avg, 6) if known else None)
    return {"amount_to_avg_30d": ratios, "amount_over_avg_30d": excesses}
