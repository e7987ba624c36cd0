"""`make bench` (served vectors): what recording served vectors costs the request path.

The platform's server (one worker on CPU 0, the load generator on CPU 1, as in bench.py)
answers `fraud_detection_v1` for 1 and for 100 entities per request, with the service
applied without `SERVED_VECTORS_PATH` ("off") and with it, into a temporary directory,
at sample rate 1 ("on"). Each round re-applies the registry and starts a fresh server;
rounds alternate off/on and on/off so drift on this shared machine falls on both. Per
run: the highest of bench.py's rate steps with p99 within 10 ms and no errors, the highest
served in full (saturation), then p50 and p99 at half the first "off" run's saturation (on
a loaded machine the 10 ms bound can fall to the lowest steps, too low to compare at).
Each "on" run's rows written and dropped (`feature_server_served_vectors_total`) are read
from /metrics after a flush and checked against the rows served and the parquet rows on
disk, so an "on" figure that did not log is caught.
Results: loadtests/results/bench_served_vectors.{json,md}.
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
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
import bench
from loadgen import RunResult, run_fixed_rate

from feature_platform.devtools.launcher import FeatureServer

RESULTS = bench.RESULTS
SIZES = (1, 100)
FIXED_FRACTION = 0.5
# The server's own flush interval (its default) and a margin: after it, all served rows
# are counted as written or dropped.
FLUSH_S = 5.0
# Own Postgres databases, so a concurrent bench.py keeps its own.
SETTINGS = {"REGISTRY_DB": "feast_bench_sv_registry", "OFFLINE_DB": "feast_bench_sv_offline"}
COUNTER = re.compile(r'^feature_server_served_vectors_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)

say = bench.say


def apply(log_dir: Path | None, log: IO[bytes]) -> None:
    """Re-apply the repository with served-vector logging on (into `log_dir`) or off,
    through `feature-platform apply`: `feast apply` leaves a logging-only change out."""
    if log_dir is None:
        os.environ.pop("SERVED_VECTORS_PATH", None)
    else:
        os.environ["SERVED_VECTORS_PATH"] = str(log_dir)
        os.environ["SERVED_VECTORS_SAMPLE_RATE"] = "1"
    say(f"feature-platform apply (logging {'on' if log_dir else 'off'})")
    subprocess.run([sys.executable, "-m", "feature_platform", "apply", bench.ENV],
                   stdout=log, stderr=log, check=True)  # fmt: skip


def counters(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {outcome: int(float(value)) for outcome, value in COUNTER.findall(text)}


def parquet_rows(directory: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in directory.rglob("*.parquet"))


def served_rows(runs: list[RunResult], size: int) -> int:
    """Rows answered with 200: every one of them is queued for logging (sample rate 1)."""
    return sum(r.statuses.get(200, 0) for r in runs) * size


def one_run(
    mode: str, bodies: dict[int, bytes], fixed: dict[int, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Apply, start a fresh server, sweep and hold the fixed rate for each size."""
    log_dir = Path(tempfile.mkdtemp(prefix="served_vectors_")) if mode == "on" else None
    try:
        apply(log_dir, args.log)
        out: dict[str, Any] = {"load_average_before": os.getloadavg(), "sizes": {}}
        rows = 0
        with FeatureServer(bench.ENV, cpus=bench.SERVER_CPUS, log=args.log) as server:
            url = f"{server.url}/get-online-features"
            for size in SIZES:
                say(f"  {mode}, {size} entities: rate steps")
                runs = bench.sweep(url, bodies[size], args.step_seconds)
                summary = bench.summarize(runs)
                if size not in fixed:  # the first "off" run sets the fixed rate
                    fixed[size] = max(10, int(FIXED_FRACTION * summary["max_rps_sustained"]))
                held = run_fixed_rate(url, bodies[size], fixed[size], duration_s=args.fixed_seconds)
                say(f"    fixed {fixed[size]} rps: p50 {held.percentile(50) * 1e3:.2f} ms  "
                    f"p99 {held.percentile(99) * 1e3:.2f} ms  errors {held.errors}")  # fmt: skip
                rows += served_rows([*runs, held], size)
                # bench.sweep's warm-up (2 s at 50 rps, not returned) is served and logged too
                rows += 100 * size
                out["sizes"][str(size)] = {
                    "max_rps_p99_10ms": summary["max_rps_p99_10ms"],
                    "max_rps_sustained": summary["max_rps_sustained"],
                    "errors": summary["errors"] + held.errors,
                    "fixed_rps": fixed[size],
                    "fixed_p50_ms": held.percentile(50) * 1e3,
                    "fixed_p99_ms": held.percentile(99) * 1e3,
                    "steps": summary["steps"],
                }
            time.sleep(FLUSH_S + 2)
            out["served_vectors_total"] = counters(server.url)
        out["load_average_after"] = os.getloadavg()
        out["rows_served_approx"] = rows
        if log_dir is not None:
            out["parquet_rows"] = parquet_rows(log_dir)
        return out
    finally:
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per size and measure: each mode's median and range, and the on/off ratio per round."""
    out: dict[str, Any] = {}
    for size in map(str, SIZES):
        per: dict[str, Any] = {}
        for key in ("max_rps_p99_10ms", "max_rps_sustained", "fixed_p50_ms", "fixed_p99_ms"):
            off = [r["off"]["sizes"][size][key] for r in rounds]
            on = [r["on"]["sizes"][size][key] for r in rounds]
            ratios = [b / a for a, b in zip(off, on, strict=True) if a]
            per[key] = {"off": spread(off), "on": spread(on),
                        "ratio_on_off": spread(ratios) if ratios else None}  # fmt: skip
        per["fixed_rps"] = rounds[0]["off"]["sizes"][size]["fixed_rps"]
        per["errors"] = sum(r[m]["sizes"][size]["errors"] for r in rounds for m in ("off", "on"))
        out[size] = per
    return out


