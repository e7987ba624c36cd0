"""The machine alone: how long its cores stall with nothing of the benchmark running.

Other processes of the machine can take a core for tens of milliseconds at once, and a
request in flight then waits that long whatever the server does. A loop on each core
that only reads the clock sees such a stall as a gap between two readings. On this
machine the gaps come once a minute, on both cores at once, 20 to 115 ms in all: RabbitMQ
(a service of the machine, unused here) starts a whole Erlang VM to check on `epmd`. The
loop waits in the run queue meanwhile (`/proc/<pid>/schedstat`); a real-time loop does
not see them, one at nice -10 (bench.NICE) mostly not, though it has seen other gaps of up
to 93 ms whose source is not known. Run at the default priority and at the benchmark's,
before a latency benchmark, the gaps are the floor of its p99.9: a run that holds one
measures the machine, not the server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

GAP_S = 0.005


def gaps_on(cpu: int, seconds: float, nice: int) -> list[float]:
    """The length (s) of each gap longer than GAP_S between two readings of the clock,
    on `cpu` at `nice`, for `seconds`."""
    os.sched_setaffinity(0, {cpu})
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    clock = time.perf_counter
    gaps = []
    before = clock()
    end = before + seconds
    while before < end:
        now = clock()
        if now - before > GAP_S:
            gaps.append(now - before)
        before = now
    return gaps


def measure(cpus: list[int], seconds: float, nice: int = 0) -> dict[int, list[float]]:
    """The gaps of every core in `cpus` at `nice`, measured at once, one process per core."""
    flags = ["--seconds", str(seconds), "--nice", str(nice)]
    processes = {
        cpu: subprocess.Popen(
            [sys.executable, __file__, "--cpu", str(cpu), *flags],
            stdout=subprocess.PIPE,
        )
        for cpu in cpus
    }
    return {cpu: json.loads(p.communicate()[0]) for cpu, p in processes.items()}


def summary(gaps: list[float], seconds: float) -> dict[str, float]:
    return {
        "seconds": seconds,
        "gaps_over_10ms": sum(length > 0.010 for length in gaps),
        "lost_ms": round(sum(gaps) * 1e3, 1),
        "longest_ms": round(max(gaps, default=0.0) * 1e3, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(gaps_on(args.cpu, args.seconds, args.nice)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
