"""`feature-platform skew-check ENV`: what a running feature server serves, against the
training rows `get_historical_features` builds for the same keys at the same instant.

Keys come from the offline store: the distinct join-key values of each feature view's
source in its recent rows (twice the view's ttl), plus a few keys beyond the largest one
seen, which no store holds. Request data is generated. The vectors are read over HTTP,
the instant sampled once, right before the read, and used as the label time of every
training row; both sides are then compared value for value and type for type
(`comparison`). A value whose event time plus its view's ttl falls between that instant
and the end of the read is legitimately served as expired while the training row still
sees it: the generated data and the ttls are whole hours, so a read that spans a whole
hour is done again, once.

Exit codes: 0 consistent, 1 a mismatch, 2 configuration, 3 the check could not run (the
server unreachable or refusing, no keys, the Pushgateway unreachable). With a Pushgateway
the result is pushed as `feature_platform_skew_check_*` gauges.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import requests
from feast import FeatureStore

from feature_platform import training
from feature_platform.checks import comparison
from feature_platform.config import feast_commands, tls
from feature_platform.config.guard import ConfigError
from feature_platform.config.urls import shown
from feature_platform.console import Say
from feature_platform.errors import PlatformError
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.serving.client import online_request

SERVER_URL_VAR = "SKEW_CHECK_SERVER_URL"
# A bearer token for reads, for a server that asks for one: the value itself, or a file
# holding it (a projected service-account token, renewed by the kubelet: read each run).
SERVER_TOKEN_VAR = "SKEW_CHECK_SERVER_TOKEN"
SERVER_TOKEN_FILE_VAR = "SKEW_CHECK_SERVER_TOKEN_FILE"
PUSHGATEWAY_URL_VAR = "SKEW_CHECK_PUSHGATEWAY_URL"
PUSH_JOB = "feature_platform_skew_check"
DEFAULT_ROWS = 200
# Keys are read from rows this many ttls back, so some have just expired; views without
# a ttl look back a fixed window.
LOOKBACK_TTLS = 2
NO_TTL_LOOKBACK = timedelta(days=30)
NEVER_SEEN_SHARE = 0.05
# Entity rows per request: well below the server's default FEATURE_SERVER_MAX_ENTITIES.
REQUEST_ROWS = 100
HTTP_TIMEOUT_S = 10.0
ID_COLUMN = "sample_id"
REPORTED_MISMATCHES = 10

T = TypeVar("T")


class CheckError(PlatformError):
    """The check could not run; phrased for one line of output."""


# --- where the rows come from ----------------------------------------------------------


def service_views(store: Any, service: str) -> set[str]:
    return {p.name for p in store.get_feature_service(service).feature_view_projections}


def key_pools(store: Any, names: set[str], now: datetime) -> dict[str, list[Any]]:
    """Join key -> its distinct values in the recent rows of the offline store, for every
    feature view named (sorted, so a seed picks the same keys again)."""
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    from feature_platform.feast_seam.conversion import column_names

    offline_store = get_offline_store_from_config(store.config.offline_store)
    pools: dict[str, set[Any]] = {}
    for view in store.list_feature_views():
        if view.name not in names:
            continue
        entities = [store.get_entity(name) for name in view.entities]
        join_keys, features, timestamp, created = column_names(view, entities)
        lookback = LOOKBACK_TTLS * view.ttl if view.ttl else NO_TTL_LOOKBACK
        # Feast's own query, whatever the offline store: the latest row per key.
        latest = offline_store.pull_latest_from_table_or_query(
            store.config, view.batch_source, join_keys, features, timestamp, created,
            now - lookback, now,
        ).to_df()  # fmt: skip
        latest = latest.rename(columns=view.batch_source.field_mapping)
        for key in view.join_keys:
            pools.setdefault(key, set()).update(latest[key].dropna().tolist())
    return {key: sorted(values) for key, values in pools.items()}


def request_fields(store: Any, service: str) -> dict[str, Any]:
    """Request data the service's on-demand views need: name -> Feast type."""
    names = {p.name for p in store.get_feature_service(service).feature_view_projections}
    fields: dict[str, Any] = {}
    for view in store.list_on_demand_feature_views():
        if view.name in names:
            for source in view.source_request_sources.values():
                fields.update({f.name: f.dtype for f in source.schema})
    return fields


