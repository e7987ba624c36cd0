"""`make bench` (materialization): `feature-platform materialize` against raw writes.

One data set of customer snapshots in the bench's own Postgres databases and Redis db,
then repeated rounds, each starting from an empty Redis db:

- raw: the rows materialization loads (read once beforehand, untimed) written with plain
  pipelined redis-py: per row a Feast key, one ValueProto per value and one HSET of the
  same hash with the same fields (`_ts`, `_created`, the features), 1,000 rows per
  round trip: what a hand-written loader does, without any out-of-order protection;
- platform: the platform's materialization of the view (`materialize._load`: the offline
  read, then its compare-and-set writes), timed end to end, offline read included;
- rebuild: `feature-platform rebuild-online` of the view (`rebuild.rebuild`): every
  entity's newest row within the ttl, the same rows as a first run, whatever the
  watermark; it should be no slower than materialization;
- floor: the same HSETs with every key and value serialized beforehand: what Redis and
  redis-py alone cost.

After each round the platform's and the rebuild's hashes must equal the raw ones, byte
for byte, on a sample of keys, so all write the same thing. The ratio is platform/raw
rows per second per round; the report gives the median and the spread over the rounds.
Results go to loadtests/results/bench_materialize.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import redis

from feature_platform.config import environments, feast_commands
from feature_platform.devtools import generator
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rebuild
from feature_platform.offline import tables as offline_tables
from feature_platform.stores import freshness

RESULTS = Path(__file__).parent / "results"
ENV = "dev"
VIEW = "customer_stats"
# The benchmark's own databases: nothing else uses them.
BENCH_SETTINGS = {
    "REGISTRY_DB": "feast_bench_mat_registry",
    "OFFLINE_DB": "feast_bench_mat_offline",
    "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
}
PIPELINE_ROWS = 1_000
# Test runs claim an empty Redis db with this key (tests/integration/stacks.py) and skip
# a db that holds it; the benchmark claims one the same way, so neither flushes the other.
CLAIM_KEY = "feature-platform:test-claim"
CLAIMABLE_DBS = range(15, 2, -1)
# "<pid>_...": a test run reclaims the db of a benchmark that was killed.
CLAIM_HOLDER = f"{os.getpid()}_bench_materialize"
SAMPLE_KEYS = 2_000


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _redis(settings: dict[str, str]) -> redis.Redis:
    return redis.Redis(
        host=settings["REDIS_HOST"], port=int(settings["REDIS_PORT"]),
        db=int(settings["REDIS_DB"]), password=settings["REDIS_PASSWORD"] or None,
    )  # fmt: skip


def claim_redis_db(settings: dict[str, str]) -> int:
    """An empty Redis db, claimed for the run (released by `release`)."""
    for db in CLAIMABLE_DBS:
        client = _redis({**settings, "REDIS_DB": str(db)})
        if client.set(CLAIM_KEY, CLAIM_HOLDER, nx=True, ex=6 * 3600):
            if client.dbsize() == 1:
                say(f"Redis db {db}")
                return db
            client.delete(CLAIM_KEY)
    raise SystemExit(f"no empty Redis db among {list(CLAIMABLE_DBS)} to claim")


def fresh_databases(settings: dict[str, str]) -> None:
    """The environment's registry and offline databases, dropped and made again empty."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(offline_tables.postgres_conninfo(settings, "postgres"),
                         autocommit=True) as conn:  # fmt: skip
        for name in (settings["REGISTRY_DB"], settings["OFFLINE_DB"]):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def prepare(rows: int) -> dict[str, str]:
    """Fresh bench databases holding about `rows` snapshots of one day, applied."""
    os.environ.update(BENCH_SETTINGS)
    os.environ["REDIS_DB"] = str(claim_redis_db(environments.settings(ENV)))
    settings = feast_commands.prepare(ENV)
    fresh_databases(settings)
    say(f"generating about {rows:,} {VIEW} rows")
    sizes = generator.Sizes(customers=rows, merchants=10, days=1, transactions=10)
    tables = generator.generate(sizes, seed=3, as_of=generator.default_as_of())
    offline_tables.write(settings, {VIEW: tables[VIEW]}, progress=say)
    say("feast apply")
    feast_commands.run(ENV, ["apply"])
    return settings


