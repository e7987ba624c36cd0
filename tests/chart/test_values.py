"""values.schema.json makes a typo or a wrong type fail the install; values.yaml documents
every key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from rendering import CHART, SCENARIOS, RenderError, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if schema.get("type") == "object" or "properties" in schema:
        found.append((path or "(top)", schema))
    for key, sub in schema.get("properties", {}).items():
        found.extend(_objects(sub, f"{path}.{key}"))
    if isinstance(schema.get("items"), dict):
        found.extend(_objects(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        found.extend(_objects(schema["additionalProperties"], f"{path}.*"))
    return found


def test_schema_is_draft_07_and_closed_everywhere() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, schema in _objects(SCHEMA):
        closed = schema.get("additionalProperties")
        # Free-form maps are typed: labels, annotations, node selectors map to strings,
        # prometheusRule.staleAfterSeconds to positive integers.
        typed_map = closed in ({"type": "string"}, {"type": "integer", "minimum": 1})
        assert closed is False or typed_map, path
        if closed is not False:
            assert "properties" not in schema, path


def test_schema_covers_every_default() -> None:
    """Each key of values.yaml is declared, so the closed schema accepts the defaults."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(values: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in schema.get("properties", {}), f"{path}{key} is not in the schema"
            sub = schema["properties"][key]
            if isinstance(value, dict) and "properties" in sub:
                walk(value, sub, f"{path}{key}.")

    walk(defaults, SCHEMA, "")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"server": {"replica": 3}}, "replica"),
        ({"redis": {"inCluster": {"enable": True}}}, "enable"),
        ({"materialise": {"enabled": False}}, "materialise"),
        ({"skewCheck": {"pushgateway": "http://pushgateway:9091"}}, "pushgateway"),
    ],
)
def test_schema_rejects_a_misspelled_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=re.escape(named)):
        render(SCENARIOS["dev"], overrides)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"server": {"workers": "two"}}, "workers"),
        ({"podDisruptionBudget": {"enabled": "yes"}}, "enabled"),
        ({"materialize": {"startingDeadlineSeconds": 5}}, "startingDeadlineSeconds"),
        ({"server": {"write": {"mode": "tokens"}}}, "mode"),
        ({"image": {"digest": "latest"}}, "digest"),
        # without a scheme the NetworkPolicy cannot tell the port
        ({"skewCheck": {"pushgatewayUrl": "pushgateway:9091"}}, "pushgatewayUrl"),
        ({"skewCheck": {"rows": 0}}, "rows"),
        ({"prometheusRule": {"staleAfterSeconds": {"customer_stats": "1d"}}}, "customer_stats"),
        # a view name lands in PromQL matchers: no regex or quote characters
        ({"prometheusRule": {"staleAfterSeconds": {"customer.*": 60}}}, "customer.*"),
    ],
)
def test_schema_rejects_a_wrong_type_or_value(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=re.escape(named)):
        render(SCENARIOS["dev"], overrides)


def test_every_value_is_documented_by_a_comment_starting_with_its_name() -> None:
    """Helm's convention. The Kubernetes resource requirements under `resources` are
    Kubernetes' own type, documented there."""
    undocumented = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_resources = any(name == "resources" for _, name in stack)
        stack.append((indent, key))
        if inside_resources:
            continue
        assert key[0].islower(), f"{key} is not camelCase"
        # The comment block right above the key; its first line names the key.
        start = number
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        if start == number or not lines[start].strip().startswith(f"# {key} "):
            undocumented.append(key)
    assert undocumented == []


def test_prod_values_use_external_stores_existing_secrets_and_serve_read_only() -> None:
    prod = yaml.safe_load(SCENARIOS["prod"][0].read_text())
    for store in ("postgres", "redis"):
        assert prod[store]["inCluster"]["enabled"] is False
        assert prod[store]["host"]
        assert prod[store]["auth"]["existingSecret"]
    assert prod["server"]["write"]["mode"] == "off"
    assert prod["image"]["pullPolicy"] == "Always"


def test_no_secret_in_any_values_file() -> None:
    files = [CHART / "values.yaml", *(f for fs in SCENARIOS.values() for f in fs)]
    for path in files:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(\w*(password|token)\w*):\s*(\S*)", line, re.I)
            if match:
                # Only the names of Secrets and of keys in them, never a value.
                assert match.group(1).endswith(("Key", "Secret")), f"{path.name}: {line}"
