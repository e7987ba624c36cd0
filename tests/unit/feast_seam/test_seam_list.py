"""The list of seams itself: every seam has a pinning test, is in the package docstring,
and every private name it declares exists in the installed Feast."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from seam_helpers import declared_on_class

import feature_platform.feast_seam as feast_seam
from feature_platform.feast_seam import SEAMS, Seam

HERE = Path(__file__).parent


def test_every_seam_has_a_pinning_test() -> None:
    # Beside this module's existence test, which marks every seam.
    names = {seam.name for seam in SEAMS}
    marked: set[str] = set()
    for path in HERE.glob("test_*.py"):
        marked |= _seams_marked_in(path)
    assert names - marked == set(), "seams without a test of their own"
    assert marked - names == set(), "tests of seams that are not in SEAMS"


def test_a_missing_private_name_fails_where_it_is_called() -> None:
    import feast.utils

    from feature_platform.feast_seam import BrokenSeam, feast_private

    assert feast_private(feast.utils, "_utc_now", "registry.cache_reload") is feast.utils._utc_now
    gone = feast_private(feast.utils, "_no_such_helper", "conversion.arrow_to_proto")
    with pytest.raises(
        BrokenSeam, match=r"conversion\.arrow_to_proto.*feast\.utils\._no_such_helper"
    ):
        gone(1, two=2)


def _seams_marked_in(path: Path) -> set[str]:
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "seam"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def test_the_package_docstring_lists_every_seam() -> None:
    listed = re.findall(r"^(\w+\.\w+)\s{2,}", feast_seam.__doc__ or "", re.MULTILINE)
    assert listed == [seam.name for seam in SEAMS]


def test_every_seam_names_a_module_of_the_package() -> None:
    for seam in SEAMS:
        assert importlib.util.find_spec(seam.module) is not None, seam.name


def resolve(qualified: str) -> Any:
    """`module:attribute.path` in the installed Feast; AssertionError naming what is gone."""
    module_name, _, path = qualified.partition(":")
    target: Any = importlib.import_module(module_name)
    parts = path.split(".")
    for i, part in enumerate(parts):
        if hasattr(target, part):
            target = getattr(target, part)
        elif i == len(parts) - 1 and isinstance(target, type):
            assert declared_on_class(target, part), f"{qualified} is gone"
            return None
        else:
            raise AssertionError(f"{qualified} is gone")
    return target


@pytest.mark.parametrize(
    "seam",
    [pytest.param(seam, marks=pytest.mark.seam(seam.name), id=seam.name) for seam in SEAMS],
)
def test_the_private_names_exist(seam: Seam) -> None:
    for qualified in seam.feast_names:
        resolve(qualified)
