"""`make bench`: the platform's server against its baselines, in one run, on one machine.

Servers, each given the same single core (CPU 0) while the load generator runs on
CPU 1, so the generator never takes the server's CPU:

- stock `feast serve` at its defaults (1 worker, recycled every 1000 requests);
- stock `feast serve` tuned by hand: workers = its cores (1), no recycling;
- the platform's server (`feature-platform serve`, 1 worker);
- a no-op ASGI app under the same gunicorn + uvicorn worker: the HTTP floor;
- raw redis-py reads of the same keys (pipelined HMGET), in process: the storage floor.

For 1, 10 and 100 entities per request, the load steps through fixed rates; the result
is the highest rate whose p99 stays within 10 ms with no errors, and p50/p99 at fixed
rates (materialization: loadtests/bench_materialize.py). Results go to loadtests/results/
as JSON, a markdown table and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import RunResult, run_fixed_rate

from feature_platform import feast_commands, generator, offline_tables
from feature_platform.server import FeatureServer, free_port
from feature_platform.training import FEATURE_SERVICE

RESULTS = Path(__file__).parent / "results"
ENV = "dev"
# The benchmark's own databases and Redis db: nothing else uses them.
BENCH_SETTINGS = {
    "REGISTRY_DB": "feast_bench_registry",
    "OFFLINE_DB": "feast_bench_offline",
    "REDIS_DB": "15",
    "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
}
SIZES = generator.Sizes(customers=10_000, merchants=500, days=3, transactions=20_000)
RATES = [
    10,
    25,
    50,
    100,
    200,
    300,
    400,
    500,
    700,
    900,
    1200,
    1500,
    1800,
    2200,
    2600,
    3000,
    3500,
    4000,
]
FIXED_RATES = [50, 100, 300]
P99_LIMIT_S = 0.010
SERVER_CPUS = {0}
LOADGEN_CPUS = {1}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_data() -> dict[str, str]:
    """Fresh bench databases, generated data, apply, materialize."""
    os.environ.update(BENCH_SETTINGS)
    settings = feast_commands.prepare(ENV)
    conninfo = offline_tables.postgres_conninfo(settings, "postgres")
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in (settings["REGISTRY_DB"], settings["OFFLINE_DB"]):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _redis(settings).flushdb()
    say(f"generating {SIZES.customers:,} customers, {SIZES.merchants:,} merchants")
    tables = generator.generate(SIZES, seed=7, as_of=generator.default_as_of())
    offline_tables.write(settings, tables, progress=say)
    say("feast apply")
    feast_commands.run(ENV, ["apply"])
    say("materialize-incremental")
    feast_commands.run(ENV, ["materialize-incremental", datetime.now(UTC).isoformat()])
    return settings


def _redis(settings: dict[str, str]) -> redis.Redis:
    return redis.Redis(
        host=settings["REDIS_HOST"], port=int(settings["REDIS_PORT"]),
        db=int(settings["REDIS_DB"]), password=settings["REDIS_PASSWORD"] or None,
    )  # fmt: skip


def bodies() -> dict[int, bytes]:
    """One request body per batch size, for known customers and merchants."""
    rng = np.random.default_rng(1)
    out = {}
    for n in (1, 10, 100):
        entities = {
            "customer_id": rng.integers(1, SIZES.customers // 2, n).tolist(),
            "merchant_id": rng.integers(1, SIZES.merchants // 2, n).tolist(),
            "amount": np.round(rng.lognormal(3.5, 0.8, n), 2).tolist(),
        }
        out[n] = orjson.dumps({"feature_service": FEATURE_SERVICE, "entities": entities})
    return out


def sweep(url: str, body: bytes, step_s: float) -> list[RunResult]:
    """Fixed-rate steps upward until the server falls behind the offered rate (or its
    median passes 100 ms): the curve for the plot, its p99 knee and its saturation."""
    # Warm-up, discarded: first requests pay for lazy imports and connection set-up.
    run_fixed_rate(url, body, 50, duration_s=2)
    runs = []
    for rate in RATES:
        result = run_fixed_rate(url, body, rate, duration_s=step_s)
        runs.append(result)
        say(
            f"    {rate:>5} rps: p50 {result.percentile(50) * 1e3:7.2f} ms  "
            f"p99 {result.percentile(99) * 1e3:8.2f} ms  errors {result.errors}"
        )
        if result.achieved_rps < 0.9 * rate or result.percentile(50) > 0.1:
            break
    return runs


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    passing = [r.target_rps for r in runs if r.errors == 0 and r.percentile(99) <= P99_LIMIT_S]
    fixed = {}
    for rate in FIXED_RATES:
        match = [r for r in runs if r.target_rps == rate]
        if match:
            fixed[str(rate)] = {"p50_ms": match[0].percentile(50) * 1e3,
                                "p99_ms": match[0].percentile(99) * 1e3,
                                "errors": match[0].errors}  # fmt: skip
    # Saturation: the highest offered rate served in full, at any latency, error-free.
    sustained = [
        r.target_rps for r in runs if r.errors == 0 and r.achieved_rps >= 0.95 * r.target_rps
    ]
    return {
        "max_rps_p99_10ms": max(passing, default=0),
        "max_rps_sustained": max(sustained, default=0),
        "errors": sum(r.errors for r in runs),
        "fixed_rates": fixed,
        "steps": [
            {"rps": r.target_rps, "achieved_rps": round(r.achieved_rps, 1),
             "p50_ms": r.percentile(50) * 1e3, "p90_ms": r.percentile(90) * 1e3,
             "p99_ms": r.percentile(99) * 1e3, "errors": r.errors, "statuses": r.statuses}
            for r in runs
        ],
    }  # fmt: skip


class NoopServer:
    """The no-op ASGI app under gunicorn + one uvicorn worker, pinned like the others."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NoopServer:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-k", "uvicorn_worker.UvicornWorker",
             "-w", "1", "-b", f"127.0.0.1:{self.port}", "--keep-alive", "30",
             "--chdir", str(Path(__file__).parent),
             "noop_app:app"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, SERVER_CPUS),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                run_fixed_rate(self.url + "/", b"{}", 10, duration_s=0.2)
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("no-op server did not start")

    def __exit__(self, *_exc: object) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=20)


