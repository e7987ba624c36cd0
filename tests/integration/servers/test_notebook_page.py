"""The notebook page's first two blocks, run as written: the servers and the client file
in a shell, then the Python a notebook runs, against the shared dev stack."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
from faults import eventually
from stacks import Stack

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "notebook.md"
PORTS = (6570, 8815, 6566)


def _block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)\n```", PAGE.read_text(), re.DOTALL)
    assert match, f"no {language} block on {PAGE.name}"
    return match.group(1)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ready() -> bool:
    """The registry and offline servers listen once set up; the feature server says."""
    try:
        ready = requests.get("http://127.0.0.1:6566/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False
    return ready and _listening(6570) and _listening(8815)


def test_the_notebook_page_runs_as_written(deployed_dev: Stack, tmp_path: Path) -> None:
    assert not any(_listening(port) for port in PORTS), "the page's ports are taken"
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    log = tmp_path / "servers.log"
    with deployed_dev.active(), log.open("wb") as out:
        shell = subprocess.Popen(
            ["bash", "-euc", _block("sh") + "\nwait"],
            cwd=tmp_path,
            env=dict(os.environ),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        eventually(lambda: shell.poll() is None and _ready(), f"servers up: {log}", 10 * 120)
        assert "fraud_detection" in (tmp_path / "client" / "feature_store.yaml").read_text()
        check = "\nprint(len(train), sorted(train.columns)[:2])\n"
        done = subprocess.run(
            [sys.executable, "-c", _block("python") + check],
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if "PASSWORD" not in k},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().startswith("2 "), done.stdout
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(timeout=60)
        eventually(lambda: not any(_listening(port) for port in PORTS), "servers stopped", 600)
