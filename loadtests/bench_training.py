"""`make bench` (training sets): label rows per second and peak memory, end to end.

One generated data set (100 k customers, 2 000 merchants, 30 days: about 2.8 M
customer_stats rows), written to dev's Postgres and, for the floor, to parquet. Then, for
each label count, in the same run, each as its own child process (its peak resident
memory read with `os.wait4`):

- `feature-platform training-set dev` (the fast engine), labels parquet in, parquet out:
  with the offline mirror copied whole in the run (its first run, or after an update or
  delete, when no materialization job ran since), after an update when the
  materialization job ran in between (`feature-platform materialize dev`, untimed: it
  copies the tables whole; its own time is reported), with the mirror current (the
  steady state), with the mirror after a day of new rows (its delta), and without a
  mirror (rows read out of Postgres with COPY every run);
- the same join on Ray (`--engine ray`, Ray started in the process, two tasks);
- the same command with `--engine feast`: Feast's Postgres store, chunk by chunk; at the
  smallest count only unless --feast-everywhere (it runs at about 10 k rows/s, so 1 M
  labels would take minutes);
- a raw DuckDB ASOF join of the labels with the same rows from parquet, in memory, on
  event time only (no creation-time rule, no ttl): the floor.

Also timed: writing the data set to Postgres (COPY) against writing it to parquet.
Results: loadtests/results/bench_training.{json,md,png}. `--quick` runs a tenth of it.
`--engine NAME` (repeatable) and `--labels N` (repeatable) run only those measurements,
e.g. `--engine "fast, mirror copied whole" --labels 1000000`: a few minutes; such a
partial run writes its results under .data/bench_training/, not loadtests/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

from feature_platform.config import environments, feast_commands
from feature_platform.devtools import generator
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import tables as offline_tables

RESULTS = Path(__file__).parent / "results"
WORK = environments.PROJECT_ROOT / ".data" / "bench_training"
ENV = "dev"
# The benchmark's own databases: nothing else uses them.
BENCH_SETTINGS = {
    "REGISTRY_DB": "feast_bench_training_registry",
    "OFFLINE_DB": "feast_bench_training_offline",
    "REDIS_DB": "15",
    "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
}
FULL = (generator.Sizes(100_000, 2_000, 30, 1_000_000), [100_000, 1_000_000])
QUICK = (generator.Sizes(10_000, 200, 30, 100_000), [10_000, 100_000])
PLATFORM = Path(sys.executable).parent / "feature-platform"
# The measurements, in the order they run.
RUNS = (
    "fast, mirror copied whole",
    "fast, after an update, materialize ran",
    "fast, mirror current",
    "fast, mirror after a day of new rows",
    "fast, no mirror (COPY)",
    "ray (local, 2 tasks)",
    "feast",
    "raw_duckdb_asof",
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Runs the measured process and reports its peak resident memory. Linux counts a forked
# child's memory from before its exec: forked straight from this process (which holds
# the data set) every child would report at least this process's size. This launcher
# is small when it forks.
LAUNCH = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(f"peak_kib={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child(argv: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run one measured process: its wall time, peak resident memory and, for the
    command, its own time after the imports (its last line: "wrote N rows ... in Xs")."""
    started = time.monotonic()
    mark = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        code = subprocess.run(
            [sys.executable, "-c", LAUNCH, *argv], env=env, stdout=out, stderr=out, check=False
        ).returncode
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed; see {log}")
    with log.open("rb") as out:
        out.seek(mark)
        text = out.read()
    wrote = re.findall(rb"wrote [\d,]+ rows to .* in ([\d.]+)s", text)
    (peak,) = re.findall(rb"peak_kib=(\d+)", text)
    command = float(wrote[-1]) if wrote else seconds
    return {"seconds": seconds, "command_seconds": command, "peak_mib": int(peak) / 1024}


