"""Feature services: the exact feature sets models consume, versioned by name."""

import os

from expectations import label_tags
from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feature_views import customer_stats, customer_txn_1h, merchant_stats, transaction_vs_history

# What production served, for monitoring: the feature server writes a sample of the
# vectors it answers to SERVED_VECTORS_PATH: postgresql:TABLE, a table of the offline
# database that every job in a cluster can read, or parquet files under a directory (or
# s3://...); unset, nothing is logged. A file destination, a kind Feast knows, so thin
# clients without this platform can still load the service.
served_vectors_path = os.environ.get("SERVED_VECTORS_PATH", "")
served_vectors = (
    LoggingConfig(
        destination=FileLoggingDestination(path=served_vectors_path),
        sample_rate=float(os.environ.get("SERVED_VECTORS_SAMPLE_RATE", "1")),
    )
    if served_vectors_path
    else None
)

fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[customer_stats, merchant_stats, customer_txn_1h, transaction_vs_history],
    description="Inputs of the card-fraud model, version 1.",
    tags={"team": "fraud", "model": "fraud_detection", **label_tags()},
    logging_config=served_vectors,
)
