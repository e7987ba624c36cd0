"""Closed-loop maximum throughput with `wrk` (Debian's package): POSTs of one body over
keep-alive connections, as fast as the server answers.

wrk's C event loop drives past 30,000 requests/s on one core here, so it measures the
server, not itself (a Python generator saturates near 4,000). Every run is bounded by
its duration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
local authorization = os.getenv("WRK_AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_s: float
    p99_s: float
    # non-2xx answers, and socket errors (connect, read, write, timeout)
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def available() -> bool:
    return shutil.which("wrk") is not None


def missing() -> str | None:
    """Why a closed-loop bench with wrk cannot run here (one CPU for the server, one for
    the load generator), or None."""
    if len(os.sched_getaffinity(0)) < 2:
        return "needs 2 CPUs: one for the server, one for the load generator"
    if not available():
        return "needs wrk: `make bench` installs Debian's package"
    return None


def run(
    url: str,
    body: bytes,
    seconds: float,
    connections: int = 16,
    cpus: set[int] | None = None,
    authorization: str = "",
) -> WrkResult:
    """`wrk` against `url` for `seconds`, on `cpus` if given, sending `authorization` as
    the Authorization header if given."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path, script_path = Path(tmp) / "body", Path(tmp) / "post.lua"
        body_path.write_bytes(body)
        script_path.write_text(_SCRIPT)
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--latency", "-s", str(script_path), url]  # fmt: skip
        out = subprocess.run(
            command,
            env={**os.environ, "WRK_BODY": str(body_path), "WRK_AUTHORIZATION": authorization},
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        ).stdout
    return parse(out)


def parse(out: str) -> WrkResult:
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not requests or not rps:
        raise ValueError(f"unexpected wrk output: {out[:300]!r}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50_s=_percentile(out, "50%"),
        p99_s=_percentile(out, "99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )


def _percentile(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if not match:
        raise ValueError(f"no {label} latency in wrk output")
    return float(match.group(1)) * _UNITS[match.group(2)]
