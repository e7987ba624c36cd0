"""kind tier: a session-scoped cluster, image and release; opt-in with --kind.

Skips with one line naming what is missing where docker, kind, helm or kubectl is not on
PATH, or the docker engine does not answer. With --keep-cluster an existing cluster is
reused and a created one is left running for the next run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, build_and_load_image, cluster_up, install, missing_tools, sh

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kind)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failing test's report carries the namespace's events, descriptions and logs."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("kind_cluster")
    if report.when == "call" and report.failed and isinstance(cluster, Cluster):
        report.sections.append(("kind diagnostics", cluster.diagnostics()))
    return report


@pytest.fixture(scope="session")
def kind_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"kind tier: {', '.join(missing)} not on PATH")
    if not request.config.getoption("--kind"):
        pytest.skip("kind tier is opt-in: make kind-test (pytest tests/kind --kind)")
    if sh("docker", "info", check=False, timeout=60).returncode != 0:
        pytest.skip("kind tier: the docker engine does not answer (docker info failed)")
    keep = bool(request.config.getoption("--keep-cluster"))
    cluster = cluster_up(keep, tmp_path_factory.mktemp("kind"))
    try:
        build_and_load_image(cluster)
        install(cluster)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
        # Setup failures have no test report to carry them: print, pytest shows it.
        print(cluster.diagnostics())
        _teardown(cluster)
        raise
    yield cluster
    _teardown(cluster)


def _teardown(cluster: Cluster) -> None:
    if cluster.created:
        sh("kind", "delete", "cluster", "--name", cluster.name, check=False)
