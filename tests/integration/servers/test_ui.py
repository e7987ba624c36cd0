"""`feature-platform ui dev` in a real browser: headless Chromium renders this registry.

Feast's UI ships demo projects of its own (credit scoring, RAG), so each page is asserted
to link to this project's objects by name, and not to the demo's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from stacks import Stack

from feature_platform.config import feast_commands
from feature_platform.devtools.launcher import free_port

pytestmark = pytest.mark.integration

PROJECT = "fraud_detection"
# page -> the names it must link to, as /p/<project>/<page>/<name>
PAGES = {
    "entity": ["customer", "merchant"],
    "feature-view": ["customer_stats", "merchant_stats", "customer_txn_1h"],
    "feature-service": ["fraud_detection_v1"],
}
DEMO_NAMES = ["credit_scoring_aws", "Credit Score Project", "rag_project"]
BOOT_TIMEOUT_S = 120
BROWSER_TIMEOUT_S = 90
# Set it to a path (docs/ui.png) to keep the screenshot the README shows.
SCREENSHOT_ENV = "UI_SCREENSHOT"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@dataclass
class Ui:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def ui(deployed_dev: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with deployed_dev.active():
        env = feast_commands.prepare("dev")
    argv = [sys.executable, "-m", "feature_platform", "ui", "dev"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    served = Ui(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            assert process.poll() is None, f"ui exited: {served.tail()}"
            try:
                if requests.get(f"{served.url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"ui not ready: {served.tail()}"
            time.sleep(0.25)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _browse(url: str, *flags: str) -> str:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (make test-tools installs Debian's chromium)")
    headless = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    done = subprocess.run(
        [chromium, *headless, "--virtual-time-budget=15000", *flags, url],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_ui_lists_this_projects_objects(ui: Ui, page: str) -> None:
    dom = _browse(f"{ui.url}/p/{PROJECT}/{page}/", "--dump-dom")
    for name in PAGES[page]:
        assert f'href="/p/{PROJECT}/{page}/{name}"' in dom, (name, dom[-2000:])
    # The project picker names this project (Feast title-cases it), not a demo one.
    assert ">Fraud Detection<" in dom
    assert not [demo for demo in DEMO_NAMES if demo in dom]


def test_a_screenshot_of_the_feature_views(ui: Ui, tmp_path: Path) -> None:
    shot = tmp_path / "ui.png"
    _browse(f"{ui.url}/p/{PROJECT}/feature-view/", f"--screenshot={shot}", "--window-size=1280,900")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    # IHDR: width and height, big-endian, after the signature and the chunk header
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 900)
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])


def test_nothing_served_changes_the_registry(ui: Ui) -> None:
    api = f"{ui.url}/api/v1"
    project = {"project": PROJECT}
    before = requests.get(f"{api}/entities", params=project, timeout=30).json()
    new_entity = {"name": "from_the_ui", "project": PROJECT, "join_key": "ui_id"}
    attempts = [
        requests.post(f"{api}/entities", json=new_entity, timeout=30),
        requests.delete(f"{api}/entities/customer", params=project, timeout=30),
        requests.delete(f"{api}/feature_views/customer_stats", params=project, timeout=30),
        requests.post(f"{api}/push", json={"push_source_name": "x", "df": {}}, timeout=30),
        requests.put(f"{ui.url}/p/{PROJECT}/entity/", timeout=30),
    ]
    for refused in attempts:
        assert refused.status_code == 403, (refused.request.method, refused.url, refused.text)
        assert refused.json()["error"] == "read_only"
        assert "password" not in refused.text.lower()
    after = requests.get(f"{api}/entities", params=project, timeout=30).json()
    assert after == before
    assert "from_the_ui" not in str(after) and "customer" in str(after)
    # The page's Refresh button reloads the server's cached copy: allowed, changes nothing.
    assert requests.post(f"{api}/registry/refresh", timeout=30).status_code == 200
    page = requests.get(f"{ui.url}/p/{PROJECT}/entity/", timeout=30)
    assert page.headers["x-frame-options"] == "DENY"


def test_a_taken_port_is_one_line_and_a_non_zero_exit(ui: Ui, deployed_dev: Stack) -> None:
    with deployed_dev.active():
        env = feast_commands.prepare("dev")
    port = ui.url.rsplit(":", 1)[1]
    argv = [sys.executable, "-m", "feature_platform", "ui", "dev", "--host", "127.0.0.1"]
    done = subprocess.run(
        [*argv, "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT_S,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ui: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in done.stderr


def test_stopping_the_command_stops_the_server(ui: Ui) -> None:
    """Last in this module: it stops the module's server, as the kubelet would."""
    # The server runs inside the command's process: no child to orphan.
    assert psutil.Process(ui.process.pid).children(recursive=True) == []
    ui.process.send_signal(signal.SIGTERM)
    assert ui.process.wait(timeout=60) == 0, ui.tail()
    assert "SIGTERM received: stopping" in ui.tail() and "Feast UI stopped" in ui.tail()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{ui.url}/health", timeout=5)
