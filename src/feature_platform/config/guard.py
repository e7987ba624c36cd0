"""Stop before Feast runs on a configuration it would silently get wrong.

Feast expands `$VAR` and `${VAR}` in feature_store.yaml with `os.path.expandvars`, which
leaves an unset variable in the text as it is: a registry URL with `${POSTGRES_HOST}` in
it fails later and far from the cause, or not at all. The guard names every missing
variable up front and exits 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from feature_platform.errors import PlatformError

# Secrets the local services (make services: trust auth, no Redis password) take empty.
LOCAL_EMPTY_SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")
VIEW_VERSIONING = "enable_online_feature_view_versioning"
# What os.path.expandvars treats as a variable reference.
_REFERENCE = re.compile(r"\$(\w+|\{[^}]*\})")


class ConfigError(PlatformError):
    """A configuration problem, phrased for one line of output."""


def referenced_variables(text: str) -> list[str]:
    """Variable names referenced in `text`, in order of first appearance."""
    names: list[str] = []
    for match in _REFERENCE.finditer(text):
        name = match.group(1).strip("{}")
        if name not in names:
            names.append(name)
    return names


def password_problems(name: str, value: str) -> list[str]:
    """What makes `value` unusable as the password `name` in feature_store.yaml."""
    problems = []
    if name == "REDIS_PASSWORD":
        # Feast splits the Redis connection string on commas and json-decodes each value.
        if "," in value:
            problems.append(
                "REDIS_PASSWORD contains a comma, which Feast's Redis "
                "connection string cannot carry"
            )
        else:
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
            if value and not isinstance(decoded, str):
                problems.append(
                    "REDIS_PASSWORD reads as a JSON literal (a number, boolean or "
                    "null), which Feast would not pass on as text"
                )
    # Passwords sit inside double-quoted YAML strings.
    if name.endswith("PASSWORD") and ('"' in value or "\\" in value):
        problems.append(
            f"{name} contains a double quote or backslash, which the quoted YAML value cannot carry"
        )
    return problems


def _value_problems(env: Mapping[str, str], names: list[str]) -> list[str]:
    """Values that would be set but still misread by Feast's parsers."""
    return [
        problem
        for name in names
        if env.get(name) is not None
        for problem in password_problems(name, env[name])
    ]


def check(yaml_path: Path, env: Mapping[str, str]) -> None:
    """Raise ConfigError naming every unset or unusable variable `yaml_path` needs."""
    names = referenced_variables(yaml_path.read_text())
    missing = [name for name in names if name not in env]
    if missing:
        secrets = [name for name in missing if name in LOCAL_EMPTY_SECRETS]
        hint = (
            f" (secrets are in no env file; the local services take them empty: "
            f"export {' '.join(f'{name}=' for name in secrets)})"
            if secrets
            else ""
        )
        raise ConfigError(
            f"{yaml_path.name} needs unset environment variable"
            f"{'s' if len(missing) > 1 else ''}: {', '.join(missing)}{hint}"
        )
    problems = _value_problems(env, names)
    if problems:
        raise ConfigError("; ".join(problems))
    _refuse_view_versioning(yaml_path)


def _refuse_view_versioning(yaml_path: Path) -> None:
    """Feast's online view versioning (alpha) writes each version as `{view}_v{N}` fields
    that the fast path does not read: on, it would serve the unversioned, stale fields."""
    config = yaml.safe_load(yaml_path.read_text()) or {}
    registry = config.get("registry") if isinstance(config, dict) else None
    if isinstance(registry, dict) and registry.get(VIEW_VERSIONING) not in (None, False):
        raise ConfigError(
            f"{yaml_path.name}: registry.{VIEW_VERSIONING} is not supported: Feast keeps each "
            "view version in fields the feature server does not read; ship a breaking change "
            "as a new view and feature service beside the old ones (docs/rollouts.md)"
        )


def redact(text: str, values: Mapping[str, str]) -> str:
    """`text` with every secret's value masked: errors from drivers are printed."""
    for key, value in values.items():
        if value and (key.endswith("PASSWORD") or key.endswith("TOKEN")):
            text = text.replace(value, "***")
    return text


# redis-py prefixes an error inside a pipeline with the command that failed, arguments
# and all (entity keys, feature values): only the server's own message is kept.
_PIPELINE_COMMAND = re.compile(r"Command # \d+ \(.*\) of pipeline caused error: ", re.DOTALL)


def one_line_error(exc: BaseException, values: Mapping[str, str]) -> str:
    """An unexpected exception as one line, with the secrets in `values` masked."""
    text = _PIPELINE_COMMAND.sub("", str(exc)).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}", values)


def positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    """`name`'s value as a positive number, `default` when unset or empty."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def flag(env: Mapping[str, str], name: str) -> bool:
    """`name`'s value as true or false; unset or empty is false."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false"):
        return False
    if raw == "true":
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
