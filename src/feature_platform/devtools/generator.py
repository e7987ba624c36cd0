"""A deterministic fraud-detection data set: daily snapshots, hourly counters, labels.

The same seed and `as_of` give the same rows, whatever the destination. The data is
imperfect on purpose, as real pipelines are:

- new customers signed up within the last day and have no snapshot yet;
- some merchants stopped sending snapshots halfway through the period;
- a few snapshot days are missing, and some rows arrive late (created well after their
  event time);
- some snapshots are restated: the same entity and event time again, with a later
  created time and a corrected value, which must win;
- merchants nobody rated have a null rating, customers without purchases a null average.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from feature_platform.console import Say

COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IN", "BR"]
COUNTRY_WEIGHTS = [0.35, 0.15, 0.15, 0.1, 0.1, 0.1, 0.05]
# Merchants are rated 1 to 5 stars.
RATING_SCALE = (1.0, 5.0)
CATEGORIES = ["grocery", "electronics", "travel", "fashion", "gaming", "restaurants"]

# The generated tables, in the order they are written.
TABLES = ("customer_stats", "merchant_stats", "customer_txn_1h", "transactions")


@dataclass(frozen=True)
class Sizes:
    customers: int = 1_000
    merchants: int = 100
    days: int = 30
    transactions: int = 20_000

    def validate(self) -> None:
        for name in ("customers", "merchants", "days", "transactions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def default_as_of() -> datetime:
    """The current hour: data up to now, stable for an hour of reruns."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _utc(ts: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _created(rng: np.random.Generator, events: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    """Pipeline lag of minutes to hours; 3% of rows arrive a day or two late."""
    lag_s = rng.uniform(300, 3 * 3600, len(events))
    late = rng.random(len(events)) < 0.03
    lag_s[late] += rng.uniform(86_400, 2 * 86_400, int(late.sum()))
    created = events + pd.to_timedelta(lag_s.round(), unit="s")
    return created.where(created <= as_of, as_of)


def _restate(
    rng: np.random.Generator,
    df: pd.DataFrame,
    column: str,
    as_of: pd.Timestamp,
    upper: float | None = None,
) -> pd.DataFrame:
    """Append corrected copies of 1% of rows: same event time, later created time; a
    corrected value stays within `upper`, the top of its scale."""
    picked = df[rng.random(len(df)) < 0.01].copy()
    picked[column] = (picked[column] * 1.1).round(2).clip(upper=upper)
    later = picked["created_timestamp"] + pd.Timedelta(hours=6)
    picked["created_timestamp"] = later.where(later <= as_of, as_of)
    # Ties on created time would make the winner arbitrary; drop those.
    picked = picked[picked["created_timestamp"] > df.loc[picked.index, "created_timestamp"]]
    return pd.concat([df, picked], ignore_index=True)


def _grid(n_entities: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (entity index, day index) pair, entity-major."""
    days = np.arange(n_days)
    return np.repeat(np.arange(n_entities), n_days), np.tile(days, n_entities)


def _snapshot_days(as_of: pd.Timestamp, days: int) -> pd.DatetimeIndex:
    last = as_of.floor("D")
    return pd.date_range(end=last, periods=days, freq="D", tz="UTC")


