"""The Dockerfile: hadolint clean, and the properties a restricted pod relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rendering import DOCKERFILE, ROOT, image_config

HADOLINT = Path(sys.executable).parent / "hadolint"
TEXT = DOCKERFILE.read_text()
STAGES = re.split(r"^FROM\s", TEXT, flags=re.MULTILINE)[1:]


def test_hadolint_is_clean() -> None:
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "")


def test_base_is_a_pinned_slim_python_3_11() -> None:
    bases = [stage.split()[0] for stage in STAGES]
    assert len(bases) >= 2, "a build stage and a runtime stage"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base


def test_runtime_stage_installs_nothing_and_runs_unprivileged() -> None:
    runtime = STAGES[-1]
    # Dependencies come from the build stage's venv, built from the lock file only.
    assert re.search(r"uv sync --frozen --no-default-groups", STAGES[0])
    for tool in ("pip install", "uv ", "apt-get", "gcc", "build-essential"):
        assert tool not in runtime, tool
    assert "COPY --from=build /app/.venv /app/.venv" in runtime
    image = image_config()
    uid, gid = image.user.split(":")
    assert uid.isdigit() and int(uid) >= 10000 and gid.isdigit()
    assert image.env["PLATFORM_ROOT"] == image.workdir == "/app"
    # The root filesystem is read-only in the pod; only /tmp is writable.
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"):
        assert image.env[name].startswith("/tmp"), name
    assert image.env["PATH"].startswith("/app/.venv/bin:")
    assert re.search(r'^ENTRYPOINT \["feature-platform"\]', runtime, re.MULTILINE)


def test_no_secret_in_the_image() -> None:
    names = [*image_config().env, *re.findall(r"^ARG (\w+)", TEXT, re.MULTILINE)]
    assert [n for n in names if re.search(r"PASSWORD|TOKEN|SECRET|CREDENTIAL", n, re.I)] == []


def test_build_context_is_an_allow_list() -> None:
    """Only what the image needs reaches the build: no .venv, data, .git or env secrets."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "src", "feature_repo", "ci/env"}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", TEXT, re.MULTILINE))
    sources = {s.rstrip("/") for line in copied for s in line.split()}
    assert sources <= allowed
