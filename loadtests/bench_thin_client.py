"""`make bench` (thin client): a notebook's training set through the offline server against
the `training-set` command, on the same labels, in the same run.

One generated data set (as bench_training's: 100 k customers, 2 000 merchants, 30 days,
about 2.8 M customer_stats rows) in dev's Postgres, its own databases. For each label
count, rounds interleaved so drift hits every path alike:

- the command (`feature-platform training-set dev`, fast engine, mirror current): its own
  time after the imports, from its last line ("wrote N rows ... in Xs");
- a thin client (Feast's SDK with only the client file: registry server, offline server)
  timing `get_historical_features(...).to_df()` in a warm process, against
  - the offline server without a mirror (COPY scoped to the labels' entities),
  - the offline server sharing the command's mirror directory,
  - at the smallest count, Feast's join behind the same server (the path before the
    platform's engine answered), one round;

then, in a second set of rounds, the offline server as the chart runs it, with a mirror
of its own (started fresh for each label count: its whole copy made before it listens,
then one untimed request, so the state measured is the one after the first request),
interleaved with the command again, now while the server's mirror exists beside the
command's. Each mirror path reports how many of its timed refreshes copied a table whole
(0: both mirrors stayed incremental); the ratios of this second set are to the command of
the same set.

Results: loadtests/results/bench_thin_client.{json,md}; the ratio of each thin-client path
to the command against the target, 1.5x. `--quick` runs a tenth of the data, and 2 000
and 10 000 labels.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore

from feature_platform.config import client as client_config
from feature_platform.config import environments, feast_commands
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import PlatformServer, flight_answers, free_port
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import tables as offline_tables
from feature_platform.training import FEATURE_SERVICE

RESULTS = Path(__file__).parent / "results"
WORK = environments.PROJECT_ROOT / ".data" / "bench_thin_client"
ENV = "dev"
TARGET = 1.5
# The benchmark's own databases and mirror: nothing else uses them.
BENCH_SETTINGS = {
    "REGISTRY_DB": "feast_bench_thin_registry",
    "OFFLINE_DB": "feast_bench_thin_offline",
    "REDIS_DB": "14",
    "OFFLINE_MIRROR_DIR": str(WORK / "mirror"),
    "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
}
FULL = (generator.Sizes(100_000, 2_000, 30, 1_000_000), [2_000, 100_000])
QUICK = (generator.Sizes(10_000, 200, 30, 100_000), [2_000, 10_000])
PLATFORM = Path(sys.executable).parent / "feature-platform"
COMMAND = "training-set command (mirror current)"
THIN_COPY = "thin client, server without mirror (COPY)"
THIN_MIRROR = "thin client, server sharing the mirror"
THIN_FEAST = "thin client, server running Feast's join"
COMMAND_BESIDE = "training-set command, the server's own mirror kept too"
THIN_OWN = "thin client, server with its own mirror"
OWN_MIRROR = WORK / "server-mirror"

# The offline server as it answered before the platform's engine: Feast's join always.
FEAST_SERVER = """
import sys
from feature_platform.config import feast_commands
from feature_platform.console import say
from feature_platform.servers import offline
offline.serve(feast_commands.open_store(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), say)
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def prepare(sizes: generator.Sizes) -> pd.DataFrame:
    """Generate, write to Postgres, apply; the transactions, labels to sample."""
    say(f"generating {sizes}")
    tables = generator.generate(sizes, seed=7)
    os.environ.update(BENCH_SETTINGS)
    settings = environments.settings(ENV)
    offline_tables.ensure_databases(settings, say)
    offline_tables.write(settings, tables, progress=say)
    feast_commands.run(ENV, ["apply"])
    labels: pd.DataFrame = tables["transactions"]
    return labels