class Bench:
    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings
        self.client = _redis(settings)
        self.store = feast_commands.open_store(ENV)
        self.view = self.store.get_feature_view(VIEW)
        self.end = datetime.now(UTC)
        # A first run's window: every row of the table.
        self.window = materialize.window(self.view, None, self.end, materialize.DEFAULT_OVERLAP)

    def loaded_rows(self) -> pd.DataFrame:
        """The rows materialization loads, as the offline store returns them."""
        from feast import utils as feast_utils

        from feature_platform.stores.load_window import SourceColumns

        entities = [self.store.get_entity(name) for name in self.view.entities]
        columns = SourceColumns(*feast_utils._get_column_names(self.view, entities))
        offline = self.store._get_provider().offline_store
        assert self.view.batch_source is not None
        job = offline.pull_latest_created_since(
            self.store.config, self.view.batch_source, columns, self.window
        )
        return job.to_df()

    def flush(self) -> None:
        """Empty the claimed db, keeping the claim."""
        self.client.flushdb()
        self.client.set(CLAIM_KEY, CLAIM_HOLDER, ex=6 * 3600)

    def release(self) -> None:
        self.client.flushdb()

    def platform(self) -> float:
        """Seconds for the platform's materialization of the view, offline read included."""
        self.flush()
        started = time.perf_counter()
        materialize._load(self.store, self.view, self.window, say)
        return time.perf_counter() - started

    def rebuild(self) -> float:
        """Seconds for `rebuild-online` of the view, offline read included."""
        self.flush()
        started = time.perf_counter()
        rebuild.rebuild(self.store, [self.view], self.end, say)
        return time.perf_counter() - started

    def hashes(self, rows: pd.DataFrame) -> Iterator[tuple[bytes, dict[Any, bytes]]]:
        """Each row's key and HSET mapping, serialized one value at a time."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        project = self.store.project.encode()
        names = [f.name for f in self.view.features]
        fields = [_mmh3(f"{VIEW}:{n}") for n in names]
        for row in rows.itertuples(index=False):
            key = EntityKey(join_keys=["customer_id"],
                            entity_values=[Value(int64_val=int(row.customer_id))])  # fmt: skip
            event, created = Timestamp(), Timestamp()
            event.FromDatetime(row.event_timestamp.to_pydatetime())
            created.FromDatetime(row.created_timestamp.to_pydatetime())
            mapping: dict[Any, bytes] = {
                f"_ts:{VIEW}": event.SerializeToString(),
                f"_created:{VIEW}": created.SerializeToString(),
            }
            for name, field in zip(names, fields, strict=True):
                value, proto = getattr(row, name), Value()
                if isinstance(value, str):
                    proto.string_val = value
                elif isinstance(value, int):
                    proto.int64_val = value
                elif value == value:
                    proto.double_val = float(value)
                mapping[field] = proto.SerializeToString()
            yield serialize_entity_key(key, 3) + project, mapping

    def _hset_all(self, hashes: Iterator[tuple[bytes, dict[Any, bytes]]], total: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, (key, mapping) in enumerate(hashes, 1):
            pipe.hset(key, mapping=mapping)
            if i % PIPELINE_ROWS == 0:
                pipe.execute()
                pipe = self.client.pipeline(transaction=False)
            if i % 200_000 == 0:
                say(f"    {i:,}/{total:,} rows written")
        pipe.execute()

    def raw(self, rows: pd.DataFrame) -> float:
        self.flush()
        started = time.perf_counter()
        self._hset_all(self.hashes(rows), len(rows))
        return time.perf_counter() - started

    def floor(self, rows: pd.DataFrame) -> float:
        prepared = list(self.hashes(rows))
        self.flush()
        started = time.perf_counter()
        self._hset_all(iter(prepared), len(rows))
        return time.perf_counter() - started

    def sample(self, keys: list[bytes]) -> dict[bytes, dict[bytes, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return dict(zip(keys, pipe.execute(), strict=True))

    def entity_keys(self) -> list[bytes]:
        own, claim = freshness.KEY_PREFIX.encode(), CLAIM_KEY.encode()
        return [k for k in self.client.scan_iter(count=10_000)
                if k != claim and not k.startswith(own)]  # fmt: skip


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(rows: int, rounds: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    settings = prepare(rows)
    bench = Bench(settings)
    try:
        say("reading the rows materialization loads")
        loaded = bench.loaded_rows()
        n = len(loaded)
        rounds_out = []
        for r in range(1, rounds + 1):
            say(f"round {r}/{rounds}: raw pipelined redis-py, {n:,} rows")
            raw_s = bench.raw(loaded)
            keys = bench.entity_keys()
            assert len(keys) == n, f"raw wrote {len(keys):,} hashes for {n:,} rows"
            expected = bench.sample(keys[:SAMPLE_KEYS])
            say(f"round {r}/{rounds}: platform materialization, {n:,} rows")
            platform_s = bench.platform()
            assert bench.sample(keys[:SAMPLE_KEYS]) == expected, "platform and raw hashes differ"
            assert len(bench.entity_keys()) == n
            say(f"round {r}/{rounds}: rebuild-online, {n:,} rows")
            rebuild_s = bench.rebuild()
            assert bench.sample(keys[:SAMPLE_KEYS]) == expected, "rebuild and raw hashes differ"
            assert len(bench.entity_keys()) == n
            ratio = raw_s / platform_s
            rounds_out.append({"raw_s": raw_s, "platform_s": platform_s, "ratio": ratio,
                               "rebuild_s": rebuild_s})  # fmt: skip
            say(f"  raw {n / raw_s:,.0f} rows/s, platform {n / platform_s:,.0f} rows/s: "
                f"{raw_s / platform_s:.0%}; rebuild {n / rebuild_s:,.0f} rows/s")  # fmt: skip
        say(f"floor: pre-serialized HSETs, {n:,} rows")
        floor_s = bench.floor(loaded)
    finally:
        bench.release()
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        # Other work on a shared machine slows both writers; the 1-minute load average
        # before and after the run says how busy it was.
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "rows": n,
        "rounds": rounds_out,
        "raw_rows_per_s": spread([n / x["raw_s"] for x in rounds_out]),
        "platform_rows_per_s": spread([n / x["platform_s"] for x in rounds_out]),
        "ratio": spread([x["ratio"] for x in rounds_out]),
        "rebuild_rows_per_s": spread([n / x["rebuild_s"] for x in rounds_out]),
        "rebuild_to_platform": spread([x["platform_s"] / x["rebuild_s"] for x in rounds_out]),
        "floor_rows_per_s": n / floor_s,
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    raw, ours, ratio = (result[k] for k in ("raw_rows_per_s", "platform_rows_per_s", "ratio"))
    rebuilt, versus = result["rebuild_rows_per_s"], result["rebuild_to_platform"]
    lines = [
        f"# Materialization benchmark ({result['when']})",
        "",
        f"Machine: {result['machine']}, load average {result['load_average'][0]} before and "
        f"{result['load_average'][1]} after. {result['rows']:,} rows of `{VIEW}`, "
        f"{len(result['rounds'])} rounds, each from an empty Redis db.",
        "",
        "| writer | rows/s (median) | min | max |",
        "| --- | --- | --- | --- |",
        f"| raw pipelined redis-py HSET | {raw['median']:,.0f} | {raw['min']:,.0f} | "
        f"{raw['max']:,.0f} |",
        f"| platform materialization (offline read included) | {ours['median']:,.0f} | "
        f"{ours['min']:,.0f} | {ours['max']:,.0f} |",
        f"| rebuild-online (offline read included) | {rebuilt['median']:,.0f} | "
        f"{rebuilt['min']:,.0f} | {rebuilt['max']:,.0f} |",
        f"| floor: pre-serialized HSETs | {result['floor_rows_per_s']:,.0f} | | |",
        "",
        f"Platform / raw: median {ratio['median']:.0%} (rounds from {ratio['min']:.0%} to "
        f"{ratio['max']:.0%}); target >= 80%: {'met' if ratio['median'] >= 0.8 else 'NOT met'}.",
        "",
        f"Rebuild / materialization on the same rows: median {versus['median']:.0%} (rounds "
        f"from {versus['min']:.0%} to {versus['max']:.0%}); target: no slower.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="snapshot rows to load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 2 rounds")
    args = parser.parse_args()
    rows, rounds = (100_000, 2) if args.quick else (args.rows, args.rounds)
    if rows < 1 or rounds < 1:
        say("--rows and --rounds must be at least 1")
        return 2
    result = run(rows, rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_materialize.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench_materialize.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
