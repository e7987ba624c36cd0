"""A real Prometheus Pushgateway on loopback, for the jobs that push their results (the
skew check, the quality run); the module's tests skip where it is not installed."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from feature_platform.devtools.launcher import free_port

PUSHGATEWAY = shutil.which("prometheus-pushgateway")


class Pushgateway:
    def __init__(self, url: str) -> None:
        self.url = url

    def samples(self, job: str, environment: str) -> list[tuple[str, dict[str, str], float]]:
        """Every sample pushed by `job` for `environment`: (name, labels, value)."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("job") == job and sample.labels.get("environment") == environment
        ]


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed (Debian: prometheus-pushgateway)")
    port = free_port()
    log = (tmp_path_factory.mktemp("pushgateway") / "pushgateway.log").open("wb")
    process = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "prometheus-pushgateway exited"
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "prometheus-pushgateway not ready after 20s"
            time.sleep(0.2)
        yield Pushgateway(url)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