class FeastJoinServer:
    """The offline server without the platform's engine, a process of its own."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [sys.executable, "-c", FEAST_SERVER, ENV, str(self.port)]
        out = log.open("ab")
        self.process = subprocess.Popen(
            argv, env=feast_commands.prepare(ENV), stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while not flight_answers(self.address, timeout_s=1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()  # one still starting would hold its port past the bench
                raise SystemExit(f"Feast's join server did not start; see {log}")
            time.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def thin_client(registry: str, offline: str, name: str) -> FeatureStore:
    """Feast's SDK with only the client file, as a notebook has it."""
    directory = WORK / f"client-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    config = client_config.for_environment(ENV, registry=registry, offline=offline)
    (directory / "feature_store.yaml").write_text(config.render())
    return FeatureStore(repo_path=str(directory))


def run_command(labels_path: Path, output: Path, log: Path) -> tuple[float, int]:
    """The command's own time after its imports, from its last line; how many tables its
    mirror copied whole."""
    argv = [str(PLATFORM), "training-set", ENV, "--labels", str(labels_path), "--output",
            str(output)]  # fmt: skip
    with log.open("ab") as out:
        done = subprocess.run(argv, env=feast_commands.prepare(ENV), stdout=out,
                              stderr=subprocess.PIPE, check=False)  # fmt: skip
        out.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the command failed; see {log}")
    (seconds,) = re.findall(rb"wrote [\d,]+ rows to .* in ([\d.]+)s", done.stderr)
    return float(seconds), len(re.findall(rb"mirror .*: copied whole", done.stderr))


def whole_copies(root: Path) -> dict[str, str]:
    """Table -> the whole copy its mirror's manifest names (a new one at each whole copy)."""
    return {
        str(m.parent): json.loads(m.read_text()).get("copy", "")
        for m in root.glob("*/*/manifest.json")
    }


