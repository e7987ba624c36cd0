"""`make bench` (refresh): request latency right after a registry refresh against the rest.

Two servers of the platform, one worker each, pinned to CPU 0: one that refreshes its
registry every `--interval` seconds (`FEATURE_SERVER_REGISTRY_TTL_SECONDS`, short for
the measurement: the default is 60), one that never does within the run. The load
generators on CPU 1 (as in bench.py) with a redis-server of the benchmark's own, ahead of
them. 100 entities per request of `fraud_detection_v1` (the open-loop generator cannot
offer half the one-entity capacity). Each round:

1. the closed-loop maximum: `wrk`, 16 connections, against the server that never
   refreshes;
2. open loop at half that maximum, for `--seconds` each, in three conditions (the order
   rotating between rounds): the server that never refreshes; the refreshing server with
   the registry unchanged; the refreshing server while another process applies one
   unrelated feature view (a new description) at random times, on average twice per
   interval and never more than an interval apart, so every refresh loads a changed
   registry while the applies' own work (the process's, and Postgres's on any core) falls
   as often within a second after a refresh as in the rest of the run. Before each, a
   discarded run of two intervals lets the server settle on the registry of the moment.

Each refresh's start and duration come from the server's log ("registry reloaded at");
a request is "after a refresh" when it was scheduled to be sent within `WINDOW_S` of a
refresh's start, and its latency counts from that scheduled time. Target (issue 25): the
p99.9 after a refresh within 1.5x of the p99.9 of the rest, pooled over the rounds (each
round's own ratio is listed too). Results: loadtests/results/bench_refresh.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration"))
import bench
import bench_materialize
import machine_stalls
import wrk
from bench_saturation import core_time
from faults import PrivateRedis
from loadgen import RunResult, run_fixed_rate

from feature_platform.devtools.launcher import FeatureServer

RESULTS = bench.RESULTS
SIZE = 100
# Own databases, so a concurrent bench.py keeps its own, and a Redis of its own (below).
SETTINGS = {
    "REGISTRY_DB": "feast_bench_refresh_registry",
    "OFFLINE_DB": "feast_bench_refresh_offline",
}
NONE, UNCHANGED, CHANGED = "no refresh", "refresh, registry unchanged", "refresh, registry changed"
CONDITIONS = (NONE, UNCHANGED, CHANGED)
WINDOW_S = 1.0
STARTUP_S = 1.0
# A run whose server waited for its core longer than this share of the run (behind other
# work of the shared machine, /proc schedstat) measured that work: its round is not quiet.
QUIET_WAITED = 0.05
TARGET = 1.5
# the view the changing process applies, again and again; in no feature service
UNRELATED_VIEW = "bench_refresh_unrelated"
REFRESHED = re.compile(rb"registry reloaded at ([0-9.]+) in ([0-9.]+) ms \((\w+)\)")

say = bench.say


def unrelated_view(store: Any, name: str) -> Any:
    """A copy of a served view under another name: a view that no feature service reads."""
    view = store.get_feature_view("customer_txn_1h")
    view.name = name
    return view


def add_views(count: int) -> None:
    """`count` more views in the registry, as a larger feature repository has."""
    from feature_platform.config import feast_commands

    store = feast_commands.open_store(bench.ENV)
    for i in range(count):
        store.registry.apply_feature_view(
            unrelated_view(store, f"bench_refresh_extra_{i}"), store.project, commit=True
        )


def change_registry(every_s: float) -> None:
    """Apply one unrelated feature view with a new description at random times, on
    average every `every_s` and at most 2 * `every_s` apart, until stopped: the registry
    changes, what the servers read does not. A line on stdout after the first apply."""
    from feature_platform.config import feast_commands

    store = feast_commands.open_store(bench.ENV)
    view = unrelated_view(store, UNRELATED_VIEW)
    revision = 0
    while True:
        revision += 1
        view.description = f"revision {revision}"
        store.registry.apply_feature_view(view, store.project, commit=True)
        if revision == 1:
            print("applied", flush=True)
        # a random phase against the refreshes: at a fixed period the applies would fall
        # in the same place of every refresh interval, and their load with them
        time.sleep(random.uniform(0, 2 * every_s))


def refreshes(log_path: Path, start: float, end: float) -> list[dict[str, Any]]:
    """The server's refreshes that started between `start` and `end` (wall clock)."""
    out = []
    for match in REFRESHED.finditer(log_path.read_bytes()):
        at, ms, what = float(match[1]), float(match[2]), match[3].decode()
        if start <= at <= end:
            out.append({"at": at, "ms": ms, "changed": what == "changed"})
    return out


