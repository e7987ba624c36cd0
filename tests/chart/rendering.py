"""The chart rendered by a real Helm engine, and its pods turned into runnable commands.

The engine is the `helm` CLI where it is on PATH (as in CI with kind), else the Helm v4
Go engine that helm-python-sdk loads in-process. Both read the same chart directory,
values files and values.schema.json.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "feast-platform"
DOCKERFILE = ROOT / "Dockerfile"
RELEASE = "fp"
NAMESPACE = "feast"
STORE_CLIENT_LABEL = "feast-platform/store-client"

# Every values scenario the chart ships: the two environments and each ci/ case.
SCENARIOS: dict[str, list[Path]] = {
    "dev": [CHART / "values-dev.yaml"],
    "prod": [CHART / "values-prod.yaml"],
    **{f"ci/{p.stem}": [p] for p in sorted((CHART / "ci").glob("*-values.yaml"))},
}


class RenderError(Exception):
    """Helm refused the values or a template failed; the message is Helm's."""


def engine() -> str:
    return "helm" if shutil.which("helm") else "helm-python-sdk"


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of successive values files: maps merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _values(files: Sequence[Path], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        values = deep_merge(values, yaml.safe_load(path.read_text()) or {})
    return deep_merge(values, overrides or {})


def render_templates(
    files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> dict[str, str]:
    """Template path -> rendered text, as an install would render it (NOTES included)."""
    values = _values(files, overrides)
    if engine() == "helm":
        return _render_cli(values, release, namespace)
    import helm_python

    helm_python.disable_logging()  # it logs each followed symlink
    try:
        with helm_python.Chart.load(CHART) as chart:
            chart.validate_schema(values)
            return chart.render(values, name=release, namespace=namespace, is_install=True)
    except helm_python.HelmError as exc:
        raise RenderError(str(exc)) from exc


def _render_cli(values: dict[str, Any], release: str, namespace: str) -> dict[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        yaml.safe_dump(values, handle)
        handle.flush()
        argv = ["helm", "template", release, str(CHART), "-n", namespace, "-f", handle.name]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    templates: dict[str, str] = {}
    # `helm template` marks each document with its source template.
    for chunk in re.split(r"^---\n", done.stdout, flags=re.MULTILINE):
        match = re.match(r"# Source: (\S+)\n", chunk)
        if match:
            templates[match.group(1)] = templates.get(match.group(1), "") + chunk
    return templates


def render(
    files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (helm test hooks included)."""
    objects: list[dict[str, Any]] = []
    for name, text in sorted(render_templates(files, overrides, release, namespace).items()):
        if name.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


_rendered: dict[str, list[dict[str, Any]]] = {}


def rendered_scenario(name: str) -> list[dict[str, Any]]:
    """A shipped scenario rendered once per session (tests must not modify the result)."""
    if name not in _rendered:
        _rendered[name] = render(SCENARIOS[name])
    return _rendered[name]


def lint(files: Sequence[Path]) -> list[str]:
    """`helm lint --strict` findings above info level, as lines; empty when clean."""
    values = _values(files, None)
    if engine() == "helm":
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
            yaml.safe_dump(values, handle)
            handle.flush()
            done = subprocess.run(
                ["helm", "lint", "--strict", str(CHART), "-f", handle.name],
                capture_output=True,
                text=True,
            )
        if done.returncode == 0:
            return []
        return [line for line in done.stdout.splitlines() if re.match(r"\[(WARNING|ERROR)\]", line)]
    import helm_python

    helm_python.disable_logging()
    report = helm_python.lint(CHART, values, strict=True)
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report["errors"])


# --- looking things up in rendered objects ------------------------------------------


def find(objects: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objects: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = find(objects, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
    return found[0]


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod (metadata + spec) an object runs, or {} for objects that run none."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return dict(obj["spec"]["template"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"])
    return {}


def cronjob_container(
    objects: Iterable[dict[str, Any]], name_suffix: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(CronJob, pod, container) of the one CronJob named *`name_suffix`, of one container."""
    cronjob = one(objects, "CronJob", name_suffix)
    pod = pod_template(cronjob)
    (container,) = containers(pod)
    return cronjob, pod, container


def selects(peer: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a NetworkPolicy peer selects pods with `labels` in the policy's namespace."""
    selector = peer.get("podSelector", {}).get("matchLabels")
    return "namespaceSelector" not in peer and bool(selector) and selector.items() <= labels.items()


def workloads(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if pod_template(o)]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def secret_object(name: str, data: Mapping[str, str], namespace: str = NAMESPACE) -> dict:
    """A Secret as an operator would create it beside the release (existingSecret)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def object_data(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    """The data of a rendered or given ConfigMap or Secret (Secrets decoded)."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"{kind} {name} is referenced but neither rendered nor given"
    return secret_values(found[0]) if kind == "Secret" else dict(found[0].get("data") or {})


def container_env(container: dict[str, Any], objects: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet would set it from ConfigMaps and Secrets
    (a later entry wins, env over envFrom)."""
    objects = list(objects)

    env: dict[str, str] = {}
    for item in container.get("envFrom", []):
        if "configMapRef" in item:
            env.update(object_data(objects, "ConfigMap", item["configMapRef"]["name"]))
        if "secretRef" in item:
            env.update(object_data(objects, "Secret", item["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        kind, key_ref = (
            ("ConfigMap", ref["configMapKeyRef"])
            if "configMapKeyRef" in ref
            else ("Secret", ref["secretKeyRef"])
        )
        data = object_data(objects, kind, key_ref["name"])
        assert key_ref["key"] in data, f"{item['name']}: no key {key_ref['key']!r}"
        env[item["name"]] = data[key_ref["key"]]
    return env


def volume_files(
    volume: dict[str, Any], objects: Iterable[dict[str, Any]], known_only: bool = False
) -> dict[str, str] | None:
    """A volume's files (path in the volume -> text), as the kubelet writes a configMap,
    secret or projected volume (the keys `items` names, else every key); None for other
    kinds (an emptyDir starts empty; a claim's contents are not known here). `known_only`:
    sources neither rendered nor given (a cert-manager Secret, the cluster's CA) left out."""
    objects = list(objects)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    if "configMap" in volume:
        sources = [("ConfigMap", volume["configMap"])]
    elif "secret" in volume:
        sources = [("Secret", {**volume["secret"], "name": volume["secret"]["secretName"]})]
    elif "projected" in volume:
        sources = [
            (kind, spec)
            for source in volume["projected"]["sources"]
            for kind, spec in (
                ("ConfigMap", source.get("configMap")),
                ("Secret", source.get("secret")),
            )
            if spec
        ]
    else:
        return None
    files: dict[str, str] = {}
    for kind, spec in sources:
        if known_only and (kind, spec["name"]) not in names:
            continue
        data = object_data(objects, kind, spec["name"])
        for item in spec.get("items") or [{"key": key, "path": key} for key in data]:
            assert item["key"] in data, f"volume {volume['name']}: no key {item['key']!r}"
            files[item["path"]] = data[item["key"]]
    return files


def mounted_files(
    pod: dict[str, Any], container: dict[str, Any], objects: Iterable[dict[str, Any]]
) -> dict[str, str]:
    """Every file the container sees in its configMap, secret and projected volumes, by
    its path in the container (of the ConfigMaps and Secrets rendered or given)."""
    objects = list(objects)
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        # a StatefulSet's claim templates are no pod volume
        volume = volumes.get(mount["name"], {})
        for path, text in (volume_files(volume, objects, known_only=True) or {}).items():
            files[f"{mount['mountPath'].rstrip('/')}/{path}"] = text
    return files


# --- the image, as far as a local process needs it ------------------------------------


@dataclass(frozen=True)
class Image:
    env: dict[str, str]
    workdir: str
    user: str


def image_config(dockerfile: Path = DOCKERFILE) -> Image:
    """ENV, WORKDIR and USER of the Dockerfile's final stage (Docker's own semantics for
    `ENV K=V ...` lines with continuations; `$VAR` expanded from earlier ENV lines)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stage = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    workdir, user = "/", "root"
    for line in stage.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = re.sub(
                    r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value
                )
        elif line.startswith("WORKDIR "):
            workdir = line.split(None, 1)[1]
        elif line.startswith("USER "):
            user = line.split(None, 1)[1]
    return Image(env, workdir, user)


# --- pods as local processes -----------------------------------------------------------


@dataclass
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def local_command(
    pod: dict[str, Any],
    container: dict[str, Any],
    objects: Iterable[dict[str, Any]],
    root: Path,
) -> LocalCommand:
    """`container` of `pod` as a process on this machine: its command and args, the image's
    ENV under the container's env, its ConfigMap, Secret and projected volumes written below
    `root`, and every path of the image or a mount remapped (/app to this checkout, a mount
    to its copy)."""
    objects = list(objects)
    image = image_config()
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    remap: dict[str, str] = {"/app": str(ROOT)}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        files = volume_files(volumes[mount["name"]], objects)
        assert files is not None or "emptyDir" in volumes[mount["name"]], (
            f"volume {mount['name']}: only configMap, secret, projected and emptyDir"
        )
        for path, text in (files or {}).items():
            (target / path).write_text(text)
        remap[mount["mountPath"]] = str(target)

    def local_path(value: str) -> str:
        for prefix in sorted(remap, key=len, reverse=True):
            if value == prefix or value.startswith(prefix + "/"):
                return remap[prefix] + value[len(prefix) :]
        return value

    env = {k: v.replace("$PATH", os.environ["PATH"]) for k, v in image.env.items()}
    env.update(container_env(container, objects))
    env = {k: ":".join(local_path(p) for p in v.split(":")) for k, v in env.items()}
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    assert argv, "the chart must say what runs, not rely on the image's default"
    assert not any("$(" in a for a in argv), "no Kubernetes $(VAR) expansion is emulated"
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable, f"{argv[0]} not found on the container's PATH {env['PATH']}"
    return LocalCommand([executable, *argv[1:]], env, Path(local_path(image.workdir)))


def local_command_with_claim(
    pod: dict[str, Any],
    container: dict[str, Any],
    objects: Iterable[dict[str, Any]],
    root: Path,
    mount: str,
) -> tuple[LocalCommand, Path]:
    """`local_command` for a pod whose PersistentVolumeClaims are directories of this
    machine, as the kubelet mounts them; the arguments naming `mount` name that directory
    (below `root`), which is returned too."""
    pod = copy.deepcopy(pod)
    for volume in pod["spec"]["volumes"]:
        if volume.pop("persistentVolumeClaim", None) is not None:
            volume["emptyDir"] = {}
    command = local_command(pod, container, objects, root)
    directory = root / mount.lstrip("/")
    command.argv = [a.replace(mount, str(directory), 1) for a in command.argv]
    return command, directory


def platform_job(
    deployment: dict[str, Any], name: str, args: Sequence[str], command: Sequence[str] = ()
) -> dict[str, Any]:
    """A one-off Job in the server's image, settings and secrets, as CI runs `feast apply`
    and data loads: the server pod's spec with `args` for its main container, the init
    containers and probes dropped, and the store-client label that lets it reach the stores."""
    pod = copy.deepcopy(deployment["spec"]["template"])
    spec = pod["spec"]
    spec.pop("initContainers", None)
    for key in ("topologySpreadConstraints", "terminationGracePeriodSeconds"):
        spec.pop(key, None)
    container = spec["containers"][0]
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle", "ports"):
        container.pop(key, None)
    container["name"] = name
    if command:
        container["command"] = list(command)
    container["args"] = list(args)
    spec["restartPolicy"] = "Never"
    labels = {
        "app.kubernetes.io/name": f"feast-platform-{name}",
        "app.kubernetes.io/instance": deployment["metadata"]["labels"][
            "app.kubernetes.io/instance"
        ],
        "app.kubernetes.io/component": name,
        STORE_CLIENT_LABEL: "true",
    }
    pod["metadata"] = {"labels": labels}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": labels,
        },
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 900, "template": pod},
    }


def ci_load_steps(environment: str, sizes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """CI's sample-data load and `feast apply` as (job name, feature-platform args): what
    the kind tier runs as Jobs and the chart-to-process tests run as processes."""
    return [
        ("ci-generate", ["generate", environment, *sizes]),
        ("ci-apply", ["feast", environment, "--", "apply"]),
    ]


# The hourly counters of some customers, pushed now online and offline as the payment
# stream pushes them: the generated ones are mostly older than the view's two hours, and
# `helm test` passes only if every feature of its customer's vector is PRESENT.
PUSH_COUNTERS = """
import sys
import pandas as pd
from feast.data_source import PushMode
from feature_platform.config import feast_commands
environment, customers = sys.argv[1], [int(c) for c in sys.argv[2:]]
now = pd.Timestamp.now(tz="UTC").floor("s")
rows = pd.DataFrame({"customer_id": customers, "event_timestamp": now, "created_timestamp": now,
                     "n_txn_1h": 1, "sum_amount_1h": 42.0})
store = feast_commands.open_store(environment)
store.push("customer_txn_1h_push", rows, to=PushMode.ONLINE_AND_OFFLINE)
print(f"pushed the counters of customers {customers} at {now}")
"""


def push_counters_job(
    deployment: dict[str, Any], name: str, environment: str, customers: Iterable[int]
) -> dict[str, Any]:
    """A Job that runs PUSH_COUNTERS for `customers` (what the kind tier applies and the
    chart-to-process tests run as a process)."""
    args = ["-c", PUSH_COUNTERS, environment, *map(str, customers)]
    return platform_job(deployment, name, args, command=["python"])


def dump(objects: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)


def to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def stack_values(settings: Mapping[str, str]) -> dict[str, Any]:
    """Chart values pointing the release at a test stack's databases and Redis db."""
    return {
        "postgres": {
            "host": settings["POSTGRES_HOST"],
            "port": int(settings["POSTGRES_PORT"]),
            "user": settings["POSTGRES_USER"],
            "sslMode": settings["POSTGRES_SSLMODE"],
            "registryDatabase": settings["REGISTRY_DB"],
            "offlineDatabase": settings["OFFLINE_DB"],
        },
        "redis": {
            "host": settings["REDIS_HOST"],
            "port": int(settings["REDIS_PORT"]),
            "db": int(settings["REDIS_DB"]),
        },
    }


def assert_reaches_dns_and_postgres_only(
    objects: list[dict[str, Any]], policy_suffix: str, pod: dict[str, Any]
) -> None:
    """A job's NetworkPolicy: no ingress; egress to DNS and the in-cluster PostgreSQL
    only (never Redis, a server or any other port), and PostgreSQL's own policy lets the
    job's pod in."""
    labels = pod["metadata"]["labels"]
    policy = one(objects, "NetworkPolicy", policy_suffix)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy["spec"], "nothing calls the job"
    egress = policy["spec"]["egress"]
    assert [sorted((p["port"], p["protocol"]) for p in r["ports"]) for r in egress] == [
        [(53, "TCP"), (53, "UDP")],
        [(5432, "TCP")],
    ]
    postgres = pod_template(one(objects, "StatefulSet", "-postgres"))["metadata"]["labels"]
    (peer,) = egress[1]["to"]
    assert selects(peer, postgres)
    (rule,) = one(objects, "NetworkPolicy", "-postgres")["spec"]["ingress"]
    assert any(selects(p, labels) for p in rule["from"])


def assert_external_postgres_egress(objects: list[dict[str, Any]], policy_suffix: str) -> None:
    """With the stores outside the cluster (ci/external-values), a job's policy reaches
    PostgreSQL on its configured port and addresses."""
    values = yaml.safe_load(SCENARIOS["ci/external-values"][0].read_text())
    egress = one(objects, "NetworkPolicy", policy_suffix)["spec"]["egress"]
    (store,) = [r for r in egress if "to" in r]
    assert [p["port"] for p in store["ports"]] == [values["postgres"]["port"]]
    assert [peer["ipBlock"]["cidr"] for peer in store["to"]] == (
        values["networkPolicy"]["externalStoreCidrs"]
    )


def assert_settings_of_materialize(
    objects: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    """A job pod with the materialization job's security contexts, settings and config
    checksum, no service-account token, and the label PostgreSQL's policy admits."""
    materialize = pod_template(one(objects, "CronJob", "-materialize"))
    (reference,) = containers(materialize)
    assert pod["spec"]["securityContext"] == materialize["spec"]["securityContext"]
    assert container["securityContext"] == reference["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    assert pod["metadata"]["labels"][STORE_CLIENT_LABEL] == "true"
    assert container["envFrom"] == reference["envFrom"]
    assert container["env"] == reference["env"][:2]
    assert pod["metadata"]["annotations"] == materialize["metadata"]["annotations"]
