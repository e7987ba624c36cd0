"""The materialize CronJob's engine switch: in process by default, Feast's Ray engine on
request, with the cluster address, writer resources and the NetworkPolicy to the head."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from feast.infra.compute_engines.ray.config import RayComputeEngineConfig
from feast.repo_config import RepoConfig
from rendering import CHART, ROOT, RenderError, container_env, containers, one, pod_template, render

DEV = [CHART / "values-dev.yaml"]
RAY = {
    "materialize": {
        "engine": "ray",
        "ray": {"address": "ray://fp-ray-head-svc:10001", "writeConcurrency": 6,
                "cpusPerWriter": 0.5, "headSelector": {"ray.io/node-type": "head"}},
    },
}  # fmt: skip


def _batch_engine(objects: list[dict]) -> object:
    """The batch engine Feast builds from the job's feature_store.yaml and environment."""
    job = one(objects, "CronJob", "-materialize")
    env = container_env(containers(pod_template(job))[0], objects)
    config_map = one(objects, "ConfigMap", "-feature-store")
    text = config_map["data"]["feature_store.yaml"].replace(
        "${MATERIALIZE_ENGINE}", env["MATERIALIZE_ENGINE"]
    )
    block = yaml.safe_load(text)["batch_engine"]
    return RepoConfig(
        project="p", registry=str(Path("unused.db")), provider="local", batch_engine=block
    ).batch_engine


def test_default_is_in_process() -> None:
    objects = render(DEV)
    engine = _batch_engine(objects)
    assert not isinstance(engine, RayComputeEngineConfig)
    assert engine.type == "local"  # type: ignore[attr-defined]


def test_ray_switch_reaches_feasts_engine_and_the_head() -> None:
    objects = render(DEV, RAY)
    engine = _batch_engine(objects)
    assert isinstance(engine, RayComputeEngineConfig)
    assert engine.ray_address == "ray://fp-ray-head-svc:10001"
    assert engine.write_concurrency == 6
    assert engine.worker_task_options == {"num_cpus": 0.5}
    # Only the job switches: the servers keep the in-process default.
    server = one(objects, "Deployment", "-server")
    assert container_env(containers(pod_template(server))[0], objects)["MATERIALIZE_ENGINE"] == (
        "local"
    )
    policy = one(objects, "NetworkPolicy", "-materialize")
    head = [rule for rule in policy["spec"]["egress"]
            if any(p.get("port") == 10001 for p in rule.get("ports", []))]  # fmt: skip
    assert head and head[0]["to"] == [
        {"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}
    ]


def test_ray_without_an_address_is_refused() -> None:
    with pytest.raises(RenderError, match=r"materialize\.ray\.address"):
        render(DEV, {"materialize": {"engine": "ray"}})


def test_env_files_default_to_in_process() -> None:
    for env in ("dev", "prod"):
        text = (ROOT / "ci" / "env" / f"{env}.env").read_text()
        assert "MATERIALIZE_ENGINE=local" in text.splitlines()


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_rebuild_switch_reaches_the_job(mode: str) -> None:
    """The job rebuilds a lost store by itself unless materialize.rebuild is off."""
    from feature_platform.materialization import rebuild

    objects = render(DEV, {"materialize": {"rebuild": mode}})
    job = one(objects, "CronJob", "-materialize")
    env = container_env(containers(pod_template(job))[0], objects)
    assert rebuild.rebuild_mode(env) == mode


def test_an_unknown_rebuild_mode_is_refused() -> None:
    with pytest.raises(RenderError):
        render(DEV, {"materialize": {"rebuild": "sometimes"}})
