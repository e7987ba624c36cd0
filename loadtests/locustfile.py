"""Load test of a running feature server with locust, headless, thresholds as exit code.

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:6566 \\
        -u 20 -r 20 -t 30s --csv loadtests/results/locust --html loadtests/results/locust.html

Parameters, by environment variable:
  LOAD_ENTITIES      entity rows per request (default 1)
  LOAD_FEATURES      comma-separated feature references; default: the feature service
  LOAD_SERVICE       feature service (default fraud_detection_v1)
  LOAD_RPS_PER_USER  requests per second per simulated user (default 10)
  LOAD_CUSTOMERS / LOAD_MERCHANTS  id ranges to draw from (defaults 1000 / 100)
  LOAD_MAX_ERROR_RATIO  fail above this ratio of failed requests (default 0)
  LOAD_MAX_P99_MS       fail above this p99 in milliseconds (default 50)
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from locust import constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

ENTITIES = int(os.environ.get("LOAD_ENTITIES", "1"))
FEATURES = [f for f in os.environ.get("LOAD_FEATURES", "").split(",") if f]
SERVICE = os.environ.get("LOAD_SERVICE", "fraud_detection_v1")
RPS_PER_USER = float(os.environ.get("LOAD_RPS_PER_USER", "10"))
CUSTOMERS = int(os.environ.get("LOAD_CUSTOMERS", "1000"))
MERCHANTS = int(os.environ.get("LOAD_MERCHANTS", "100"))
MAX_ERROR_RATIO = float(os.environ.get("LOAD_MAX_ERROR_RATIO", "0"))
MAX_P99_MS = float(os.environ.get("LOAD_MAX_P99_MS", "50"))


def request_body(rng: random.Random) -> dict[str, Any]:
    entities = {
        "customer_id": [rng.randint(1, CUSTOMERS) for _ in range(ENTITIES)],
        "merchant_id": [rng.randint(1, MERCHANTS) for _ in range(ENTITIES)],
        "amount": [round(rng.lognormvariate(3.5, 0.8), 2) for _ in range(ENTITIES)],
    }
    if FEATURES:
        return {"features": FEATURES, "entities": entities}
    return {"feature_service": SERVICE, "entities": entities}


class FeatureClient(FastHttpUser):
    wait_time = constant_throughput(RPS_PER_USER)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def get_online_features(self) -> None:
        body = json.dumps(request_body(self.rng))
        self.client.post(
            "/get-online-features",
            data=body,
            headers={"Content-Type": "application/json"},
            name=f"/get-online-features x{ENTITIES}",
        )


@events.quitting.add_listener
def thresholds(environment: Any, **_kwargs: Any) -> None:
    stats = environment.stats.total
    failures = []
    if stats.num_requests == 0:
        failures.append("no requests were made")
    elif stats.fail_ratio > MAX_ERROR_RATIO:
        failures.append(f"error ratio {stats.fail_ratio:.4f} > {MAX_ERROR_RATIO}")
    p99 = stats.get_response_time_percentile(0.99) or 0
    if p99 > MAX_P99_MS:
        failures.append(f"p99 {p99:.1f} ms > {MAX_P99_MS} ms")
    for failure in failures:
        print(f"threshold failed: {failure}")
    environment.process_exit_code = 1 if failures else 0
