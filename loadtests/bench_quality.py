"""`make bench` (quality): what `feature-platform quality` costs over served vectors.

Served-vector files in Feast's log schema (`view__feature` columns and `__log_timestamp`,
as a logged feature service writes them), built from the generator's rows: --rows of
them over the last hour, in 10 parquet files, and a training set of a tenth as many rows
as the reference. Per round, alternating:

- floor: reading the same files into data frames, and nothing else: what any job over
  them pays;
- quality: the drift run end to end (`quality.monitor.run`: the files read, every
  feature of the three views compared, histograms for the report), as the command runs
  it with `--served-vectors` and `--training-set`.

Reported: rows of served vectors per second, median and spread over the rounds, and the
ratio quality / floor per round. Results: loadtests/results/bench_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_materialize import fresh_databases, say, spread

from feature_platform.config import feast_commands
from feature_platform.devtools import generator
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import monitor

RESULTS = Path(__file__).parent / "results"
ENV = "dev"
BENCH_SETTINGS = {
    "REGISTRY_DB": "feast_bench_quality_registry",
    "OFFLINE_DB": "feast_bench_quality_offline",
    "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
}
VIEWS = {
    "customer_stats": ("customer_id", ["avg_purchase_30d", "n_purchases_7d", "n_purchases_30d",
                                       "account_age_days", "home_country"]),
    "merchant_stats": ("merchant_id", ["avg_rating", "n_disputes_30d", "n_sales_30d",
                                       "category"]),
    "customer_txn_1h": ("customer_id", ["n_txn_1h", "sum_amount_1h"]),
}  # fmt: skip
FILES = 10


def prepare() -> dict[str, pd.DataFrame]:
    """Fresh bench databases with the repository applied; the generated tables."""
    os.environ.update(BENCH_SETTINGS)
    settings = feast_commands.prepare(ENV)
    fresh_databases(settings)
    sizes = generator.Sizes(customers=20_000, merchants=1_000, days=3, transactions=50_000)
    tables = generator.generate(sizes, seed=3, as_of=generator.default_as_of())
    offline_tables.write(settings, tables, progress=say)
    say("feast apply")
    feast_commands.run(ENV, ["apply"])
    return tables


def vectors(
    tables: dict[str, pd.DataFrame], rows: int, seed: int, full_names: bool
) -> pd.DataFrame:
    """`rows` vectors: per view a random snapshot row each, served in the last hour."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for view, (_, features) in VIEWS.items():
        picked = tables[view].iloc[rng.integers(0, len(tables[view]), rows)]
        for feature in features:
            name = f"{view}__{feature}" if full_names else feature
            columns[name] = picked[feature].to_numpy()
    now = pd.Timestamp.now(tz="UTC")
    columns["__log_timestamp"] = now - pd.to_timedelta(rng.random(rows) * 3_000, unit="s")
    return pd.DataFrame(columns)


def write_files(frame: pd.DataFrame, directory: Path) -> None:
    directory.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), FILES)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)


def floor(directory: Path, reference: Path) -> float:
    started = time.perf_counter()
    frames = [pd.read_parquet(file) for file in sorted(directory.glob("*.parquet"))]
    pd.concat(frames, ignore_index=True)
    pd.read_parquet(reference)
    return time.perf_counter() - started


def quality(directory: Path, reference: Path) -> float:
    store = feast_commands.open_store(ENV)
    try:
        now = datetime.now(UTC)
        current, baseline = monitor.windows(now, timedelta(hours=1), timedelta(days=1))
        started = time.perf_counter()
        training_set = monitor.Reference("training set", pd.read_parquet(reference))
        run = monitor.run(store, current, baseline, training_set, lambda _l: None, str(directory))
        elapsed = time.perf_counter() - started
    finally:
        feast_registry.release(store)
    expected = sum(len(features) for _, features in VIEWS.values())
    assert len(run.compared) == expected, f"{len(run.compared)} features compared of {expected}"
    return elapsed


def run(rows: int, rounds: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    tables = prepare()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        directory, reference = Path(tmp) / "served", Path(tmp) / "training.parquet"
        say(f"writing {rows:,} served vectors and a training set of {rows // 10:,} rows")
        write_files(vectors(tables, rows, seed=1, full_names=True), directory)
        vectors(tables, rows // 10, seed=2, full_names=False).to_parquet(reference)
        floor(directory, reference)  # warm: every round then reads from the page cache
        out = []
        for r in range(1, rounds + 1):
            order = ("floor", "quality") if r % 2 else ("quality", "floor")
            times = {}
            for kind in order:
                times[kind] = (floor if kind == "floor" else quality)(directory, reference)
            out.append({**times, "ratio": times["floor"] / times["quality"]})
            say(f"round {r}/{rounds}: floor {rows / times['floor']:,.0f} rows/s, quality "
                f"{rows / times['quality']:,.0f} rows/s")  # fmt: skip
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "rows": rows,
        "features": sum(len(features) for _, features in VIEWS.values()),
        "rounds": out,
        "floor_rows_per_s": spread([rows / x["floor"] for x in out]),
        "quality_rows_per_s": spread([rows / x["quality"] for x in out]),
        "ratio": spread([x["ratio"] for x in out]),
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    floor_, ours, ratio = (result[k] for k in ("floor_rows_per_s", "quality_rows_per_s", "ratio"))
    lines = [
        f"# Quality run benchmark ({result['when']})",
        "",
        f"Machine: {result['machine']}, load average {result['load_average'][0]} before and "
        f"{result['load_average'][1]} after. {result['rows']:,} served vectors in {FILES} "
        f"files, {result['features']} features, a training set of {result['rows'] // 10:,} "
        f"rows as the reference, {len(result['rounds'])} alternating rounds.",
        "",
        "| job | served vectors/s (median) | min | max |",
        "| --- | --- | --- | --- |",
        f"| floor: read the files | {floor_['median']:,.0f} | {floor_['min']:,.0f} | "
        f"{floor_['max']:,.0f} |",
        f"| feature-platform quality (read, compare, histograms) | {ours['median']:,.0f} | "
        f"{ours['min']:,.0f} | {ours['max']:,.0f} |",
        "",
        f"Quality / floor: median {ratio['median']:.0%} (rounds from {ratio['min']:.0%} to "
        f"{ratio['max']:.0%}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="served vectors to judge")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rows < 10 or args.rounds < 1:
        say("--rows must be at least 10 and --rounds at least 1")
        return 2
    result = run(args.rows, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_quality.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench_quality.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