def _never_seen(pool: list[Any], count: int) -> list[Any]:
    if all(isinstance(v, int) for v in pool):
        return [max(pool) + 1 + i for i in range(count)]
    return [f"never-seen-{i}" for i in range(count)]


def _request_values(name: str, dtype: Any, n: int, rng: np.random.Generator) -> list[Any]:
    kind = comparison.PYTHON_TYPE.get(dtype)
    if kind is float:
        # Amounts like the generated transactions: cents, a long right tail.
        return [float(v) for v in np.round(rng.lognormal(3.6, 0.8, n), 2)]
    if kind is int:
        return [int(v) for v in rng.integers(1, 1000, n)]
    if kind is bool:
        return [bool(v) for v in rng.random(n) < 0.5]
    if kind is str:
        return [f"skew-check-{i}" for i in rng.integers(0, 1000, n)]
    raise CheckError(f"cannot generate request data {name} of type {dtype}")


def sample_rows(
    pools: Mapping[str, list[Any]], fields: Mapping[str, Any], n: int, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`n` entity rows (keys drawn from the pools, a few never seen) with request data,
    and how many rows carry a never-seen value of each key."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {ID_COLUMN: list(range(n))}
    never_seen: dict[str, int] = {}
    for key, pool in pools.items():
        if not pool:
            raise CheckError(f"the offline store holds no recent rows with a {key}")
        picked = [pool[i] for i in rng.integers(0, len(pool), n)]
        count = round(n * NEVER_SEEN_SHARE)
        for row, value in zip(
            rng.choice(n, count, replace=False), _never_seen(pool, count), strict=True
        ):
            picked[row] = value
        rows[key] = picked
        never_seen[key] = count
    for name, dtype in fields.items():
        rows[name] = _request_values(name, dtype, n, rng)
    return pd.DataFrame(rows), never_seen


# --- the online side ---------------------------------------------------------------------


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {HTTP_TIMEOUT_S:.0f}s"
    # urllib3 buries the operating system's reason ("Connection refused") deep inside.
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return match.group(1).strip() if match else type(exc).__name__


def _refusal(reply: requests.Response) -> str:
    """What an error answer says: the platform's `error` field, else the status text."""
    try:
        error = reply.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:200] if error else reply.reason


