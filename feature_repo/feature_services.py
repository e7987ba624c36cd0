"""Feature services: the exact feature sets models consume, versioned by name."""

from feast import FeatureService
from feature_views import customer_stats, customer_txn_1h, merchant_stats, transaction_vs_history

fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[customer_stats, merchant_stats, customer_txn_1h, transaction_vs_history],
    description="Inputs of the card-fraud model, version 1.",
    tags={"team": "fraud", "model": "fraud_detection"},
)