def measured(r: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock scheduled send times and latencies (s) of the 200s, less those of the
    run's first STARTUP_S (the generator opening its connections)."""
    scheduled = np.asarray(r.scheduled_s)
    keep = scheduled >= (scheduled.min() if len(scheduled) else 0) + STARTUP_S
    return scheduled[keep] + r.clock_offset_s, np.asarray(r.latencies_s)[keep]


def split(r: RunResult, starts: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Latencies (s) of the requests scheduled within WINDOW_S after a refresh's start,
    and of the rest."""
    sent, latencies = measured(r)
    if not starts:
        return latencies[:0], latencies
    ordered = np.sort(np.asarray(starts))
    before = np.searchsorted(ordered, sent, side="right") - 1
    since = np.where(before >= 0, sent - ordered[np.maximum(before, 0)], np.inf)
    after = since < WINDOW_S
    return latencies[after], latencies[~after]


def p999_ms(latencies: np.ndarray) -> float:
    return float(np.percentile(latencies, 99.9)) * 1e3 if len(latencies) else float("nan")


def behind_the_benchmark() -> None:
    """The registry-changing process: on the generators' core, behind every other process."""
    os.sched_setaffinity(0, bench.LOADGEN_CPUS)
    os.setpriority(os.PRIO_PROCESS, 0, 19)


def one_run(
    server: FeatureServer, log_path: Path, body: bytes, rps: float, args: argparse.Namespace,
    changing: bool,
) -> tuple[dict[str, Any], RunResult, list[dict[str, Any]]]:  # fmt: skip
    url = f"{server.url}/get-online-features"
    changer = None
    if changing:
        # twice per interval on average, never an interval apart: every refresh finds the
        # registry changed
        changer = subprocess.Popen(
            [sys.executable, __file__, "--change-registry-every", str(args.interval / 2)],
            stdout=subprocess.PIPE,
            preexec_fn=behind_the_benchmark,
        )
    try:
        if changer is not None and changer.stdout is not None:
            changer.stdout.readline()  # applying
        run_fixed_rate(url, body, rps, duration_s=2 * args.interval)  # settle, discarded
        start, (ran_before, waited_before) = time.time(), core_time(server)
        r = run_fixed_rate(
            url, body, rps, args.seconds, args.connections, max_requests=args.max_requests
        )
        end, (ran, waited) = time.time(), core_time(server)
    finally:
        if changer is not None:
            changer.terminate()
            changer.wait()
    found = refreshes(log_path, start - WINDOW_S, end)
    after, rest = split(r, [f["at"] for f in found])
    out = {
        "offered_rps": round(rps),
        # the server's worker: the share of the run it ran on its core, and waited for it
        "ran_share": (ran - ran_before) / (end - start),
        "waited_share": (waited - waited_before) / (end - start),
        "answered": len(r.latencies_s),
        "errors": r.errors,
        "refreshes": len(found),
        "changed_refreshes": sum(f["changed"] for f in found),
        "refresh_ms_median": float(np.median([f["ms"] for f in found])) if found else 0.0,
        "refresh_ms_max": max((f["ms"] for f in found), default=0.0),
        "after_n": len(after),
        "rest_n": len(rest),
        "after_p999_ms": p999_ms(after),
        "rest_p999_ms": p999_ms(rest),
        "after_p99_ms": float(np.percentile(after, 99)) * 1e3 if len(after) else float("nan"),
        "rest_p99_ms": float(np.percentile(rest, 99)) * 1e3,
    }
    if len(after):
        out["p999_ratio"] = out["after_p999_ms"] / out["rest_p999_ms"]
    say(f"    {out['answered']} answered at {out['offered_rps']} rps, errors {out['errors']}; "
        f"{out['refreshes']} refreshes ({out['changed_refreshes']} changed, median "
        f"{out['refresh_ms_median']:.1f} ms); p99.9 after {out['after_p999_ms']:.2f} ms "
        f"(n={out['after_n']}), rest {out['rest_p999_ms']:.2f} ms (n={out['rest_n']}); "
        f"waited for its core {out['waited_share']:.0%}")  # fmt: skip
    return out, r, found


def pooled(samples: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, Any]:
    out = {}
    for condition, parts in samples.items():
        after = np.concatenate([a for a, _ in parts])
        rest = np.concatenate([b for _, b in parts])
        entry = {"after_n": len(after), "rest_n": len(rest),
                 "after_p999_ms": p999_ms(after), "rest_p999_ms": p999_ms(rest),
                 "rest_p99_ms": float(np.percentile(rest, 99)) * 1e3}  # fmt: skip
        if len(after):
            entry["after_p99_ms"] = float(np.percentile(after, 99)) * 1e3
            entry["p999_ratio"] = entry["after_p999_ms"] / entry["rest_p999_ms"]
        out[condition] = entry
    return out


def by_position(runs: list[tuple[RunResult, list[float]]], interval: float) -> list[float]:
    """p99.9 (ms) of requests by their time since the last refresh's start, in quarter
    seconds up to the interval, pooled over `runs`."""
    since_all, latencies_all = [], []
    for r, starts in runs:
        sent, latencies = measured(r)
        ordered = np.sort(np.asarray(starts))
        before = np.searchsorted(ordered, sent, side="right") - 1
        keep = before >= 0
        since_all.append(sent[keep] - ordered[before[keep]])
        latencies_all.append(latencies[keep])
    since, latencies = np.concatenate(since_all), np.concatenate(latencies_all)
    bins = np.floor(since / 0.25).astype(int)
    return [p999_ms(latencies[bins == b]) for b in range(int(interval / 0.25))]


def plot(result: dict[str, Any], traces: dict[str, tuple[RunResult, list[dict[str, Any]]]],
         round_: int, positions: dict[str, list[float]], quiet_only: bool,
         path: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CONDITIONS) + 1, 1, figsize=(11, 12))
    span = 20.0
    for ax, condition in zip(axes, CONDITIONS, strict=False):
        r, found = traces[condition]
        sent = np.asarray(r.scheduled_s) - r.scheduled_s[0]
        latency = np.asarray(r.latencies_s) * 1e3
        shown = sent < span
        ax.scatter(sent[shown], latency[shown], s=1, alpha=0.4, color="tab:blue")
        for f in found:
            at = f["at"] - (r.scheduled_s[0] + r.clock_offset_s)
            if 0 <= at < span:
                ax.axvline(at, color="tab:red", alpha=0.6, linewidth=1)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_xlim(0, span)
        ax.set_title(f"{condition}: each request over {span:g} s of round {round_}, the "
                     "quietest (red: a refresh starts)", fontsize=10)  # fmt: skip
    ax = axes[-1]
    for condition, values in positions.items():
        x = [0.25 * (i + 0.5) for i in range(len(values))]
        ax.plot(x, values, marker="o", label=condition)
    which = "quiet rounds" if quiet_only else "all rounds"
    baseline = result["pooled_quiet" if quiet_only else "pooled"][NONE]["rest_p999_ms"]
    ax.axhline(baseline, color="grey", linestyle="--", label=f"no refresh: p99.9, {which}")
    ax.set_xlabel(f"seconds since the last refresh started (quarter-second bins, {which})")
    ax.set_ylabel("p99.9 (ms)")
    ax.legend(fontsize=8)
    fig.suptitle(f"Latency around registry refreshes, open loop at {SIZE} entities per "
                 f"request, half the closed-loop maximum ({result['when']})")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def quiet(round_: dict[str, Any]) -> bool:
    return all(round_[c]["waited_share"] < QUIET_WAITED for c in CONDITIONS)


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for which, pooled_key, rounds in (
        ("all rounds", "pooled", result["rounds"]),
        ("quiet rounds", "pooled_quiet", [r for r in result["rounds"] if quiet(r)]),
    ):
        if not rounds:
            out.append({"what": f"{which}: none", "met": False, "value": "no quiet round"})
            continue
        for condition in (UNCHANGED, CHANGED):
            p = result[pooled_key][condition]
            s = bench_materialize.spread([r[condition]["p999_ratio"] for r in rounds])
            out.append({
                "what": f"{which}, {condition}: p99.9 within {WINDOW_S:g} s after a refresh "
                        f"<= {TARGET:g}x the p99.9 of the rest, pooled",
                "met": p["p999_ratio"] <= TARGET,
                "value": f"{p['p999_ratio']:.2f}x ({p['after_p999_ms']:.2f} ms, "
                         f"n={p['after_n']:,} against {p['rest_p999_ms']:.2f} ms, "
                         f"n={p['rest_n']:,}); {len(rounds)} rounds: {s['median']:.2f}x median, "
                         f"{s['min']:.2f}x to {s['max']:.2f}x",
            })  # fmt: skip
    return out


def pooled_table(pooled: dict[str, Any], rounds: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "| condition | refreshes (changed) | after: n, p99, p99.9 (ms) | rest: n, p99, p99.9 "
        "(ms) | p99.9 after / rest |",
        "| --- | --- | --- | --- | --- |",
    ]
    for condition in CONDITIONS:
        p = pooled[condition]
        n = sum(r[condition]["refreshes"] for r in rounds)
        c = sum(r[condition]["changed_refreshes"] for r in rounds)
        after = (f"{p['after_n']:,}, {p['after_p99_ms']:.2f}, {p['after_p999_ms']:.2f}"
                 if p["after_n"] else "-")  # fmt: skip
        ratio = f"{p['p999_ratio']:.2f}x" if "p999_ratio" in p else "-"
        lines.append(f"| {condition} | {n} ({c}) | {after} | {p['rest_n']:,}, "
                     f"{p['rest_p99_ms']:.2f}, {p['rest_p999_ms']:.2f} | {ratio} |")  # fmt: skip
    return lines


def machine_lines(result: dict[str, Any]) -> list[str]:
    """The machine alone, before the servers started (machine_stalls.py): its floor, at
    the default priority and at the benchmark's."""

    def cores(at_nice: dict[str, Any]) -> str:
        return "; ".join(
            f"CPU {cpu}: {m['gaps_over_10ms']} over 10 ms, the longest {m['longest_ms']:.1f} "
            f"ms, {m['lost_ms']:.0f} ms lost in gaps over 5 ms"
            for cpu, m in at_nice.items()
        )

    machine = result["machine_alone"]
    seconds = next(iter(next(iter(machine.values())).values()))["seconds"]
    offered = float(np.median([r[UNCHANGED]["offered_rps"] for r in result["rounds"]]))
    after_n = float(np.median([r[UNCHANGED]["after_n"] for r in result["rounds"]]))
    return [
        f"The machine alone, before the servers started: a loop that only reads the clock "
        f"on each core, nothing else of the benchmark running, for {seconds:g} s at each "
        f"priority, saw these gaps. At nice 0: {cores(machine['0'])}. At nice "
        f"{bench.NICE}, the benchmark's: {cores(machine[str(bench.NICE)])}. A request in "
        f"flight in such a gap waits it out, whatever the server does: at the offered "
        f"{offered:.0f} requests/s one gap of 50 ms holds about {offered * 0.05:.0f}, "
        f"where a round's p99.9 after a refresh is set by its "
        f"{max(1, round(after_n / 1000))} slowest of {after_n:,.0f}.",
        "",
    ]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Registry refreshes: latency after a refresh against the rest ({result['when']})",
        "",
        f"Machine: {result['machine']}, shared with other work while this ran, the "
        f"benchmark's processes at nice {bench.NICE} ahead of it (load average "
        f"{result['load_average_start']} at the start, {result['load_average_end']} at the "
        "end, on 2 cores). Two servers of the platform, one worker each on CPU 0: one "
        f"refreshing its registry every {result['interval']:g} s, one never within the run; "
        "the open-loop generator, wrk and a redis-server of the benchmark's own on CPU 1. "
        f"{SIZE} entities of `fraud_detection_v1` per request, at half wrk's closed-loop "
        f"maximum (16 connections, {result['wrk_seconds']:g} s, against the server that "
        f"never refreshes), {result['seconds']:g} s per condition in each of "
        f"{len(result['rounds'])} rounds. Changed registry: another process (CPU 1, nice 19) "
        "applies one feature view that no service reads, with a new description, at random "
        "times (twice per interval on average, never an interval apart). After a refresh: "
        f"scheduled within {WINDOW_S:g} s of the start of a "
        "refresh (from the server's log); latency from the scheduled send time.",
        "",
        f"Command: `{result['command']}`",
        "",
        *machine_lines(result),
        "A round is quiet when the server's worker waited for its core (behind other "
        f"processes of the machine, /proc schedstat) less than {QUIET_WAITED:.0%} of each "
        "of its runs: in the others the latencies measure that other work. Pooled over "
        "all rounds:",
        "",
    ]
    quiet_rounds = [r for r in result["rounds"] if quiet(r)]
    lines += pooled_table(result["pooled"], result["rounds"])
    lines += ["", f"Pooled over the quiet rounds ({len(quiet_rounds)} of "
              f"{len(result['rounds'])}):", ""]  # fmt: skip
    lines += pooled_table(result["pooled_quiet"], quiet_rounds) if quiet_rounds else ["none"]
    lines += ["", "Every round (the refresh's own duration: median and longest):", "",
              "| round | condition | offered rps | errors | refreshes (changed) | refresh ms "
              "median, max | server's core: ran, waited | p99.9 after (n) | p99.9 rest (n) | "
              "ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for i, r in enumerate(result["rounds"], 1):
        for condition in CONDITIONS:
            m = r[condition]
            ratio = f"{m['p999_ratio']:.2f}x" if "p999_ratio" in m else "-"
            lines.append(
                f"| {i} | {condition} | {m['offered_rps']} | {m['errors']} | {m['refreshes']} "
                f"({m['changed_refreshes']}) | {m['refresh_ms_median']:.1f}, "
                f"{m['refresh_ms_max']:.1f} | {m['ran_share']:.0%}, {m['waited_share']:.0%} | "
                f"{m['after_p999_ms']:.2f} ({m['after_n']:,}) | "
                f"{m['rest_p999_ms']:.2f} ({m['rest_n']:,}) | {ratio} |"
            )
    lines += ["", "![latency over time, with and without refreshes](bench_refresh.png)", "",
              "## Target", ""]  # fmt: skip
    lines += bench.check_lines(result["checks"])
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="per condition and round")
    parser.add_argument("--interval", type=int, default=3, help="refresh interval (s)")
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="per open-loop run")
    parser.add_argument("--connections", type=int, default=64, help="of the open-loop runs")
    parser.add_argument("--extra-views", type=int, default=200,
                        help="more views in the registry, that no service reads")  # fmt: skip
    parser.add_argument("--machine-seconds", type=float, default=60.0,
                        help="the machine alone, before the servers start")  # fmt: skip
    parser.add_argument("--change-registry-every", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.change_registry_every:
        change_registry(args.change_registry_every)
        return 0
    if args.rounds < 1 or args.interval < 1:
        parser.error("--rounds and --interval must be at least 1")
    if why_not := wrk.missing():
        say(why_not)
        return 2
    load_start = os.getloadavg()
    cpus = sorted(bench.SERVER_CPUS | bench.LOADGEN_CPUS)
    machine = {}
    for nice in (0, bench.NICE):
        say(f"the machine alone: a clock-reading loop on CPUs {cpus} at nice {nice}, "
            f"{args.machine_seconds:g} s")  # fmt: skip
        machine[str(nice)] = {
            cpu: machine_stalls.summary(gaps, args.machine_seconds)
            for cpu, gaps in machine_stalls.measure(cpus, args.machine_seconds, nice).items()
        }
    bench.ahead_of_neighbours()
    work = Path(tempfile.mkdtemp(prefix="bench_refresh_"))
    redis = PrivateRedis(work)
    redis.start()
    assert redis.process is not None
    os.setpriority(os.PRIO_PROCESS, redis.process.pid, bench.REDIS_NICE)
    bench.BENCH_SETTINGS.update(
        SETTINGS, REDIS_PORT=str(redis.port), REDIS_DB="0", REDIS_PASSWORD=""
    )
    # per round, per condition: the run and the refreshes found in it
    runs: list[dict[str, tuple[RunResult, list[dict[str, Any]]]]] = []
    try:
        settings = bench.prepare_data()
        add_views(args.extra_views)
        os.sched_setaffinity(0, bench.LOADGEN_CPUS)
        body = bench.bodies()[SIZE]
        result: dict[str, Any] = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "interval": args.interval,
            "seconds": args.seconds,
            "wrk_seconds": args.wrk_seconds,
            "load_average_start": round(load_start[0], 2),
            "machine_alone": machine,
            "rounds": [],
        }  # fmt: skip
        logs = {NONE: work / "never.log", UNCHANGED: work / "refreshing.log"}
        with ExitStack() as stack:
            never = FeatureServer(
                bench.ENV, cpus=bench.SERVER_CPUS, log=stack.enter_context(logs[NONE].open("wb")),
                settings={"FEATURE_SERVER_REGISTRY_TTL_SECONDS": "86400"},
            )  # fmt: skip
            refreshing = FeatureServer(
                bench.ENV, cpus=bench.SERVER_CPUS,
                log=stack.enter_context(logs[UNCHANGED].open("wb")),
                settings={"FEATURE_SERVER_REGISTRY_TTL_SECONDS": str(args.interval)},
            )  # fmt: skip
            for server in (never, refreshing):
                stack.enter_context(server)
            result["redis_cpus"] = stack.enter_context(bench.redis_on_loadgen_cpus(settings))
            for i in range(args.rounds):
                say(f"round {i + 1} of {args.rounds}")
                closed = wrk.run(f"{never.url}/get-online-features", body, args.wrk_seconds,
                                 cpus=bench.LOADGEN_CPUS)  # fmt: skip
                say(f"  closed loop {closed.rps:.0f} rps")
                this: dict[str, Any] = {}
                kept: dict[str, tuple[RunResult, list[dict[str, Any]]]] = {}
                order = CONDITIONS[i % 3 :] + CONDITIONS[: i % 3]
                for condition in order:
                    say(f"  {condition}")
                    server, log_path = (never, logs[NONE]) if condition == NONE else (
                        refreshing, logs[UNCHANGED])  # fmt: skip
                    out, r, found = one_run(server, log_path, body, closed.rps / 2, args,
                                            changing=condition == CHANGED)  # fmt: skip
                    out["closed_loop_rps"] = closed.rps
                    this[condition] = out
                    kept[condition] = (r, found)
                this["load_average"] = os.getloadavg()[0]
                result["rounds"].append(this)
                runs.append(kept)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    quiet_runs = [k for k, r in zip(runs, result["rounds"], strict=True) if quiet(r)]

    def starts(found: list[dict[str, Any]]) -> list[float]:
        return [f["at"] for f in found]

    for key, chosen in (("pooled", runs), ("pooled_quiet", quiet_runs)):
        result[key] = pooled(
            {c: [split(r, starts(found)) for r, found in (k[c] for k in chosen)]
             for c in CONDITIONS}
        ) if chosen else {}  # fmt: skip
    result["checks"] = checks(result)
    # the plot: the quiet rounds (all, if none was), each request of the quietest
    shown = quiet_runs or runs
    positions = {
        c: by_position([(k[c][0], starts(k[c][1])) for k in shown], args.interval)
        for c in (UNCHANGED, CHANGED)
    }
    result["p999_by_position_ms"] = positions
    waited = [max(m["waited_share"] for c, m in r.items() if c in CONDITIONS)
              for r in result["rounds"]]  # fmt: skip
    quietest = waited.index(min(waited))
    RESULTS.mkdir(exist_ok=True)
    plot(result, runs[quietest], quietest + 1, positions, len(shown) == len(quiet_runs),
         RESULTS / "bench_refresh.png")  # fmt: skip
    (RESULTS / "bench_refresh.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "bench_refresh.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