def read_online(
    url: str, token: str | None, rows: pd.DataFrame, columns: list[str], types: dict[str, Any]
) -> tuple[list[comparison.Row], list[dict[str, str]]]:
    """Each row's served values and statuses, in requests of at most REQUEST_ROWS rows."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    values: list[comparison.Row] = []
    statuses: list[dict[str, str]] = []
    with requests.Session() as session:
        # an https server is checked against TLS_CA_FILE (else the default trust store)
        session.verify = tls.requests_verify()
        for start in range(0, len(rows), REQUEST_ROWS):
            chunk = rows.iloc[start : start + REQUEST_ROWS]
            body = online_request(
                {c: chunk[c].tolist() for c in columns}, feature_service=training.FEATURE_SERVICE
            )
            try:
                reply = session.post(
                    f"{url}/get-online-features", json=body, headers=headers, timeout=HTTP_TIMEOUT_S
                )
            except requests.RequestException as exc:
                raise CheckError(
                    f"cannot reach the feature server at {shown(url)}: {_reason(exc)}"
                ) from None
            if reply.status_code != 200:
                raise CheckError(
                    f"the feature server at {shown(url)} answered {reply.status_code}: "
                    f"{_refusal(reply)}"
                )
            answer = reply.json()
            try:
                values += comparison.online_rows(answer, types)
            except KeyError as exc:
                raise CheckError(f"the feature server did not serve feature {exc}") from None
            by_name = dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))
            statuses += [
                {name: by_name[name]["statuses"][i] for name in types} for i in range(len(chunk))
            ]
    return values, statuses


def crosses_whole_hour(start: datetime, end: datetime) -> bool:
    """True when a whole hour lies in [start, end]: where whole-hour event times cross
    whole-hour ttls."""
    return start <= end.replace(minute=0, second=0, microsecond=0)


def at_one_instant(
    read: Callable[[], T], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[datetime, T, bool]:
    """(the instant sampled right before the read, what it read, whether it read again)."""
    instant = clock()
    result = read()
    if not crosses_whole_hour(instant, clock()):
        return instant, result, False
    instant = clock()
    return instant, read(), True


# --- the result ----------------------------------------------------------------------------


@dataclass
class Result:
    environment: str
    server_url: str
    instant: datetime
    seed: int
    entities: list[dict[str, Any]]
    never_seen: dict[str, int]
    features: list[str]
    not_compared: list[str]
    present_online: int
    read_again: bool
    mismatches: list[comparison.Mismatch]
    statuses: list[dict[str, str]]

    @property
    def consistent(self) -> bool:
        return not self.mismatches

    def by_feature(self) -> dict[str, int]:
        return dict(Counter(m.feature for m in self.mismatches).most_common())

    def mismatch_record(self, m: comparison.Mismatch) -> dict[str, Any]:
        return {
            "row": m.row,
            "entity": self.entities[m.row],
            "feature": m.feature,
            "online": m.online,
            "offline": m.offline,
            "online_status": self.statuses[m.row][m.feature],
            "problem": m.problem,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "server_url": self.server_url,
            "instant": self.instant.isoformat(),
            "seed": self.seed,
            "consistent": self.consistent,
            "rows_compared": len(self.entities),
            "features_compared": self.features,
            "values_compared": len(self.entities) * len(self.features),
            "present_online": self.present_online,
            "never_seen_keys": self.never_seen,
            "not_compared": self.not_compared,
            "read_again_across_whole_hour": self.read_again,
            "mismatch_count": len(self.mismatches),
            "mismatched_rows": len({m.row for m in self.mismatches}),
            "mismatches_by_feature": self.by_feature(),
            "mismatches": [self.mismatch_record(m) for m in self.mismatches],
        }

    def report(self) -> str:
        n_rows, n_features = len(self.entities), len(self.features)
        verdict = "consistent" if self.consistent else f"{len(self.mismatches)} mismatches"
        unseen = ", ".join(f"{n} rows with a {key}" for key, n in self.never_seen.items())
        lines = [
            f"Skew check of {self.environment}: {verdict}",
            f"  server:     {self.server_url}",
            f"  instant:    {self.instant.isoformat()} (label time of every training row)"
            + (", read again: the first read spanned a whole hour" if self.read_again else ""),
            f"  rows:       {n_rows}, keys drawn from the offline store (seed {self.seed})",
            f"  never seen: {unseen} beyond the largest one seen",
            f"  features:   {n_features} of {training.FEATURE_SERVICE}: "
            f"{n_rows * n_features} values compared, {self.present_online} present online",
        ]
        if self.not_compared:
            lines.append(f"  not compared (not scalar): {', '.join(self.not_compared)}")
        if self.consistent:
            lines.append("  every served value equals its training value, in value and type")
            return "\n".join(lines)
        counts = ", ".join(f"{name} {n}" for name, n in self.by_feature().items())
        rows = len({m.row for m in self.mismatches})
        lines.append(f"  mismatches: {len(self.mismatches)} values in {rows} rows: {counts}")
        lines.append(f"  first {min(REPORTED_MISMATCHES, len(self.mismatches))}:")
        for m in self.mismatches[:REPORTED_MISMATCHES]:
            keys = " ".join(f"{k}={v}" for k, v in self.entities[m.row].items())
            lines.append(
                f"    row {m.row} ({keys}) {m.feature}: online {m.online!r} "
                f"[{self.statuses[m.row][m.feature]}], training {m.offline!r}: {m.problem}"
            )
        return "\n".join(lines)


def run(env: str, server_url: str, rows: int, seed: int, token: str | None, say: Say) -> Result:
    """Sample, read online, build the training rows at the read's instant, compare."""
    store = feast_commands.open_store(env)
    try:
        return _run(store, env, server_url, rows, seed, token, say)
    finally:
        feast_registry.release(store)


