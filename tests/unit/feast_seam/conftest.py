"""Tests that pin each Feast seam (feature_platform.feast_seam.SEAMS) to the installed Feast.

A test names its seam with `@pytest.mark.seam("<module>.<seam>")`. A failure says which
seam broke and what it relies on; the summary lists the broken seams (every seam, kept or
broken, with FEAST_SEAM_SUMMARY=all, as `make feast-candidate` sets). Seam modules are
imported inside the tests, so a name Feast dropped fails its seams' tests instead of
stopping the collection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from seam_helpers import feature_objects, repo_config, write_counts

from feature_platform.feast_seam import SEAMS, by_name

_failures: dict[str, list[str]] = {}
_ran: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = by_name()
    for item in items:
        for marker in item.iter_markers("seam"):
            if marker.args[0] not in known:
                raise pytest.UsageError(f"{item.nodeid}: no seam named {marker.args[0]!r}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    for marker in item.iter_markers("seam"):
        name = marker.args[0]
        _ran.add(name)
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = (crash.message if crash else str(report.longrepr)).splitlines()[0]
            _failures.setdefault(name, []).append(f"{item.name}: {reason}")
            report.sections.append(
                ("feast seam", f"{name} is broken: it relies on {by_name()[name].relies_on}")
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ran:
        return
    show_all = os.environ.get("FEAST_SEAM_SUMMARY") == "all"
    terminalreporter.section("feast seams")
    for seam in SEAMS:
        if seam.name in _failures:
            terminalreporter.write_line(f"{seam.name}: broken ({_failures[seam.name][0]})")
        elif show_all and seam.name in _ran:
            terminalreporter.write_line(f"{seam.name}: kept")
    kept = len(_ran - _failures.keys())
    terminalreporter.write_line(f"{kept} seam(s) kept, {len(_failures)} broken")


@pytest.fixture
def objects(tmp_path: Path) -> dict[str, Any]:
    write_counts(tmp_path)
    return feature_objects(tmp_path)


@pytest.fixture
def store(tmp_path: Path, objects: dict[str, Any]) -> Iterator[Any]:
    """A FeatureStore with `objects` applied."""
    from feast import FeatureStore

    feature_store = FeatureStore(config=repo_config(tmp_path))
    feature_store.apply(list(objects.values()))
    yield feature_store
    for engine in {feature_store.registry.write_engine, feature_store.registry.read_engine}:
        engine.dispose()
