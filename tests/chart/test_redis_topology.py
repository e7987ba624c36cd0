"""The chart's Redis topology values reach Feast as the connection string it parses."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml
from feast.infra.online_stores.redis import RedisOnlineStore
from rendering import CHART, SCENARIOS, RenderError, one, render

from feature_platform.config import environments

EXTERNAL = SCENARIOS["ci/external-values"]


def _online_store(redis_values: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The rendered settings, and feature_store.yaml's online_store expanded with them."""
    objects = render(EXTERNAL, {"redis": redis_values})
    settings = one(objects, "ConfigMap", "-settings")["data"]
    text = one(objects, "ConfigMap", "-feature-store")["data"]["feature_store.yaml"]
    with environments.in_environ({**settings, "REDIS_PASSWORD": "pw", "POSTGRES_PASSWORD": ""}):
        expanded = os.path.expandvars(text)
    return settings, yaml.safe_load(expanded)["online_store"]


def test_sentinel_set_with_an_acl_user() -> None:
    settings, store = _online_store({
        "topology": "sentinel", "host": "s1.example", "port": 26379,
        "otherNodes": ["s2.example:26379", "s3.example:26379"], "sentinelMaster": "online",
        "ssl": True, "auth": {"username": "feast"},
    })  # fmt: skip
    assert store["redis_type"] == "redis_sentinel"
    assert store["sentinel_master"] == "online"
    nodes, options = RedisOnlineStore._parse_connection_string(store["connection_string"])
    assert nodes == [{"host": f"s{i}.example", "port": "26379"} for i in (1, 2, 3)]
    assert options["username"] == "feast" and options["password"] == "pw"
    assert options["ssl"] is True
    assert "pw" not in "".join(settings.values()), "the password stays in its Secret"


def test_cluster_seed_nodes() -> None:
    _, store = _online_store({"topology": "cluster", "db": 0, "otherNodes": ["r2:6379"]})
    assert store["redis_type"] == "redis_cluster"
    nodes, options = RedisOnlineStore._parse_connection_string(store["connection_string"])
    assert [n["host"] for n in nodes] == ["redis.example.internal", "r2"]
    assert options["username"] == "" and options["db"] == 0


def test_standalone_stays_as_it_was() -> None:
    _, store = _online_store({})
    assert store["redis_type"] == "redis"
    nodes, options = RedisOnlineStore._parse_connection_string(store["connection_string"])
    assert nodes == [{"host": "redis.example.internal", "port": "6379"}]
    assert options["db"] == 3


@pytest.mark.parametrize(
    ("redis_values", "named"),
    [
        ({"topology": "cluster", "db": 3}, "/redis/db"),
        ({"topology": "sentinel", "inCluster": {"enabled": True}}, "/redis/inCluster/enabled"),
        ({"topology": "replicated"}, "/redis/topology"),
        ({"otherNodes": ["r2:6379,db=5"]}, "/redis/otherNodes/0"),
        ({"auth": {"username": "a,b"}}, "/redis/auth/username"),
    ],
)
def test_topology_mistakes_fail_the_install(redis_values: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=named):
        render(EXTERNAL, {"redis": redis_values})


def test_values_file_documents_the_topology_keys() -> None:
    text = (CHART / "values.yaml").read_text()
    for key in ("topology", "otherNodes", "sentinelMaster", "username"):
        assert f"# {key} " in text
