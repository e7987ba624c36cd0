"""Tests that pin each Feast seam (feature_platform.feast_seam.SEAMS) to the installed Feast.

A test names its seam with `@pytest.mark.seam("<module>.<seam>")`. A failure says which
seam broke and what it relies on. The summary lists the broken seams, and the untested
ones, whose test could not be set up (a seam module or store that no longer imports), each
with the innermost error; with FEAST_SEAM_SUMMARY=all, as `make feast-candidate` sets, the
kept ones too. Seam modules are imported inside the tests, so a name Feast dropped fails
its seams' tests instead of stopping the collection.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from seam_helpers import feature_objects, repo_config, write_counts

from feature_platform.feast_seam import SEAMS, by_name

# seam -> the first reason its test failed (broken) or could not be set up (untested)
_broken: dict[str, str] = {}
_untested: dict[str, str] = {}
_ran: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = by_name()
    for item in items:
        for marker in item.iter_markers("seam"):
            if marker.args[0] not in known:
                raise pytest.UsageError(f"{item.nodeid}: no seam named {marker.args[0]!r}")


def _root_cause(error: BaseException) -> str:
    """The innermost exception's first line: Feast wraps an import failure in its own."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    for marker in item.iter_markers("seam"):
        name = marker.args[0]
        _ran.add(name)
        if not report.failed or call.excinfo is None:
            continue
        reason = f"{item.name}: {_root_cause(call.excinfo.value)}"
        (_broken if report.when == "call" else _untested).setdefault(name, reason)
        report.sections.append(
            ("feast seam", f"{name} is broken: it relies on {by_name()[name].relies_on}")
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ran:
        return
    show_all = os.environ.get("FEAST_SEAM_SUMMARY") == "all"
    terminalreporter.section("feast seams")
    for seam in SEAMS:
        if seam.name in _broken:
            terminalreporter.write_line(f"{seam.name}: broken ({_broken[seam.name]})")
        elif seam.name in _untested:
            line = f"{seam.name}: untested, its test could not start ({_untested[seam.name]})"
            terminalreporter.write_line(line)
        elif show_all and seam.name in _ran:
            terminalreporter.write_line(f"{seam.name}: kept")
    untested = _untested.keys() - _broken.keys()
    kept = len(_ran - _broken.keys() - untested)
    terminalreporter.write_line(
        f"{kept} seam(s) kept, {len(_broken)} broken, {len(untested)} untested"
    )


def _seam_module(name: str) -> Any:
    """A fixture named `name`: the seam module, imported when a test asks for it."""

    def imported() -> ModuleType:
        return importlib.import_module(f"feature_platform.feast_seam.{name}")

    return pytest.fixture(name=name)(imported)


conversion = _seam_module("conversion")
feature_refs = _seam_module("feature_refs")
feature_store = _seam_module("feature_store")
registry = _seam_module("registry")
stores = _seam_module("stores")


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