def run_thin(store: FeatureStore, labels: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    started = time.monotonic()
    frame = store.get_historical_features(
        entity_df=labels, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    return time.monotonic() - started, frame


def same_rows(thin: pd.DataFrame, labels: pd.DataFrame, command_output: Path) -> bool:
    """The thin client's features are the command's, value for value, label by label."""
    built = pq.read_table(command_output).to_pandas()
    features = [c for c in built.columns if c not in labels.columns]
    ordered = [frame.sort_values("transaction_id", ignore_index=True)[features]
               for frame in (thin, built)]  # fmt: skip
    try:
        pd.testing.assert_frame_equal(*ordered, check_dtype=False, check_exact=True)
    except AssertionError:
        return False
    return True


def measure(
    labels_all: pd.DataFrame,
    n: int,
    rounds: int,
    stores: dict[str, FeatureStore],
    first: bool,
    own_server: Callable[[], FeatureStore],
) -> list[dict[str, Any]]:
    """Every path at `n` labels, rounds interleaved, in two sets (see the module's text)."""
    log = WORK / "bench_thin_client.log"
    labels = labels_all.sample(n, random_state=7).sort_index().reset_index(drop=True)
    labels_path = WORK / f"labels-{n}.parquet"
    labels.to_parquet(labels_path, index=False, coerce_timestamps="us")
    output = WORK / f"out-{n}.parquet"
    run_command(labels_path, output, log)  # the mirror brought up to date first
    sets = [[COMMAND, THIN_COPY, THIN_MIRROR] + ([THIN_FEAST] if first else []),
            [COMMAND_BESIDE, THIN_OWN]]  # fmt: skip
    mirrors = {THIN_MIRROR: WORK / "mirror", THIN_OWN: OWN_MIRROR}
    rows = []
    for paths in sets:
        if THIN_OWN in paths:
            stores[THIN_OWN] = own_server()
            run_thin(stores[THIN_OWN], labels)  # the state after the first request
        times: dict[str, list[float]] = {name: [] for name in paths}
        whole: dict[str, int] = dict.fromkeys(paths, 0)
        checked: dict[str, bool] = {}
        for r in range(rounds):
            for name in paths:
                if name == THIN_FEAST and r > 0:
                    continue  # minutes at larger counts; one round shows the gap
                if name in (COMMAND, COMMAND_BESIDE):
                    seconds, copied = run_command(labels_path, output, log)
                    whole[name] += copied
                else:
                    before = whole_copies(mirrors[name]) if name in mirrors else {}
                    seconds, frame = run_thin(stores[name], labels)
                    checked.setdefault(name, same_rows(frame, labels, output))
                    if name in mirrors:
                        after = whole_copies(mirrors[name])
                        whole[name] += sum(after[t] != before.get(t) for t in after)
                times[name].append(seconds)
                say(f"{n:,} labels, round {r + 1}, {name}: {seconds:.2f}s")
        base = statistics.median(times[paths[0]])
        for name, seconds_list in times.items():
            median = statistics.median(seconds_list)
            rows.append({
                "path": name, "labels": n, "rounds": len(seconds_list),
                "seconds_median": median, "seconds_min": min(seconds_list),
                "seconds_max": max(seconds_list), "ratio_to_command": median / base,
                "same_rows_as_command": checked.get(name, True),
                "whole_copies": whole[name] if name in (*mirrors, COMMAND, COMMAND_BESIDE)
                else None,
            })  # fmt: skip
    return rows


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Thin-client training sets against the training-set command",
        "",
        f"{result['machine']}, {result['when']}, data: {result['sizes']}",
        "",
        "| path | labels | seconds (median) | spread (min-max) | / command | rounds | same rows "
        "| whole copies |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['path']} | {r['labels']:,} | {r['seconds_median']:.2f} | "
            f"{r['seconds_min']:.2f}-{r['seconds_max']:.2f} | {r['ratio_to_command']:.2f}x | "
            f"{r['rounds']} | {'yes' if r['same_rows_as_command'] else 'NO'} | "
            f"{'-' if r.get('whole_copies') is None else r['whole_copies']} |"
        )
    lines += [
        "",
        f"Load average (1, 5, 15 min) at the start: {result['load_start']}, at the end: "
        f"{result['load_end']}. Whole copies: timed refreshes that copied a table whole "
        "(the first copies are made before the timed rounds).",
        "",
    ]
    for r in result["rows"]:
        if r["path"] in (THIN_COPY, THIN_MIRROR, THIN_OWN):
            verdict = "within" if r["ratio_to_command"] <= TARGET else "over"
            lines.append(
                f"- {r['labels']:,} labels, {r['path']}: {r['ratio_to_command']:.2f}x the "
                f"command's time, {verdict} the {TARGET}x target"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement")
    args = parser.parse_args()
    sizes, counts = QUICK if args.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    labels = prepare(sizes)
    log = WORK / "servers.log"
    registry = PlatformServer(ENV, "registry", log=log.open("ab")).start()
    mirrored = PlatformServer(ENV, "offline", log=log.open("ab")).start()
    with environ({offline_mirror.DIR_VAR: ""}):
        copying = PlatformServer(ENV, "offline", log=log.open("ab")).start()
    feast_join = FeastJoinServer(log)
    own: list[PlatformServer] = []

    def own_server() -> FeatureStore:
        """A server with a mirror of its own, started fresh: its whole copy made first."""
        for server in own:
            server.stop()
        own.clear()
        shutil.rmtree(OWN_MIRROR, ignore_errors=True)
        with environ({offline_mirror.DIR_VAR: str(OWN_MIRROR)}):
            own.append(PlatformServer(ENV, "offline", log=log.open("ab")).start())
        return thin_client(registry.address, own[0].address, "own")

    try:
        stores = {
            THIN_COPY: thin_client(registry.address, copying.address, "copy"),
            THIN_MIRROR: thin_client(registry.address, mirrored.address, "mirror"),
            THIN_FEAST: thin_client(registry.address, feast_join.address, "feast"),
        }
        rows = [
            row
            for n in counts
            for row in measure(labels, n, args.rounds, stores, n == counts[0], own_server)
        ]
    finally:
        for server in own:
            server.stop()
        feast_join.stop()
        for server in (copying, mirrored, registry):
            server.stop()
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": str(sizes),
        "target_ratio": TARGET,
        "load_start": " ".join(f"{x:.2f}" for x in load_start),
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "bench_thin_client_quick" if args.quick else "bench_thin_client"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = report(result)
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
    return 0 if all(r["same_rows_as_command"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
