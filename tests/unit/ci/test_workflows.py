"""The GitHub workflows, validated offline: actionlint, GitHub's workflow JSON schema (as
vendored by check-jsonschema), and the rollout rules this project holds them to."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (chart dependency group)")
    return found


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def workflow(name: str) -> dict[str, Any]:
    return load(ROOT / ".github" / "workflows" / name)


def steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def runs(wf: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in steps(wf))


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {
        "pull-request.yml",
        "main.yml",
        "promote.yml",
        "kind.yml",
    }


def test_actionlint_accepts_the_workflows_and_rejects_a_broken_one(tmp_path: Path) -> None:
    actionlint = tool("actionlint")
    ok = subprocess.run([actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The same check on a workflow with a job depending on one that does not exist.
    broken = tmp_path / ".github" / "workflows" / "main.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        (ROOT / ".github/workflows/main.yml")
        .read_text()
        .replace("    runs-on:", "    needs: nowhere\n    runs-on:", 1)
    )
    bad = subprocess.run([actionlint, str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0 and "nowhere" in bad.stdout


def test_github_workflow_schema_accepts_the_workflows() -> None:
    checker = tool("check-jsonschema")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_full_commit_sha(path: Path) -> None:
    for step in steps(load(path)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), f"{path.name}: {step['uses']} is not pinned"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_minimal(path: Path) -> None:
    wf = load(path)
    assert wf["permissions"] == {"contents": "read"}, "read-only by default"
    for name, job in wf["jobs"].items():
        granted = job.get("permissions", {})
        assert granted in ({}, {"pull-requests": "write"}, {"pull-requests": "read"}), name
        if granted:
            # A job that may write to the pull request runs none of its code.
            assert all("run" not in s for s in job["steps"]), name
            assert all("checkout" not in s.get("uses", "") for s in job["steps"]), name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_secrets_and_event_text_never_reach_a_shell_line(path: Path) -> None:
    text = runs(load(path))
    assert "secrets." not in text, "secrets travel in env:, never in a run line"
    assert "github.event" not in text, "event text in a run line is a script injection"
    assert "pull_request_target" not in path.read_text()


def test_applies_are_serialized_per_environment_and_prod_is_protected() -> None:
    for name, env in (("main.yml", "dev"), ("promote.yml", "prod")):
        wf = workflow(name)
        assert wf["concurrency"] == {"group": f"rollout-{env}", "cancel-in-progress": False}
        job = wf["jobs"][f"apply-{env}" if env == "dev" else "promote"]
        assert job["environment"] == env
        assert f"bash ci/apply.sh {env}" in runs(wf)
        assert f"feature-platform materialize {env}" in runs(wf)
        assert "bash ci/smoke.sh" in runs(wf)
        assert job["env"]["POSTGRES_PASSWORD"] == "${{ secrets.POSTGRES_PASSWORD }}"
    assert workflow("main.yml")["on"] == {"push": {"branches": ["main"]}}
    promote = workflow("promote.yml")["on"]
    assert "workflow_dispatch" in promote and promote["push"] == {"tags": ["release-*"]}
    assert "bash ci/plan.sh prod" in runs(workflow("promote.yml"))


def test_pull_requests_test_then_plan_both_environments_read_only() -> None:
    wf = workflow("pull-request.yml")
    test_runs = "\n".join(s.get("run", "") for s in wf["jobs"]["test"]["steps"])
    for command in ("make lint", "make test", "make chart-test"):
        assert command in test_runs
    plan = wf["jobs"]["plan"]
    assert plan["needs"] == "test"
    by_id = {s.get("id"): s for s in plan["steps"]}
    for env in ("dev", "prod"):
        assert by_id[env]["run"] == f"bash ci/plan-to-output.sh {env}"
        prefix = env.upper()
        for variable, secret in (
            ("POSTGRES_PASSWORD", "PLAN_POSTGRES_PASSWORD"),
            ("REDIS_USERNAME", "PLAN_REDIS_USERNAME"),
            ("REDIS_PASSWORD", "PLAN_REDIS_PASSWORD"),
        ):
            assert by_id[env]["env"][variable] == f"${{{{ secrets.{prefix}_{secret} }}}}"
    assert "REDIS_PASSWORD" not in plan["env"]
    assert "allow-breaking-changes" in plan["env"]["ALLOW_BREAKING_CHANGES"]
    verdict = wf["jobs"]["verdict"]["steps"][0]["run"]
    assert "3)" in verdict and "ALLOWED" in verdict


def test_the_kind_job_runs_the_kind_tests() -> None:
    wf = workflow("kind.yml")
    assert "make kind-test" in runs(wf)
    assert "kind" in wf["concurrency"]["group"]
