"""Point-in-time training sets through Feast: the labelled transactions joined with their
features by `get_historical_features`."""

from __future__ import annotations

import pandas as pd
from feast import FeatureStore

FEATURE_SERVICE = "fraud_detection_v1"
# What a label row must carry: the join keys, the label time and the request data.
ENTITY_COLUMNS = ["customer_id", "merchant_id", "event_timestamp", "amount"]


def training_set(store: FeatureStore, labels: pd.DataFrame) -> pd.DataFrame:
    """Each label row with the features as they were known at its event time."""
    missing = [c for c in ENTITY_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"label rows need columns: {', '.join(missing)}")
    job = store.get_historical_features(
        entity_df=labels,
        features=store.get_feature_service(FEATURE_SERVICE),
    )
    df = job.to_df()
    # The Postgres store returns naive UTC times, the duckdb store aware ones: one form.
    for column in df.columns:
        if pd.api.types.is_datetime64_dtype(df[column]):
            df[column] = df[column].dt.tz_localize("UTC")
    order = [c for c in labels.columns if c in df.columns]
    return df.sort_values(order, kind="stable").reset_index(drop=True)