def raw_redis(settings: dict[str, str], body: bytes, seconds: float = 3.0) -> dict[str, Any]:
    """Closed-loop pipelined HMGETs of the keys and fields the request reads."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.value_type import ValueType

    from feature_platform.serving.online import _entity_key

    store = feast_commands.open_store(ENV)
    service = store.get_feature_service(FEATURE_SERVICE)
    entities = orjson.loads(body)["entities"]
    commands = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except Exception:
            continue  # on-demand: nothing stored
        fields: list[Any] = [_mmh3(f"{view.name}:{f.name}") for f in projection.features]
        fields.append(f"_ts:{view.name}")
        keys = view.join_keys
        for row in zip(*(entities[k] for k in keys), strict=True):
            proto = _entity_key(keys, row, {k: ValueType.INT64 for k in keys})
            commands.append((serialize_entity_key(proto, 3) + store.project.encode(), fields))
    client = _redis(settings)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(latencies) < 200_000:
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for key, fields in commands:
            pipe.hmget(key, fields)
        pipe.execute()
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "ops_per_s": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Feature server benchmark ({result['when']})",
        "",
        f"Machine: {result['machine']}. Each server on CPU 0, load generator on CPU 1; "
        f"open-loop fixed-rate load, {result['step_seconds']} s per step; throughput = the "
        "highest rate whose p99 stays within 10 ms with no errors.",
        "",
        "| server | entities/request | max rps at p99 <= 10 ms | max rps sustained "
        "| p50 / p99 at 100 rps (ms) | p50 / p99 at 300 rps (ms) | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_size in result["servers"].items():
        for size, s in per_size.items():
            cells = []
            for rate in ("100", "300"):
                f = s["fixed_rates"].get(rate)
                cells.append(f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f}" if f else "-")
            lines.append(f"| {name} | {size} | {s['max_rps_p99_10ms']} | "
                         f"{s['max_rps_sustained']} | {cells[0]} | "
                         f"{cells[1]} | {s['errors']} |")  # fmt: skip
    lines += ["", "| storage floor: raw redis-py pipelined HMGET | ops/s | p50 ms | p99 ms |",
              "| --- | --- | --- | --- |"]  # fmt: skip
    for size, r in result["raw_redis"].items():
        lines.append(f"| {size} entities | {r['ops_per_s']:.0f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} |")  # fmt: skip
    lines += ["", "## Targets", ""]
    for target in result["targets"]:
        lines.append(f"- {'met' if target['met'] else 'NOT met'}: {target['what']} "
                     f"({target['value']})")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, percentile in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for name, per_size in result["servers"].items():
            steps = per_size.get("1", {}).get("steps", [])
            ax.plot([s["rps"] for s in steps], [s[percentile] for s in steps], marker="o",
                    label=name)  # fmt: skip
        ax.axhline(10, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s), 1 entity x the feature service")
        ax.set_ylabel(f"{percentile[:3]} latency (ms)")
        ax.set_title(f"{percentile[:3]} latency against request rate")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    servers = result["servers"]
    ours, default, tuned = (
        servers[name]["1"] for name in ("platform", "feast serve (defaults)", "feast serve (tuned)")
    )
    p99_1 = ours["fixed_rates"].get("100", {}).get("p99_ms")
    p99_100 = servers["platform"]["100"]["fixed_rates"].get("100", {}).get("p99_ms")
    errors = sum(s["errors"] for s in servers["platform"].values())
    out = []
    for key, label in (("max_rps_p99_10ms", "at p99 <= 10 ms"), ("max_rps_sustained", "sustained")):
        for base, factor, name in ((default, 3, "stock defaults"), (tuned, 1.5, "stock tuned")):
            a, b = ours[key], base[key]
            ratio = f" = {a / b:.1f}x" if b else " (stock never got there)"
            out.append({
                "what": f">= {factor}x {name}, 1 entity, throughput {label}",
                "met": a >= factor * b and a > 0,
                "value": f"{a} vs {b} rps{ratio}",
            })  # fmt: skip
    out.append({
        "what": "100-entity p99 <= 5x 1-entity p99 at 100 rps",
        "met": bool(p99_1 and p99_100 and p99_100 <= 5 * p99_1),
        "value": f"{p99_100:.2f} vs {p99_1:.2f} ms" if p99_1 and p99_100 else "n/a",
    })  # fmt: skip
    out.append({"what": "zero errors on the platform server", "met": errors == 0,
                "value": f"{errors} errors"})  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=4.0)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        say("needs 2 CPUs: one for the server, one for the load generator")
        return 2
    settings = prepare_data()
    os.sched_setaffinity(0, LOADGEN_CPUS)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "step_seconds": args.step_seconds,
        "servers": {},
        "raw_redis": {},
    }  # fmt: skip
    sizes = bodies()
    servers = {
        "feast serve (defaults)": lambda: FeatureServer(ENV, stock=True, cpus=SERVER_CPUS),
        "feast serve (tuned)": lambda: FeatureServer(ENV, stock=True, max_requests=0,
                                                     cpus=SERVER_CPUS),
        "platform": lambda: FeatureServer(ENV, cpus=SERVER_CPUS),
    }  # fmt: skip
    log = (RESULTS / "servers.log").open("wb")
    for name, make in servers.items():
        server = make()
        server.log = log
        with server:
            result["servers"][name] = {}
            for size, body in sizes.items():
                say(f"{name}, {size} entities")
                url = f"{server.url}/get-online-features"
                result["servers"][name][str(size)] = summarize(sweep(url, body, args.step_seconds))
    with NoopServer() as noop:
        result["servers"]["no-op ASGI (HTTP floor)"] = {}
        say("no-op ASGI app")
        result["servers"]["no-op ASGI (HTTP floor)"]["1"] = summarize(
            sweep(noop.url + "/get-online-features", sizes[1], args.step_seconds)
        )
    for size, body in sizes.items():
        say(f"raw redis-py, {size} entities")
        result["raw_redis"][str(size)] = raw_redis(settings, body)
    result["targets"] = targets(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench.md").write_text(markdown(result))
    plot(result, RESULTS / "bench.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
