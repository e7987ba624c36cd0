"""Markers by folder: everything under tests/integration needs the real services."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (HERE / "integration") in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kind", "kind-cluster tier (tests/kind)")
    group.addoption(
        "--kind", action="store_true", help="run the kind tier (needs docker, kind, helm)"
    )
    group.addoption(
        "--keep-cluster",
        action="store_true",
        help="reuse the kind cluster if it exists and keep it afterwards",
    )