RAW_ASOF = """
import sys, duckdb
labels, offline, output = sys.argv[1:]
con = duckdb.connect()
con.execute("SET threads = 2")
for t in ("customer_stats", "merchant_stats", "customer_txn_1h"):
    con.execute(f"CREATE TABLE {t} AS SELECT * FROM read_parquet('{offline}/{t}.parquet')")
con.execute(f'''COPY (
  SELECT l.*, c.avg_purchase_30d, c.n_purchases_7d, c.n_purchases_30d, c.account_age_days,
         c.home_country, m.avg_rating, m.n_disputes_30d, m.n_sales_30d, m.category,
         h.n_txn_1h, h.sum_amount_1h
  FROM read_parquet('{labels}') l
  ASOF LEFT JOIN customer_stats c
    ON l.customer_id = c.customer_id AND l.event_timestamp >= c.event_timestamp
  ASOF LEFT JOIN merchant_stats m
    ON l.merchant_id = m.merchant_id AND l.event_timestamp >= m.event_timestamp
  ASOF LEFT JOIN customer_txn_1h h
    ON l.customer_id = h.customer_id AND l.event_timestamp >= h.event_timestamp
) TO '{output}' (FORMAT parquet)''')
"""


def prepare(sizes: generator.Sizes, settings: dict[str, str]) -> dict[str, Any]:
    """Generate, write to Postgres and to parquet (both timed), apply."""
    say(f"generating {sizes}")
    tables = generator.generate(sizes, seed=7)
    offline_tables.ensure_databases(settings, say)
    timings = {}
    local = {**settings, "OFFLINE_SOURCE": "file", "PLATFORM_DATA_DIR": str(WORK / "local")}
    for kind, target in (("parquet", local), ("postgres", settings)):
        started = time.monotonic()
        offline_tables.write(target, tables, progress=say)
        timings[kind] = time.monotonic() - started
        say(f"  wrote the data set to {kind} in {timings[kind]:.1f}s")
    labels = tables["transactions"]
    del tables
    os.environ.update(BENCH_SETTINGS)
    feast_commands.run(ENV, ["apply"])
    return {
        "write_seconds": timings,
        "labels": labels,
        "offline_dir": str(offline_tables.parquet_path(local, "x").parent),
        "customers": sizes.customers,
    }


def append(settings: dict[str, str], n: int) -> None:
    """`n` new customer_stats rows, a month after the data set's: what the pipelines add
    between two training sets. They reach the mirror as its delta."""
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO customer_stats SELECT customer_id, event_timestamp + interval '31 days', "
            "created_timestamp + interval '31 days', avg_purchase_30d, n_purchases_7d, "
            "n_purchases_30d, account_age_days, home_country FROM customer_stats LIMIT %s",
            (n,),
        )


def update_every_table(settings: dict[str, str]) -> None:
    """One row of each feature table rewritten as it was: the mirror must copy the
    tables whole again, as after any update or delete."""
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    with psycopg.connect(conninfo) as conn:
        for table in ("customer_stats", "merchant_stats", "customer_txn_1h"):
            conn.execute(
                f"UPDATE {table} SET event_timestamp = event_timestamp "
                f"WHERE ctid = (SELECT ctid FROM {table} LIMIT 1)"
            )