def _run(
    store: FeatureStore,
    env: str,
    server_url: str,
    rows: int,
    seed: int,
    token: str | None,
    say: Say,
) -> Result:
    service = training.FEATURE_SERVICE
    types, not_compared = comparison.comparable(comparison.feature_types(store, service))
    pools = key_pools(store, service_views(store, service), datetime.now(UTC))
    fields = request_fields(store, service)
    sample, never_seen = sample_rows(pools, fields, rows, seed)
    columns = [*pools, *fields]
    say(f"reading {rows} vectors from {shown(server_url)}")
    instant, (served, statuses), read_again = at_one_instant(
        lambda: read_online(server_url, token, sample, columns, types)
    )
    say(f"building the training rows at {instant.isoformat()}")
    labels = sample.assign(event_timestamp=pd.Timestamp(instant))
    trained = training.training_set(store, labels)
    if trained[ID_COLUMN].tolist() != sample[ID_COLUMN].tolist():
        raise CheckError(f"the training set has {len(trained)} rows for {rows} label rows")
    return Result(
        environment=env,
        server_url=shown(server_url),
        instant=instant,
        seed=seed,
        entities=[
            dict(zip(columns, values, strict=True))
            for values in zip(*(sample[c].tolist() for c in columns), strict=True)
        ],
        never_seen=never_seen,
        features=list(types),
        not_compared=not_compared,
        present_online=sum(v is not None for row in served for v in row.values()),
        read_again=read_again,
        mismatches=comparison.mismatches(served, comparison.offline_rows(trained, types), types),
        statuses=statuses,
    )


def check_view(store: FeatureStore, view: str, rows: int, seed: int) -> list[comparison.Mismatch]:
    """One view's values as the online store serves them in this process (a new version,
    before any service reads it through a server), against its training values at the
    same instant, for keys drawn as `run` draws them."""
    definition = store.get_feature_view(view)
    types, _not_compared = comparison.comparable({f.name: f.dtype for f in definition.features})
    pools = key_pools(store, {view}, datetime.now(UTC))
    sample, _never_seen = sample_rows(pools, {}, rows, seed)
    refs = [f"{view}:{name}" for name in types]
    entity_rows = {key: sample[key].tolist() for key in pools}

    def read() -> list[comparison.Row]:
        served = store.get_online_features(features=refs, entity_rows=entity_rows).to_dict()
        return [{name: served[name][i] for name in types} for i in range(len(sample))]

    instant, online, _read_again = at_one_instant(read)
    labels = sample.assign(event_timestamp=pd.Timestamp(instant))
    trained = store.get_historical_features(entity_df=labels, features=refs).to_df()
    trained = trained.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    return comparison.mismatches(online, comparison.offline_rows(trained, types), types)


# --- Prometheus ----------------------------------------------------------------------------


def push_metrics(gateway: str, env: str, result: Result | None) -> None:
    """Replace this environment's group on the Pushgateway: success and the run's time
    always; rows compared and mismatches when the comparison ran (result not None)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, value: float) -> None:
        Gauge(f"feature_platform_skew_check_{name}", help_text, registry=registry).set(value)

    gauge(
        "success",
        "1 when the last skew check ran and every served value equaled its training value",
        1 if result is not None and result.consistent else 0,
    )
    gauge("last_run_timestamp_seconds", "When the last skew check finished", time.time())
    if result is not None:
        gauge("rows_compared", "Entity rows the last skew check compared", len(result.entities))
        gauge("mismatches", "Values that differed in the last skew check", len(result.mismatches))
    try:
        push_to_gateway(
            gateway,
            job=PUSH_JOB,
            registry=registry,
            grouping_key={"environment": env},
            timeout=HTTP_TIMEOUT_S,
        )
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise CheckError(f"cannot push to the Pushgateway at {shown(gateway)}: {reason}") from None


def server_token(settings: Mapping[str, str]) -> str | None:
    path = settings.get(SERVER_TOKEN_FILE_VAR)
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ConfigError(
                f"{SERVER_TOKEN_FILE_VAR}: cannot read {path}: {exc.strerror}"
            ) from None
    return settings.get(SERVER_TOKEN_VAR) or None