def checks(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Proof that "on" logged and "off" did not: counters against rows served and on disk."""
    out = []
    for i, r in enumerate(rounds, 1):
        on, off = r["on"], r["off"]
        c = on["served_vectors_total"]
        counted = sum(c.values())
        out.append({
            "what": f"round {i} on: every served row counted as written or dropped",
            "met": c.get("written", 0) > 0 and abs(counted - on["rows_served_approx"])
                   <= 0.01 * on["rows_served_approx"],
            "value": f"{counted:,} counted of about {on['rows_served_approx']:,} served",
        })  # fmt: skip
        out.append({
            "what": f"round {i} on: rows written = parquet rows on disk",
            "met": c.get("written", 0) == on["parquet_rows"],
            "value": f"{c.get('written', 0):,} written, {on['parquet_rows']:,} on disk",
        })  # fmt: skip
        out.append({
            "what": f"round {i} off: nothing logged",
            "met": sum(off["served_vectors_total"].values()) == 0,
            "value": f"{sum(off['served_vectors_total'].values())} rows counted",
        })  # fmt: skip
    return out


def _f(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Served-vector logging: hot-path cost ({result['when']})",
        "",
        f"Machine: {result['machine']}; load average at start {result['load_average_start']}, "
        f"at end {result['load_average_end']} (shared machine). The platform's server, one "
        "worker on CPU 0, load generator on CPU 1; `fraud_detection_v1` applied without "
        "`SERVED_VECTORS_PATH` (off) and with it at sample rate 1 (on), a fresh server per "
        f"run, {len(result['rounds'])} rounds alternating off/on and on/off, "
        f"{result['step_seconds']} s per rate step, {result['fixed_seconds']} s at the fixed "
        f"rate ({FIXED_FRACTION:.0%} of round 1's off sustained maximum). Median (min-max) "
        "over rounds; ratio = on / off per round.",
        "",
        "| entities/request | measure | off | on | ratio on/off |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, per in result["summary"].items():
        for key, label, digits in (
            ("max_rps_p99_10ms", "max rps at p99 <= 10 ms, no errors", 0),
            ("max_rps_sustained", "max rps sustained (>= 95% served, no errors)", 0),
            ("fixed_p50_ms", f"p50 ms at {per['fixed_rps']} rps", 2),
            ("fixed_p99_ms", f"p99 ms at {per['fixed_rps']} rps", 2),
        ):
            m = per[key]
            ratio = _f(m["ratio_on_off"], 2) if m["ratio_on_off"] else "-"
            lines.append(f"| {size} | {label} | {_f(m['off'], digits)} | "
                         f"{_f(m['on'], digits)} | {ratio} |")  # fmt: skip
    lines += ["", "| round | on: written | dropped (queue full) | dropped (write failed) "
              "| rows served (about) | parquet rows | load avg before / after |",
              "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for i, r in enumerate(result["rounds"], 1):
        on = r["on"]
        c = on["served_vectors_total"]
        load = f"{on['load_average_before'][0]:.2f} / {on['load_average_after'][0]:.2f}"
        lines.append(f"| {i} | {c.get('written', 0):,} | {c.get('dropped_queue_full', 0):,} | "
                     f"{c.get('dropped_write_failed', 0):,} | {on['rows_served_approx']:,} | "
                     f"{on['parquet_rows']:,} | {load} |")  # fmt: skip
    lines += ["", "## Checks", ""]
    for check in result["checks"]:
        lines.append(f"- {'met' if check['met'] else 'NOT met'}: {check['what']} "
                     f"({check['value']})")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--fixed-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1 s steps, 3 s at the fixed rate")
    args = parser.parse_args()
    if args.quick:
        args.step_seconds, args.fixed_seconds = 1.0, 3.0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if len(os.sched_getaffinity(0)) < 2:
        say("needs 2 CPUs: one for the server, one for the load generator")
        return 2
    bench.BENCH_SETTINGS.update(SETTINGS)
    os.environ.pop("SERVED_VECTORS_PATH", None)
    load_start = os.getloadavg()
    bench.prepare_data()
    os.sched_setaffinity(0, bench.LOADGEN_CPUS)
    RESULTS.mkdir(exist_ok=True)
    args.log = (RESULTS / "servers.log").open("ab")  # after bench.py's, ignored by git
    bodies = {size: body for size, body in bench.bodies().items() if size in SIZES}
    fixed: dict[int, int] = {}
    rounds = []
    for i in range(args.rounds):
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        say(f"round {i + 1} of {args.rounds}: {' then '.join(order)}")
        rounds.append({mode: one_run(mode, bodies, fixed, args) for mode in order})
    os.environ.pop("SERVED_VECTORS_PATH", None)
    apply(None, args.log)  # leave the bench registry as bench.py applies it
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "step_seconds": args.step_seconds,
        "fixed_seconds": args.fixed_seconds,
        "rounds": rounds,
    }  # fmt: skip
    result["summary"] = summarize(rounds)
    result["checks"] = checks(rounds)
    (RESULTS / "bench_served_vectors.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench_served_vectors.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(c["met"] for c in result["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
