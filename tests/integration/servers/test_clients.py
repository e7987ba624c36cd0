"""The README's client examples, run against a real server in each language installed.

Each example is the fenced block after a `<!-- client-example: LANG -->` marker in the
README, run as written with FEATURE_SERVER_URL set; what it prints must be the server's
own answer to the same request.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from feature_platform.devtools.launcher import FeatureServer

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = re.compile(r"<!-- client-example: (\w+) -->\n```\w+\n(.*?)\n```", re.DOTALL)
# language -> (runtime it needs, file name, command)
RUNNERS = {
    "sh": ("curl", "features.sh", ["sh", "features.sh"]),
    "node": ("node", "features.mjs", ["node", "features.mjs"]),
    "java": ("java", "Features.java", ["java", "Features.java"]),
}
REQUEST = {
    "customer_id": [1, 2],
    "merchant_id": [3, 4],
    "amount": [25.0, 310.5],
}


def _examples() -> dict[str, str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {lang: code for page in pages for lang, code in EXAMPLE.findall(page.read_text())}


def test_the_readme_shows_each_client() -> None:
    assert set(_examples()) == set(RUNNERS)


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_client_example_prints_the_servers_answer(
    language: str, server_dev: FeatureServer, tmp_path: Path
) -> None:
    runtime, file_name, command = RUNNERS[language]
    if shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed here")
    (tmp_path / file_name).write_text(_examples()[language] + "\n")
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "FEATURE_SERVER_URL": server_dev.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = server_dev.online_features(REQUEST, feature_service="fraud_detection_v1")
    assert printed == expected
    # The example read real vectors, not only missing entities.
    assert "PRESENT" in {s for column in printed["results"] for s in column["statuses"]}
