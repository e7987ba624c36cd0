"""`make bench` (Ray): what one Ray task of `training-set --engine ray` costs against the
same join in process, on the same labels.

One generated data set (as `bench_training.py`: 100 k customers, 2 000 merchants, 30
days), written as the local environment's parquet files, applied with `local`. For each
label count (200 k: the command's default chunk, one task's share; 1 M), each round is a
child process of its own that, on the same labels, one chunk holding them all:

1. `fast, in process`: the fast engine's join as the command runs it (`engine.Stage`,
   its default threads: labels staged, each view's rows read and reduced, the ASOF joins
   and the on-demand transformations): the baseline;
2. `join_chunk, in process`: the Ray task's own function called in the process, no Ray,
   with the threads the task gets (`ray_engine.cpus_per_task`: here every core);
3. `ray start`: Ray started in the process (`ray_engine.start`);
4. `ray task, fresh worker`: the first task of that Ray (`ray_engine.chunks`, one chunk):
   its worker process starts and imports the platform and Feast, as every worker does
   once per run;
5. `ray task, warm worker`: the next task, on that worker;
6. the warm task again, timed inside the worker too: the rest is shipping the plan, the
   labels and the result through Ray's object store.

Every Ray result is checked equal to the in-process one. Rounds alternate the label
counts. Each round's figures are divided by its own `fast, in process` time (the machine
is shared: the steps of one round run within seconds of each other); the table gives
the median and spread of those ratios. Feature expectations are
screened by neither side here (the command's fast path also screens them).
Results: loadtests/results/bench_ray.{json,md}. `--quick` runs a tenth of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).resolve().parent.parent / ".data" / "bench_ray"
ENV = "local"
FULL = ((100_000, 2_000, 30, 1_000_000), [200_000, 1_000_000])
QUICK = ((10_000, 200, 30, 100_000), [20_000, 100_000])
STEPS = [
    "fast, in process",
    "join_chunk, in process",
    "ray start",
    "ray task, fresh worker",
    "ray task, warm worker",
    "ray task, warm worker: inside the worker",
]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(sizes: tuple[int, int, int, int], counts: list[int]) -> dict[int, Path]:
    """The data set as parquet, applied with `local`; a labels file per count."""
    from feature_platform.config import environments, feast_commands
    from feature_platform.devtools import generator
    from feature_platform.offline import tables as offline_tables

    say(f"generating {sizes}")
    tables = generator.generate(generator.Sizes(*sizes), seed=7)
    offline_tables.write(environments.settings(ENV), tables, progress=say)
    feast_commands.run(ENV, ["apply"])
    transactions = tables["transactions"]
    paths = {}
    for n in counts:
        # A random sample of the transactions: labels spread over the whole period.
        sample = transactions.sample(min(n, len(transactions)), random_state=7).sort_index()
        paths[n] = WORK / f"labels-{n}.parquet"
        sample.to_parquet(paths[n], index=False, coerce_timestamps="us")
    return paths


def one_round(labels_path: Path) -> dict[str, float]:
    """Steps 1 to 6 on one labels file, in this process; seconds per step."""
    from feature_platform.feast_seam import patches

    patches.import_feast_unchecked()  # as the command imports Feast
    import pyarrow.parquet as pq
    import ray

    from feature_platform.config import environments, feast_commands
    from feature_platform.training import engine, ray_engine
    from feature_platform.training.feast_join import FEATURE_SERVICE

    settings = environments.settings(ENV)
    store = feast_commands.open_store(ENV)
    plan = engine.plan(store, store.get_feature_service(FEATURE_SERVICE))
    files = [f for f in engine.view_files(store, plan, settings, lambda _: None) if f]
    labels = pq.read_table(labels_path)
    n = labels.num_rows
    seconds: dict[str, float] = {}

    def timed(step: str, run: Any) -> Any:
        started = time.monotonic()
        result = run()
        seconds[step] = time.monotonic() - started
        return result

    def fast() -> Any:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            stage = engine.Stage(Path(tmp))
            try:
                stage.add_labels(iter(labels.to_batches()), plan, lambda _: None)
                for i, view in enumerate(plan.views):
                    stage.add_view(i, view, files[i], lambda _: None)
                return stage.join(plan, 0, n)
            finally:
                stage.close()

    def on_ray() -> Any:
        (table,) = ray_engine.chunks(settings, plan, files, lambda a, b: labels[a:b], n, n)
        return table

    expected = timed(STEPS[0], fast)
    cpus = os.cpu_count() or 1  # local Ray's CPUs, all for one task
    in_process = timed(STEPS[1], lambda: ray_engine.join_chunk(plan, labels, files, cpus))
    timed(STEPS[2], lambda: ray_engine.start(settings))
    assert ray_engine.cpus_per_task(ray.nodes(), 1) == cpus
    results = [timed(STEPS[3], on_ray), timed(STEPS[4], on_ray)]

    @ray.remote(num_cpus=cpus)
    def inside(*args: Any) -> tuple[Any, float]:
        started = time.monotonic()
        return ray_engine.join_chunk(*args), time.monotonic() - started

    table, seconds[STEPS[5]] = ray.get(inside.remote(ray.put(plan), labels, files, cpus))
    ray.shutdown()
    for got in (in_process, *results, table):
        if not got.equals(expected):
            raise SystemExit("a Ray result differs from the in-process join")
    return seconds


def measure(paths: dict[int, Path], rounds: int) -> list[dict[str, Any]]:
    times: dict[int, list[dict[str, float]]] = {n: [] for n in paths}
    for r in range(rounds):
        for n, path in paths.items():
            say(f"{n:,} labels, round {r + 1}")
            out = subprocess.run(
                [sys.executable, __file__, "--round", str(path)],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            times[n].append(json.loads(out.splitlines()[-1]))
            say("  " + ", ".join(f"{k} {v:.2f}s" for k, v in times[n][-1].items()))
    rows = []
    for n, measured in times.items():
        for step in STEPS:
            values = [m[step] for m in measured]
            # each round's ratio to its own in-process figure: the machine is shared
            ratios = [m[step] / m[STEPS[0]] for m in measured]
            rows.append(
                {
                    "step": step,
                    "labels": n,
                    "rounds": len(values),
                    **spread("seconds", values),
                    **spread("to_fast", ratios),
                }
            )
    return rows


def spread(name: str, values: list[float]) -> dict[str, float]:
    return {
        f"{name}_median": statistics.median(values),
        f"{name}_min": min(values),
        f"{name}_max": max(values),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        "# One Ray task against the same join in process",
        "",
        f"{result['machine']}, {result['when']}, data: {result['sizes']}, "
        "one chunk holding every label",
        "",
        "| step | labels | seconds (median) | spread (min-max) | / fast in process (spread) "
        "| rounds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['step']} | {r['labels']:,} | {r['seconds_median']:.2f} | "
            f"{r['seconds_min']:.2f}-{r['seconds_max']:.2f} | {r['to_fast_median']:.2f}x "
            f"({r['to_fast_min']:.2f}-{r['to_fast_max']:.2f}) | {r['rounds']} |"
        )
    lines += ["", *crossover(result["rows"])]
    return "\n".join(lines) + "\n"


def crossover(rows: list[dict[str, Any]]) -> list[str]:
    """From these figures, when Ray pays: in process, L labels cost P(L) = a + b L (the
    line through the two `fast, in process` medians, extended past them); on N nodes
    like this one, in chunks of c labels (a measured count), the Ray start and a fresh
    worker's extra once, then ceil(L / (c N)) warm tasks of c labels one after another
    on each node. The driver's reading of the labels and writing of the output is the
    same on both sides and left out."""
    median = {(r["step"], r["labels"]): r["seconds_median"] for r in rows}
    lo, hi = sorted({r["labels"] for r in rows})
    b = (median[STEPS[0], hi] - median[STEPS[0], lo]) / (hi - lo)
    a = median[STEPS[0], lo] - b * lo
    fixed = median[STEPS[2], lo] + median[STEPS[3], lo] - median[STEPS[4], lo]
    out = [
        f"- in process: {a:.2f} s + {b * 1e6:.2f} s per million labels; once per Ray run: "
        f"its start and a fresh worker's extra, {fixed:.2f} s; a warm task: "
        + ", ".join(f"{median[STEPS[4], c]:.2f} s for {c:,} labels" for c in (lo, hi))
    ]
    for labels in (hi, 10 * hi, 100 * hi):
        in_process = a + b * labels
        found = []
        for chunk in (lo, hi):
            ray = [
                (n, fixed + -(-labels // (chunk * n)) * median[STEPS[4], chunk])
                for n in range(1, 257)
            ]
            pays = [(n, t) for n, t in ray if t < in_process]
            found.append(
                f"chunks of {chunk:,}: from {pays[0][0]} nodes ({pays[0][1]:.1f} s)"
                if pays
                else f"chunks of {chunk:,}: on no cluster (at best {min(t for _, t in ray):.1f} s)"
            )
        out.append(
            f"- {labels:,} labels, in process {in_process:.1f} s; Ray pays with "
            + "; with ".join(found)
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data and labels")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per label count")
    parser.add_argument("--round", type=Path, help=argparse.SUPPRESS)  # one child round
    args = parser.parse_args()
    # The benchmark's own local environment: nothing else reads this directory.
    os.environ["PLATFORM_DATA_DIR"] = str(WORK / "local")
    os.environ.setdefault("POSTGRES_PASSWORD", "")
    os.environ.setdefault("REDIS_PASSWORD", "")
    if args.round:
        print(json.dumps(one_round(args.round)))
        return 0
    sizes, counts = QUICK if args.quick else FULL
    rounds = args.rounds or (2 if args.quick else 3)
    WORK.mkdir(parents=True, exist_ok=True)
    paths = prepare(sizes, counts)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": "customers={}, merchants={}, days={}, transactions={}".format(*sizes),
        "rows": measure(paths, rounds),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_ray.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = report(result)
    (RESULTS / "bench_ray.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