def generate(
    sizes: Sizes,
    seed: int = 7,
    as_of: datetime | None = None,
    progress: Say = lambda _msg: None,
) -> dict[str, pd.DataFrame]:
    """All tables as data frames, keyed by table name."""
    sizes.validate()
    rng = np.random.default_rng(seed)
    now = _utc(as_of or default_as_of())
    days = _snapshot_days(now, sizes.days)
    start = days[0]

    # Customers: signup before the period, or during it; 5% in the last day.
    n_c = sizes.customers
    customer_ids = np.arange(1, n_c + 1, dtype=np.int64)
    age_days = rng.exponential(400, n_c) + rng.uniform(0, sizes.days, n_c)
    new = rng.random(n_c) < 0.05
    age_days[new] = rng.uniform(0.05, 0.95, int(new.sum()))
    signup = now - pd.to_timedelta(np.round(age_days * 86_400), unit="s")
    spend = np.round(rng.lognormal(3.6, 0.7, n_c), 2)  # typical amount per customer
    rate = rng.gamma(2.0, 0.4, n_c)  # purchases per day
    country = rng.choice(COUNTRIES, n_c, p=COUNTRY_WEIGHTS)

    progress(f"customer_stats: {n_c:,} customers x {sizes.days} days")
    c_idx, d_idx = _grid(n_c, len(days))
    snap_ts = days[d_idx]
    keep = (snap_ts > signup[c_idx]) & (rng.random(len(c_idx)) >= 0.02)
    c_idx, snap_ts = c_idx[keep], snap_ts[keep]
    n_30 = rng.poisson(rate[c_idx] * 30)
    avg = np.round(spend[c_idx] * rng.lognormal(0, 0.1, len(c_idx)), 2)
    customer_stats = pd.DataFrame(
        {
            "customer_id": customer_ids[c_idx],
            "event_timestamp": snap_ts,
            "avg_purchase_30d": np.where(n_30 > 0, avg, np.nan),
            "n_purchases_7d": np.minimum(rng.poisson(rate[c_idx] * 7), n_30).astype(np.int64),
            "n_purchases_30d": n_30.astype(np.int64),
            "account_age_days": ((snap_ts - signup[c_idx]).days).astype(np.int64),
            "home_country": country[c_idx],
        }
    )
    created = _created(rng, customer_stats["event_timestamp"], now)
    customer_stats.insert(2, "created_timestamp", created)
    customer_stats = _restate(rng, customer_stats, "avg_purchase_30d", now)

    # Merchants: 10% never rated; the last 3% (at least one) stop halfway through.
    n_m = sizes.merchants
    merchant_ids = np.arange(1, n_m + 1, dtype=np.int64)
    rating = np.round(np.clip(rng.normal(4.2, 0.5, n_m), *RATING_SCALE), 2)
    # exactly 10% unrated (rounded), so small demos keep within the rating's null share
    unrated = np.argsort(rng.random(n_m))[: round(n_m * 0.10)]
    rated = ~np.isin(np.arange(n_m), unrated)
    sales_rate = rng.gamma(2.0, 20.0, n_m)
    dispute_rate = rng.beta(1, 60, n_m)
    category = rng.choice(CATEGORIES, n_m)
    stops = np.full(n_m, now)
    n_stopped = max(1, round(n_m * 0.03)) if n_m > 1 else 0
    stops[n_m - n_stopped :] = days[len(days) // 2]

    progress(f"merchant_stats: {n_m:,} merchants x {sizes.days} days")
    m_idx, d_idx = _grid(n_m, len(days))
    m_ts = days[d_idx]
    keep = (m_ts <= pd.DatetimeIndex(stops[m_idx])) & (rng.random(len(m_idx)) >= 0.02)
    m_idx, m_ts = m_idx[keep], m_ts[keep]
    n_sales = rng.poisson(sales_rate[m_idx] * 30).astype(np.int64)
    merchant_stats = pd.DataFrame(
        {
            "merchant_id": merchant_ids[m_idx],
            "event_timestamp": m_ts,
            "avg_rating": np.where(rated[m_idx], rating[m_idx], np.nan),
            "n_disputes_30d": rng.binomial(n_sales, dispute_rate[m_idx]).astype(np.int64),
            "n_sales_30d": n_sales,
            "category": category[m_idx],
        }
    )
    created = _created(rng, merchant_stats["event_timestamp"], now)
    merchant_stats.insert(2, "created_timestamp", created)
    merchant_stats = _restate(rng, merchant_stats, "avg_rating", now, upper=RATING_SCALE[1])

    # Transactions: after the customer's signup, within the period, up to now.
    n_t = sizes.transactions
    progress(f"transactions: {n_t:,} labelled transactions")
    t_c = rng.choice(n_c, n_t, p=rate / rate.sum())
    first = signup[t_c].where(signup[t_c] > start, start)
    span_s = (now - first).total_seconds().to_numpy()
    t_ts = first + pd.to_timedelta(np.floor(rng.random(n_t) * span_s), unit="s")
    t_m = rng.integers(0, n_m, n_t)
    amount = np.round(spend[t_c] * rng.lognormal(0, 0.6, n_t), 2)
    unusual = amount / spend[t_c]
    logit = -5.0 + 1.2 * np.log(unusual + 1e-9) + 40 * dispute_rate[t_m]
    is_fraud = rng.random(n_t) < 1 / (1 + np.exp(-logit))
    transactions = (
        pd.DataFrame(
            {
                "customer_id": customer_ids[t_c],
                "merchant_id": merchant_ids[t_m],
                "event_timestamp": t_ts,
                "amount": amount,
                "is_fraud": is_fraud,
            }
        )
        .sort_values(["event_timestamp", "customer_id"], kind="stable")
        .reset_index(drop=True)
    )
    transactions.insert(0, "transaction_id", np.arange(1, n_t + 1, dtype=np.int64))

    # Hourly counters, stamped at the end of each hour; the current hour is still open.
    progress("customer_txn_1h: hourly counters from the transactions")
    hour_end = transactions["event_timestamp"].dt.floor("h") + pd.Timedelta(hours=1)
    closed = hour_end <= now
    customer_txn_1h = (
        transactions[closed]
        .assign(event_timestamp=hour_end[closed])
        .groupby(["customer_id", "event_timestamp"], as_index=False)
        .agg(n_txn_1h=("amount", "size"), sum_amount_1h=("amount", "sum"))
    )
    customer_txn_1h["n_txn_1h"] = customer_txn_1h["n_txn_1h"].astype(np.int64)
    customer_txn_1h["sum_amount_1h"] = customer_txn_1h["sum_amount_1h"].round(2)
    counted = customer_txn_1h["event_timestamp"] + pd.Timedelta(minutes=1)
    customer_txn_1h.insert(2, "created_timestamp", counted.where(counted <= now, now))

    tables = {
        "customer_stats": customer_stats,
        "merchant_stats": merchant_stats,
        "customer_txn_1h": customer_txn_1h,
        "transactions": transactions,
    }
    assert tuple(tables) == TABLES
    return tables
