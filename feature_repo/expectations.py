"""What each view's data must look like, checked on the way in (`/push`,
`/write-to-online-store`, materialization): per feature its type, the share of nulls a
batch of 20 rows or more may hold (0: never null), a range or the allowed values; per view
a policy.

- `refuse`: a row breaking a rule fails the whole write (a 422 naming feature and rule;
  materialization: the view is not loaded and the job fails naming it).
- `quarantine`: the rows breaking a rule are set aside in the quarantine table and
  skipped, the others written (a pushed row reaches neither store; a materialized one
  stays in its offline table).

The views carry these as tags (`quality_tags`), so they travel with the registry: the
servers read them where they read the views, and `plan` shows a change to them. A feature
service carries its labels' expectations the same way (`label_tags`), checked by the
`training-set` command. Plain
data only: `feast apply` imports this module, the platform builds the checks.
"""

import json
from typing import Any

POLICY_TAG = "quality.policy"
EXPECTATIONS_TAG = "quality.expectations"
LABELS_TAG = "quality.labels"

COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IN", "BR"]
CATEGORIES = ["grocery", "electronics", "travel", "fashion", "gaming", "restaurants"]

# Counts and amounts are never negative; a count is an integer.
_COUNT = {"type": "int", "min": 0}
_AMOUNT = {"type": "float", "min": 0}

EXPECTATIONS: dict[str, dict[str, Any]] = {
    # Daily snapshots: a broken snapshot is a broken pipeline, so it stops.
    "customer_stats": {
        "policy": "refuse",
        "features": {
            # null for a customer without purchases in 30 days: a few, not most
            "avg_purchase_30d": {**_AMOUNT, "nulls": 0.2},
            "n_purchases_7d": _COUNT,
            "n_purchases_30d": _COUNT,
            "account_age_days": _COUNT,
            "home_country": {"type": "string", "allowed": COUNTRIES},
        },
    },
    "merchant_stats": {
        "policy": "refuse",
        "features": {
            # null until rated; ratings are 1 to 5 stars
            "avg_rating": {"type": "float", "min": 1, "max": 5, "nulls": 0.3},
            "n_disputes_30d": _COUNT,
            "n_sales_30d": _COUNT,
            "category": {"type": "string", "allowed": CATEGORIES},
        },
    },
    # The payment stream's counters: one bad event must not stop the others.
    "customer_txn_1h": {
        "policy": "quarantine",
        "features": {"n_txn_1h": _COUNT, "sum_amount_1h": _AMOUNT},
    },
}


def quality_tags(view: str) -> dict[str, str]:
    """The tags that carry `view`'s expectations and policy."""
    spec = EXPECTATIONS[view]
    return {
        POLICY_TAG: spec["policy"],
        EXPECTATIONS_TAG: json.dumps(spec["features"], sort_keys=True, separators=(",", ":")),
    }


# The labels a feature service's training sets are built for, carried by the service: per
# label the share of positive rows a set of 1,000 labels or more must hold. Fraud is about
# 2% of card transactions; a share far outside means the labels' pipeline broke (every
# row positive, a join that repeats the positives), and the training set is refused.
LABELS: dict[str, dict[str, Any]] = {"is_fraud": {"share": [0.002, 0.1]}}


def label_tags() -> dict[str, str]:
    """The tag that carries the labels' expectations, for a feature service."""
    return {LABELS_TAG: json.dumps(LABELS, sort_keys=True, separators=(",", ":"))}