def measure(
    counts: list[int],
    data: dict[str, Any],
    rounds: int,
    feast_everywhere: bool,
    engines: tuple[str, ...] = RUNS,
) -> list[dict[str, Any]]:
    env = {**os.environ, **BENCH_SETTINGS}
    settings = {**environments.settings(ENV), **BENCH_SETTINGS}
    mirror = Path(settings[offline_mirror.DIR_VAR]) / settings["OFFLINE_DB"]
    day = data["customers"]  # one snapshot per customer a day
    log = WORK / "bench_training.log"
    rows = []
    # Python and Feast's imports alone, as the command makes them, on this machine now:
    # part of every fast and feast figure below, most of it at small label counts.
    imports = (
        "from feature_platform.feast_seam import patches; patches.import_feast_unchecked(); "
        "import feature_platform.training.command"
    )
    startup = child([sys.executable, "-c", imports], env, log)
    say(f"startup (imports): {startup['seconds']:.1f}s")
    rows.append({"engine": "startup_imports", "seconds": startup["seconds"]})
    materialize_seconds: list[float] = []

    def update_then_materialize() -> None:
        update_every_table(settings)
        materialize_seconds.append(child([str(PLATFORM), "materialize", ENV], env, log)["seconds"])
        say(f"  materialize (copies the mirror whole): {materialize_seconds[-1]:.1f}s")

    # The first job loads Redis whole: untimed, so the timed ones do what every later one does.
    child([str(PLATFORM), "materialize", ENV], env, log)
    for n in counts:
        labels_path = WORK / f"labels-{n}.parquet"
        # A random sample of the transactions: labels spread over the whole period.
        sample = data["labels"]
        if n < len(sample):
            sample = sample.sample(n, random_state=7).sort_index()
        sample.to_parquet(labels_path, index=False, coerce_timestamps="us")
        output = WORK / f"out-{n}.parquet"
        command = [
            str(PLATFORM),
            "training-set",
            ENV,
            "--labels",
            str(labels_path),
            "--output",
            str(output),
        ]
        no_mirror = {offline_mirror.DIR_VAR: ""}
        # name: (argv, settings, what happens before each round)
        runs: dict[str, tuple[list[str], dict[str, str], Callable[[], object]]] = {
            "fast, mirror copied whole": (command, {}, lambda: shutil.rmtree(mirror, True)),
            "fast, after an update, materialize ran": (command, {}, update_then_materialize),
            "fast, mirror current": (command, {}, lambda: None),
            "fast, mirror after a day of new rows": (command, {}, lambda: append(settings, day)),
            "fast, no mirror (COPY)": (command, no_mirror, lambda: None),
            "ray (local, 2 tasks)": ([*command, "--engine", "ray"], {}, lambda: None),
            "feast": ([*command, "--engine", "feast", "--chunk-rows", "100000"], no_mirror,
                      lambda: None),
            "raw_duckdb_asof": ([sys.executable, "-c", RAW_ASOF, str(labels_path),
                                 data["offline_dir"], str(output)], {}, lambda: None),
        }  # fmt: skip
        assert tuple(runs) == RUNS
        for name, (argv, extra, before) in runs.items():
            if name not in engines:
                continue
            if name == "feast" and n != counts[0] and not feast_everywhere:
                continue
            times, inner, peaks = [], [], []
            for r in range(1 if name == "feast" else rounds):
                say(f"{name}: {n:,} labels, round {r + 1}")
                before()
                result = child(argv, {**env, **extra}, log)
                assert pq.read_metadata(output).num_rows == n, f"{name} wrote the wrong rows"
                times.append(result["seconds"])
                inner.append(result["command_seconds"])
                peaks.append(result["peak_mib"])
                say(f"  {n / result['seconds']:,.0f} rows/s, peak {result['peak_mib']:,.0f} MiB")
            rates = [n / t for t in times]
            rows.append(
                {
                    "engine": name,
                    "labels": n,
                    "rounds": len(times),
                    "rows_per_s_median": statistics.median(rates),
                    "rows_per_s_min": min(rates),
                    "rows_per_s_max": max(rates),
                    # the same runs, without Python's and Feast's imports
                    "rows_per_s_after_imports_median": statistics.median(n / t for t in inner),
                    "peak_mib_max": max(peaks),
                }
            )
    if not materialize_seconds:
        return rows
    rows.append(
        {
            "engine": "materialize_with_whole_copy",
            "rounds": len(materialize_seconds),
            "seconds_median": statistics.median(materialize_seconds),
            "seconds_min": min(materialize_seconds),
            "seconds_max": max(materialize_seconds),
        }
    )
    return rows


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Training-set throughput",
        "",
        f"{result['machine']}, {result['when']}, data: {result['sizes']}"
        + (
            ", load average at the end {:.2f} {:.2f} {:.2f}".format(*result["load_average"])
            if "load_average" in result
            else ""
        ),
        "",
        "| engine | labels | rows/s (median) | spread (min-max) | rows/s after imports "
        "| rounds | peak MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        if "labels" not in r:
            continue
        lines.append(
            f"| {r['engine']} | {r['labels']:,} | {r['rows_per_s_median']:,.0f} | "
            f"{r['rows_per_s_min']:,.0f}-{r['rows_per_s_max']:,.0f} | "
            f"{r['rows_per_s_after_imports_median']:,.0f} | {r['rounds']} | "
            f"{r['peak_mib_max']:,.0f} |"
        )
    by = {
        (r["engine"], r["labels"]): r["rows_per_s_median"] for r in result["rows"] if "labels" in r
    }
    lines.append("")
    for r in result["rows"]:
        if r["engine"] == "startup_imports":
            lines.append(f"- Python and Feast imports in each run: {r['seconds']:.1f}s")
        if r["engine"] == "materialize_with_whole_copy":
            lines.append(
                f"- the materialization job that copied the mirror whole: "
                f"{r['seconds_median']:.1f}s ({r['seconds_min']:.1f}-{r['seconds_max']:.1f}s, "
                f"{r['rounds']} runs)"
            )
    fast = "fast, mirror current"
    largest = max((n for _, n in by), default=0)

    def ratio(a: str, b: str, n: int, digits: int = 2) -> None:
        # a partial run (--engine) has only some of them
        if (a, n) in by and (b, n) in by:
            lines.append(f"- {n:,} labels: {a} / {b} = {by[a, n] / by[b, n]:.{digits}f}x")

    for first in ("fast, mirror copied whole", "fast, after an update, materialize ran"):
        ratio(first, fast, largest)
    ratio("fast, mirror copied whole", "fast, no mirror (COPY)", largest)
    for n in sorted({n for _, n in by}):
        ratio(fast, "feast", n, 1)
        ratio(fast, "raw_duckdb_asof", n)
    w = result["write_seconds"]
    lines.append(
        f"- writing the data set: Postgres {w['postgres']:.1f}s, parquet {w['parquet']:.1f}s"
    )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    measured = [r for r in result["rows"] if "labels" in r]
    for engine in dict.fromkeys(r["engine"] for r in measured):
        points = [r for r in measured if r["engine"] == engine]
        ax.errorbar(
            [p["labels"] for p in points],
            [p["rows_per_s_median"] for p in points],
            yerr=[
                [p["rows_per_s_median"] - p["rows_per_s_min"] for p in points],
                [p["rows_per_s_max"] - p["rows_per_s_median"] for p in points],
            ],
            marker="o",
            capsize=3,
            label=engine,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("label rows")
    ax.set_ylabel("rows/s, end to end")
    ax.set_title("Training sets from dev's Postgres")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data and labels")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per measurement")
    parser.add_argument(
        "--feast-everywhere", action="store_true", help="Feast's store at every label count"
    )
    parser.add_argument(
        "--engine",
        action="append",
        choices=RUNS,
        metavar="NAME",
        help=f"run only this measurement (repeatable); one of: {'; '.join(RUNS)}",
    )
    parser.add_argument(
        "--labels",
        action="append",
        type=int,
        metavar="N",
        help="run only this label count (repeatable; default: 100000 and 1000000, "
        "--quick: 10000 and 100000)",
    )
    args = parser.parse_args()
    sizes, counts = QUICK if args.quick else FULL
    counts = sorted(args.labels) if args.labels else counts
    engines = tuple(args.engine) if args.engine else RUNS
    # Only a run of everything replaces the committed results.
    partial = engines != RUNS or counts != (QUICK if args.quick else FULL)[1]
    results = WORK / "partial" if partial else RESULTS
    rounds = args.rounds or (2 if args.quick else 3)
    WORK.mkdir(parents=True, exist_ok=True)
    settings = {**environments.settings(ENV), **BENCH_SETTINGS}
    data = prepare(sizes, settings)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": str(sizes),
        "write_seconds": data["write_seconds"],
        "rows": measure(counts, data, rounds, args.feast_everywhere, engines),
        "load_average": os.getloadavg(),
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_training.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = report(result)
    (results / "bench_training.md").write_text(markdown)
    plot(result, results / "bench_training.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
