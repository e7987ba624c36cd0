"""Outside feature_platform.feast_seam, no module uses a Feast private name.

A use is `from feast... import _name`, an attribute `x._name` read or written (not on
self/cls, not a dunder) or `getattr(x, "_name")`, where Feast's installed source defines
`_name` (def, class or assignment) and the platform does not. Methods of the platform's
subclasses of Feast classes are checked apart: a private name of the Feast base that they
override, call or set on self must be declared by a `hooks.*` seam for that module.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path
from typing import Any

import feast
from seam_helpers import declared_on_class

import feature_platform
from feature_platform.feast_seam import SEAMS

PACKAGE = Path(feature_platform.__file__).parent
SEAM_PACKAGE = PACKAGE / "feast_seam"
DEFINED = re.compile(
    r"^\s*(?:async\s+)?(?:def|class)\s+(_\w+)|^\s*(?:self\.)?(_\w+)\s*(?::[^=\n]*)?=(?!=)", re.M
)
ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def defined_private_names(root: Path, skip: Path | None = None) -> set[str]:
    names = set()
    for path in root.rglob("*.py"):
        if skip is not None and skip in path.parents:
            continue
        for match in DEFINED.finditer(path.read_text(errors="replace")):
            name = match.group(1) or match.group(2)
            if not name.startswith("__"):
                names.add(name)
    return names


@functools.cache
def feast_names() -> frozenset[str]:
    """Feast's private names, less those the platform (outside the seam) defines too;
    not less the hooks, which the platform defines only to override Feast's."""
    feast_defined = defined_private_names(Path(feast.__file__).parent)
    platform_defined = defined_private_names(PACKAGE, skip=SEAM_PACKAGE)
    hooks = {
        name for seam in SEAMS if seam.overridden_in for name in declared_hooks(seam.overridden_in)
    }
    return frozenset(feast_defined - (platform_defined - hooks))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _on_self(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "super"


def private_uses(source: str, names: frozenset[str]) -> list[str]:
    """`line: use` for each use of a Feast private name in `source` (hooks aside)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "feast":
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_private(a.name)]
        elif isinstance(node, ast.Attribute):
            if node.attr in names and not _on_self(node.value):
                found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ATTRIBUTE_FUNCTIONS
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in names
        ):
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {use}" for line, use in sorted(found)]


def _feast_defines(cls: type, name: str) -> bool:
    feast_bases = [k for k in cls.__mro__ if k.__module__.split(".")[0] == "feast"]
    return any(name in vars(k) for k in feast_bases) or declared_on_class(cls, name)


def hook_uses(source: str, namespace: dict[str, Any]) -> set[str]:
    """`Class.name` for each private name of a Feast base class that a class of `source`
    (its objects in `namespace`) overrides, or reaches on self or super()."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        cls = namespace.get(node.name) if isinstance(node, ast.ClassDef) else None
        if not isinstance(cls, type):
            continue
        used = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        used |= {
            n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and _on_self(n.value)
        }
        found |= {f"{cls.__name__}.{n}" for n in used if _is_private(n) and _feast_defines(cls, n)}
    return found


def declared_hooks(module: str) -> set[str]:
    return {
        name.rpartition(".")[2]
        for seam in SEAMS
        if seam.overridden_in == module
        for name in seam.feast_names
    }


def _modules() -> list[tuple[str, Path]]:
    return [
        ("feature_platform." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts), path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if SEAM_PACKAGE not in path.parents
    ]


def test_no_module_outside_the_seam_uses_a_feast_private_name() -> None:
    uses = {
        module: found
        for module, path in _modules()
        if (found := private_uses(path.read_text(), feast_names()))
    }
    assert uses == {}, "call feature_platform.feast_seam instead"


def test_every_overridden_feast_method_is_a_declared_hook() -> None:
    undeclared = {}
    for module, path in _modules():
        source = path.read_text()
        if "class " not in source or "feast" not in source:
            continue
        hooks = hook_uses(source, vars(importlib.import_module(module)))
        left = {hook for hook in hooks if hook.split(".", 1)[1] not in declared_hooks(module)}
        if left:
            undeclared[module] = left
    assert undeclared == {}, "declare them in a hooks.* seam (feature_platform.feast_seam)"


PLANTED = """
from feast.utils import _get_column_names, make_tzaware
from feast.infra.online_stores.redis import RedisOnlineStore

def provider(store):
    registry = store._registry
    store._registry = None
    return store._get_provider(), getattr(registry, "_exit_handler", None)

class Store(RedisOnlineStore):
    def _get_client(self, config):
        return super()._get_client(config)

    def online_read(self, config, *args):
        self.own = self._own_helper()
        return self._get_features_for_entity(*args)

    def _own_helper(self):
        return self.__class__, self._client
"""


def test_the_guard_finds_planted_uses() -> None:
    assert private_uses(PLANTED, feast_names()) == [
        "2: import _get_column_names",
        "6: store._registry",
        "7: store._registry",
        "8: getattr(registry, '_exit_handler', None)",
        "8: store._get_provider",
    ]
    namespace: dict[str, Any] = {}
    exec(compile(PLANTED, "planted", "exec"), namespace)
    assert hook_uses(PLANTED, namespace) == {
        "Store._get_client",
        "Store._get_features_for_entity",
        "Store._client",
    }
