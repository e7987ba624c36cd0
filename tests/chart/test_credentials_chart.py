"""How the secrets reach the pods, so a rotation needs no restart: the stores' passwords
and the write token as files of whole-directory Secret mounts (the kubelet updates them in
place), never `secretKeyRef` variables; the offline server, which reads its certificate
only at start, rolled by a checksum of the TLS Secret; the in-cluster stores' own use of
their Secrets (test_in_cluster_redis runs the Redis rotation itself)."""

from __future__ import annotations

from typing import Any

from rendering import (
    SCENARIOS,
    container_env,
    containers,
    find,
    mounted_files,
    one,
    pod_template,
    render,
    rendered_scenario,
    secret_values,
    workloads,
)

CREDENTIALS = "/etc/feast-platform/credentials"
WRITE_TOKEN_FILE = "/etc/feast-platform/write-token/write-token"
ROTATED = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FEATURE_SERVER_WRITE_TOKEN")


def _platform(objects: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    return [
        (pod, c)
        for pod in map(pod_template, workloads(objects))
        for c in containers(pod)
        if (c.get("command") or [""])[0] == "feature-platform"
    ]


def test_no_rotated_secret_is_a_variable_of_any_pod(objects: list[dict[str, Any]]) -> None:
    for pod in map(pod_template, workloads(objects)):
        for c in containers(pod):
            if c["name"] == "postgres":
                continue  # the image's first start (test_the_in_cluster_stores_...)
            for item in c.get("env", []):
                assert item["name"] not in ROTATED, (c["name"], item["name"])


def test_every_platform_container_reads_the_passwords_from_the_secrets_mounted_whole(
    objects: list[dict[str, Any]],
) -> None:
    found = _platform(objects)
    assert found
    for pod, c in found:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["POSTGRES_PASSWORD_FILE"] == f"{CREDENTIALS}/postgres-password"
        assert env["REDIS_PASSWORD_FILE"] == f"{CREDENTIALS}/redis-password"
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == CREDENTIALS]
        # a subPath mount would never see the Secret change
        assert mount["readOnly"] is True and "subPath" not in mount
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
        sources = [s["secret"] for s in volume["projected"]["sources"]]
        assert [s["items"][0]["path"] for s in sources] == ["postgres-password", "redis-password"]
        assert volume["projected"]["defaultMode"] == 0o440


def test_the_files_hold_the_secrets_values() -> None:
    # dev renders its own Secrets for the in-cluster stores
    objects = render(SCENARIOS["dev"], {"server": {"write": {"mode": "token"}}})
    secrets = {
        s["metadata"]["name"].rsplit("-", 1)[-1]: secret_values(s) for s in find(objects, "Secret")
    }
    server = pod_template(one(objects, "Deployment", "-server"))
    (c,) = [c for c in server["spec"]["containers"] if c["name"] == "server"]
    files = mounted_files(server, c, objects)
    assert files[f"{CREDENTIALS}/postgres-password"] == secrets["postgres"]["postgres-password"]
    assert files[f"{CREDENTIALS}/redis-password"] == secrets["redis"]["redis-password"]
    assert files[WRITE_TOKEN_FILE] == secrets["token"]["write-token"]
    assert container_env(c, objects)["FEATURE_SERVER_WRITE_TOKEN_FILE"] == WRITE_TOKEN_FILE


def test_only_the_feature_server_mounts_the_write_token() -> None:
    objects = rendered_scenario("ci/thin-client-values")
    token = one(objects, "Secret", "-write-token")["metadata"]["name"]
    holders = [
        (o["metadata"]["name"], c["name"])
        for o in workloads(objects)
        for c in containers(pod_template(o))
        if any(
            f.startswith("/etc/feast-platform/write-token/")
            for f in mounted_files(pod_template(o), c, objects)
        )
    ]
    assert holders == [(one(objects, "Deployment", "-server")["metadata"]["name"], "server")]
    volumes = pod_template(one(objects, "Deployment", "-server"))["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "write-token"]
    assert volume["secret"]["secretName"] == token


def test_only_the_offline_server_rolls_when_the_tls_secret_changes() -> None:
    objects = rendered_scenario("ci/tls-values")

    def annotations(suffix: str) -> dict[str, str]:
        return dict(pod_template(one(objects, "Deployment", suffix))["metadata"]["annotations"])

    # Arrow Flight loads its certificate once: a changed Secret must replace its pods
    assert len(annotations("-offline")["checksum/tls-secret"]) == 64
    # the others present the mounted files of the moment (config/tls.py)
    for suffix in ("-server", "-registry", "-ui"):
        assert "checksum/tls-secret" not in annotations(suffix), suffix
    plain = rendered_scenario("ci/external-values")
    offline = find(plain, "Deployment", "-offline")
    assert all(
        "checksum/tls-secret" not in pod_template(o)["metadata"]["annotations"] for o in offline
    )


def test_the_in_cluster_stores_take_their_secrets_without_variables_the_platform_reads() -> None:
    objects = rendered_scenario("dev")
    redis = pod_template(one(objects, "StatefulSet", "-redis"))
    (c,) = redis["spec"]["containers"]
    # the script, the probes and a restart read the mounted file: no variable keeps an
    # old password in a probe after a rotation
    assert "env" not in c or all("secretKeyRef" not in e.get("valueFrom", {}) for e in c["env"])
    assert mounted_files(redis, c, objects)["/etc/redis-auth/password"]
    postgres = pod_template(one(objects, "StatefulSet", "-postgres"))
    (pg,) = postgres["spec"]["containers"]
    # applied by the image only when it creates its data directory; rotate-password changes
    # the role (docs/runbooks/rotating-credentials.md)
    assert [e["name"] for e in pg["env"] if "valueFrom" in e] == ["POSTGRES_PASSWORD"]
