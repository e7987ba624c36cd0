"""`feature-platform training-set`: the fast engine equals Feast's Postgres path value for
value and type for type, whatever the chunk size; bad labels get one line and exit 2.

Generated histories hold ttl boundaries (labels exactly one ttl after a value's event
time, and a second later), event-time ties broken by creation time, late rows (created
after labels that would otherwise see them), NULL creation times and label entities with
no rows at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import patch

import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
from conftest import AS_OF
from faults import eventually
from feast import FeatureStore
from hypothesis import given, settings
from hypothesis import strategies as st
from property_settings import COSTLY_EXAMPLES
from stacks import Stack, patched_environ

from feature_platform import cli, training
from feature_platform.config.guard import ConfigError
from feature_platform.feast_seam.stores import postgres_table
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import tables as offline_tables
from feature_platform.training import FEATURE_SERVICE, command, ray_engine, server_join

D0 = pd.Timestamp("2026-01-10", tz="UTC")
TTL = {
    "customer_stats": pd.Timedelta(days=2),
    "merchant_stats": pd.Timedelta(days=3),
    "customer_txn_1h": pd.Timedelta(hours=2),
}
STAMPS = {"event_timestamp": "datetime64[us, UTC]", "created_timestamp": "datetime64[us, UTC]"}

# (entity 1..4, event hour, creation lag in hours or None for NULL, value); few hours and
# lags, so ties on event time and on the label boundaries are common.
_row = st.tuples(
    st.integers(1, 4),
    st.sampled_from([0, 1, 24, 25, 48, 49, 72]),
    st.one_of(st.none(), st.sampled_from([0, 1, 6, 30])),
    st.integers(1, 1000).map(lambda v: v / 10),
)


def _history(rows: list[tuple[int, int, int | None, float]], key: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[key, "hour", "lag", "value"])
    # One row per (entity, event time, creation time), a NULL creation time counting as
    # the event time (lag 0): an exact tie has no winner, and Feast's join then returns
    # the label row once per tied row.
    tie = df.assign(lag=df["lag"].fillna(0))
    df = df[~tie.duplicated([key, "hour", "lag"])].reset_index(drop=True)
    df["event_timestamp"] = D0 + pd.to_timedelta(df["hour"], unit="h")
    lag = pd.to_timedelta(df["lag"].astype("float64"), unit="h")
    created = (df["event_timestamp"] + lag).where(df["lag"].notna(), pd.NaT)
    df["created_timestamp"] = pd.to_datetime(created, utc=True)
    return df.drop(columns=["hour", "lag"]).astype({key: "int64", "value": "float64", **STAMPS})


def _tables(customers: pd.DataFrame, merchants: pd.DataFrame) -> dict[str, pd.DataFrame]:
    stats = customers.rename(columns={"value": "avg_purchase_30d"})
    n = len(stats)
    return {
        "customer_stats": stats.assign(
            n_purchases_7d=range(n),
            n_purchases_30d=4,
            account_age_days=30,
            home_country=["FR", "", "NA", "DE"] * (n // 4) + ["FR", "", "NA", "DE"][: n % 4],
        ),
        "merchant_stats": merchants.rename(columns={"value": "avg_rating"}).assign(
            n_disputes_30d=1, n_sales_30d=range(len(merchants)), category="grocery"
        ),
        "customer_txn_1h": customers.rename(columns={"value": "sum_amount_1h"}).assign(n_txn_1h=2),
    }


def _labels(tables: dict[str, pd.DataFrame], hours: list[int]) -> pd.DataFrame:
    """Labels on a grid, at every row's event and creation time, one ttl after each
    event time and a second past that; customers 5 and merchants 5 have no rows."""
    times = [D0 + pd.Timedelta(hours=h) for h in hours]
    for name, ttl in TTL.items():
        df = tables[name]
        times += df["event_timestamp"].tolist() + df["created_timestamp"].dropna().tolist()
        times += (df["event_timestamp"] + ttl).tolist()
        times += (df["event_timestamp"] + ttl + pd.Timedelta(seconds=1)).tolist()
    rows = [(c, (c % 5) + 1, t) for c in range(1, 6) for t in dict.fromkeys(times)]
    labels = pd.DataFrame(rows, columns=["customer_id", "merchant_id", "event_timestamp"])
    labels["event_timestamp"] = labels["event_timestamp"].astype("datetime64[us, UTC]")
    amounts = [12.5, 0.0, 99.0]
    labels["amount"] = [amounts[i % 3] for i in range(len(labels))]
    return labels.assign(label_id=range(len(labels)))


def _without_expectations(stack: Stack) -> None:
    """The histories here hold values the repository's rules refuse on purpose (empty and
    'NA' countries, for the join's string handling): the join is what is tested here,
    the rules in tests/integration/quality."""
    with stack.active():
        store = stack.store()
        views = store.list_feature_views()
        for view in views:
            view.tags = {k: v for k, v in view.tags.items() if not k.startswith("quality.")}
        store.apply(views)


@pytest.fixture(scope="module")
def dev(stack_factory: Callable[..., Stack]) -> Iterator[Stack]:
    stack = stack_factory("dev", "tset", {ray_engine.TASKS_VAR: "2"})
    first = _history([(1, 0, None, 1.0)], "customer_id")
    stack.write(_tables(first, _history([(1, 0, None, 1.0)], "merchant_id")))
    stack.feast("apply")
    _without_expectations(stack)
    yield stack


@pytest.fixture(scope="module")
def thin(dev: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureStore, Path]:
    """A thin client's store and its offline server's log. The server runs as the chart
    runs it: a mirror of its own (`_server_mirror`), beside the command's."""
    work = tmp_path_factory.mktemp("thin")
    log = work / "offline.log"
    server = dev.offline_server(log, **{offline_mirror.DIR_VAR: str(work / "mirror")})
    return dev.through_offline_server(server.port, work), log


@pytest.fixture(scope="module")
def thin_copy(dev: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureStore, Path]:
    """As `thin`, the server without a mirror: rows read with COPY scoped to the labels'
    entities."""
    work = tmp_path_factory.mktemp("thin_copy")
    log = work / "offline.log"
    server = dev.offline_server(log, **{offline_mirror.DIR_VAR: ""})
    return dev.through_offline_server(server.port, work), log


def _server_mirror(thin: tuple[FeatureStore, Path]) -> Path:
    return thin[1].parent / "mirror"


def _thin(thin: tuple[FeatureStore, Path], labels: pd.DataFrame) -> pd.DataFrame:
    return training.training_set(thin[0], labels).sort_values("label_id").reset_index(drop=True)


# The fast engine over the offline mirror (dev's default), over rows read out of
# Postgres with COPY (no mirror), and the same join on Ray, one task per chunk.
ENGINES = {
    "fast": ("fast", {}),
    "fast, no mirror": ("fast", {offline_mirror.DIR_VAR: ""}),
    "ray": ("ray", {}),
}


def _fast(
    stack: Stack,
    labels: pd.DataFrame,
    tmp: Path,
    chunk_rows: int,
    variant: str = "fast",
    say: Callable[[str], None] = lambda _line: None,
) -> pd.DataFrame:
    path = tmp / "labels.parquet"
    labels.to_parquet(path, index=False)
    output = tmp / f"{variant}-{chunk_rows}.parquet"
    engine, settings = ENGINES[variant]
    request = command.Request(
        env="dev", output=output, labels_path=path, chunk_rows=chunk_rows, engine=engine
    )
    with stack.active(), patched_environ(settings):
        command.build(request, say)
    return pq.read_table(output).to_pandas()


def _feast(stack: Stack, labels: pd.DataFrame) -> pd.DataFrame:
    return stack.training_set(labels).sort_values("label_id").reset_index(drop=True)


def assert_same(fast: pd.DataFrame, feast: pd.DataFrame) -> None:
    """Value for value and type for type. One allowance: where Feast's python-mode
    on-demand transformation returns only nulls, Arrow types the column `null` (pandas
    object); the fast engine keeps the view's declared type. Both must be all null."""
    assert list(fast.columns) == list(feast.columns)
    for name in ("amount_to_avg_30d", "amount_over_avg_30d"):
        if feast[name].dtype == object and feast[name].isna().all():
            assert fast[name].isna().all(), name
            feast[name] = fast[name]
    pd.testing.assert_frame_equal(fast, feast, check_exact=True)


@settings(COSTLY_EXAMPLES, max_examples=12)
@given(
    customers=st.lists(_row, min_size=1, max_size=14),
    merchants=st.lists(_row, min_size=0, max_size=8),
    hours=st.lists(st.integers(0, 130), min_size=1, max_size=4),
)
def test_fast_engine_equals_feasts_postgres_path(
    dev: Stack,
    thin: tuple[FeatureStore, Path],
    tmp_path_factory: pytest.TempPathFactory,
    customers: list,
    merchants: list,
    hours: list,
) -> None:
    tables = _tables(_history(customers, "customer_id"), _history(merchants, "merchant_id"))
    dev.write(tables)
    labels = _labels(tables, hours)
    feast = _feast(dev, labels)
    tmp = tmp_path_factory.mktemp("prop")
    # Ray in chunks, so a chunk boundary falls inside the labels.
    for variant, chunk_rows in (("fast", 10_000), ("fast, no mirror", 10_000), ("ray", 97)):
        fast = _fast(dev, labels, tmp, chunk_rows, variant)
        assert len(fast) == len(labels) == len(feast), (variant, len(fast), len(labels), len(feast))
        assert_same(fast, feast.copy())
    # A thin client's get_historical_features, through the offline server's engine.
    assert_same(_thin(thin, labels), feast.copy())


def test_ray_workers_import_feast_as_the_command_does() -> None:
    """Without typeguard's instrumentation (`patches.import_feast_unchecked`): with it a
    fresh worker took seconds longer to its first task. A Ray started elsewhere in the
    session would lack the hook, so the engine starts its own."""
    import ray

    ray.shutdown()
    ray_engine.start({})

    def checked() -> bool:
        from feast import Entity
        from typeguard import TypeCheckError

        try:
            Entity(name=1, join_keys=["customer_id"])  # type: ignore[arg-type]
        except TypeCheckError:
            return True
        return False

    try:
        assert ray.get(ray.remote(checked).remote()) is False
    finally:
        ray.shutdown()  # before another test changes the environment (stacks.patched_environ)


def test_rows_appended_after_the_mirror_reach_the_training_set(
    dev: Stack, thin: tuple[FeatureStore, Path], tmp_path: Path
) -> None:
    """Late rows written by Feast's offline write (a push's path) after the mirrors copied
    the tables come through the change log to both the command's mirror and the offline
    server's own: every engine and the thin client still equal Feast's path, and neither
    mirror copies whole again."""
    customers = [(c, h, lag, c + h / 10) for c in (1, 2) for h in (0, 24) for lag in (0, 6)]
    tables = _tables(_history(customers, "customer_id"), _history([(1, 0, 2, 4.5)], "merchant_id"))
    dev.write(tables)
    labels = _labels(tables, [3, 30, 50])
    _fast(dev, labels, tmp_path, 10_000)  # the mirror copies the tables whole
    _thin(thin, labels)  # and the server's own
    server_copies = _copies(_server_mirror(thin))
    late = _tables(
        _history([(1, 25, 30, 77.5), (2, 1, 40, 8.25), (3, 24, None, 5.0)], "customer_id"),
        _history([(1, 1, 1, 2.5)], "merchant_id"),
    )
    with dev.active():
        store = dev.store()
        for name in ("customer_stats", "merchant_stats"):
            store.write_to_offline_store(name, late[name], allow_registry_cache=False)
    labels = _labels({k: pd.concat([tables[k], late[k]]) for k in tables}, [3, 30, 50, 70])
    feast = _feast(dev, labels)
    assert feast["avg_purchase_30d"].isin([77.5, 8.25, 5.0]).any(), "late rows in Feast's set"
    for variant in ENGINES:
        assert_same(_fast(dev, labels, tmp_path, 50, variant), feast.copy())
    mirrored = offline_mirror.refresh(
        lambda: psycopg.connect(offline_tables.postgres_conninfo(dev.settings(), _offline(dev))),
        "customer_stats",
        Path(dev.settings()[offline_mirror.DIR_VAR]),
        lambda _line: None,
    )
    assert not mirrored.full and len(mirrored.parts) == 2, "the late rows came as a delta"
    assert_same(_thin(thin, labels), feast.copy())
    assert _copies(_server_mirror(thin)) == server_copies, "no whole copy by the server"
    for manifest in _server_mirror(thin).glob("*/*stats/manifest.json"):
        assert len(json.loads(manifest.read_text())["parts"]) == 2, manifest


def _copies(root: Path) -> dict[str, str]:
    """Table directory -> the whole copy its manifest names (new at each whole copy)."""
    return {
        m.parent.name: json.loads(m.read_text())["copy"] for m in root.glob("*/*/manifest.json")
    }


def test_after_the_materialization_job_a_training_set_copies_nothing_whole(
    dev: Stack, tmp_path: Path
) -> None:
    """The materialization job brings the mirror up to date: tables replaced before it
    (`write` replaces them, as the generator does) are copied whole by the job, so the
    training set after it finds the mirror current, its rows still Feast's."""
    customers = [(c, h, 1, c + h / 10) for c in (1, 2, 3) for h in (0, 24)]
    tables = _tables(_history(customers, "customer_id"), _history([(1, 0, 2, 4.5)], "merchant_id"))
    dev.write(tables)
    dev.materialize()
    labels = _labels(tables, [3, 30])
    said: list[str] = []
    fast = _fast(dev, labels, tmp_path, 10_000, say=said.append)
    refreshed = [line for line in said if line.lstrip().startswith("mirror ")]
    assert len(refreshed) == len(TTL), said
    assert all("brought up to date, 0 rows" in line for line in refreshed), refreshed
    assert_same(fast, _feast(dev, labels))


def _offline(stack: Stack) -> str:
    return stack.settings()["OFFLINE_DB"]


@pytest.fixture(scope="module")
def written(dev: Stack) -> dict[str, pd.DataFrame]:
    """A fixed history for the tests below (the property test rewrites the tables)."""
    customers = [
        (c, h, lag, c * 10 + h / 10)
        for c in (1, 2, 3)
        for h in (0, 24, 48)
        for lag in (None, 1, 30)
    ]
    tables = _tables(_history(customers, "customer_id"), _history([(1, 0, 2, 4.5)], "merchant_id"))
    dev.write(tables)
    return tables


def _requests_since(log: Path, mark: int) -> list[str]:
    with log.open("rb") as read:
        read.seek(mark)
        lines = read.read().decode().splitlines()
    return [line for line in lines if line.startswith("training set: ")]


@pytest.mark.parametrize("server", ["thin", "thin_copy"])
def test_a_thin_client_gets_feasts_frame_from_the_platform_engine(
    dev: Stack, written: dict[str, pd.DataFrame], server: str, request: pytest.FixtureRequest
) -> None:
    """Feast's own frame, column for column and type for type (the label time naive UTC,
    as Feast's Postgres join returns it), built by the platform's engine over the server's
    own mirror and over rows read with COPY."""
    store, log = request.getfixturevalue(server)
    labels = _labels(written, [3, 30, 50])
    mark = log.stat().st_size
    frames = []
    for client in (store, dev.store()):
        job = client.get_historical_features(
            entity_df=labels, features=client.get_feature_service(FEATURE_SERVICE)
        )
        frames.append(job.to_df().sort_values("label_id").reset_index(drop=True))
    remote, direct = frames
    assert remote["avg_purchase_30d"].notna().any()
    assert_same(remote, direct)
    (line,) = _requests_since(log, mark)
    assert line.startswith(f"training set: platform engine, {len(labels):,} labels"), line


def test_what_the_engine_does_not_read_goes_through_feasts_join(
    dev: Stack, written: dict[str, pd.DataFrame], thin: tuple[FeatureStore, Path]
) -> None:
    store, log = thin
    labels = _labels(written, [3, 30])
    mark = log.stat().st_size
    features = ["customer_stats:avg_purchase_30d", "merchant_stats:avg_rating"]
    frames = []
    for client in (store, dev.store()):
        job = client.get_historical_features(
            entity_df=labels, features=features, full_feature_names=True
        )
        frames.append(job.to_df().sort_values("label_id").reset_index(drop=True))
    remote, direct = frames
    assert "customer_stats__avg_purchase_30d" in remote.columns
    pd.testing.assert_frame_equal(remote, direct, check_exact=True)
    (line,) = _requests_since(log, mark)
    assert line.startswith("training set: Feast's join (full_feature_names)"), line


def test_same_rows_whatever_the_chunking(
    dev: Stack, written: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    labels = _labels(written, [3, 50, 100]).sample(frac=1, random_state=3)  # not in time order
    results = [_fast(dev, labels, tmp_path, chunk_rows=n) for n in (1, 7, 10_000)]
    # On Ray: chunks of 7 on two tasks at once of one CPU each, all in one task of two.
    results += [_fast(dev, labels, tmp_path, n, "ray") for n in (7, 10_000)]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other, check_exact=True)
    assert results[0]["label_id"].tolist() == labels["label_id"].tolist(), "label order kept"
    assert results[0]["avg_purchase_30d"].notna().any()
    # Feast's path in chunks too, through the command: the same rows.
    path = tmp_path / "labels.parquet"
    labels.to_parquet(path, index=False)
    request = command.Request(
        env="dev",
        output=tmp_path / "feast.parquet",
        labels_path=path,
        chunk_rows=25,
        engine="feast",
    )
    with dev.active():
        command.build(request, lambda _line: None)
    assert_same(results[0], pq.read_table(tmp_path / "feast.parquet").to_pandas())


def _run_cli(dev: Stack, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with dev.active():
        code = cli.main(["training-set", "dev", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("dropped", "named"),
    [("customer_id", "customer_id"), ("event_timestamp", "event_timestamp"), ("amount", "amount")],
)
def test_labels_lacking_a_column_get_one_line_and_exit_2(
    dev: Stack,
    written: dict[str, pd.DataFrame],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    dropped: str,
    named: str,
) -> None:
    path = tmp_path / "labels.csv"
    _labels(written, [3]).drop(columns=[dropped]).to_csv(path, index=False)
    output = tmp_path / "out.parquet"
    code, err = _run_cli(dev, ["--labels", str(path), "--output", str(output)], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("training-set: ") and named in last, err
    assert "Traceback" not in err
    assert not output.exists()


def test_labels_from_sql_and_csv(
    dev: Stack, written: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--labels-sql runs on the offline store; a CSV file gives the same rows."""
    labels = _labels(written, [3, 50])
    dev.write({"labels": labels})
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    by_sql, by_csv = tmp_path / "sql.parquet", tmp_path / "csv.parquet"
    code, err = _run_cli(
        dev,
        ["--labels-sql", "SELECT * FROM labels ORDER BY label_id", "--output", str(by_sql)],
        capsys,
    )
    assert code == 0, err
    assert "rows/s" in err
    code, err = _run_cli(dev, ["--labels", str(csv), "--output", str(by_csv)], capsys)
    assert code == 0, err
    from_sql, from_csv = pq.read_table(by_sql).to_pandas(), pq.read_table(by_csv).to_pandas()
    assert_same(from_sql, _feast(dev, labels))
    pd.testing.assert_frame_equal(from_csv, from_sql, check_exact=True)

    code, err = _run_cli(
        dev,
        ["--labels-sql", "SELECT * FROM no_such_table", "--output", str(tmp_path / "x.parquet")],
        capsys,
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("training-set: --labels-sql failed")
    assert "password" not in err and "host=" not in err


def test_offline_tables_keep_every_value_through_copy(dev: Stack) -> None:
    """The generator's COPY keeps NULL apart from "" and "NA", NaN as NULL, times to the
    microsecond in UTC, across chunks."""
    frame = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "event_timestamp": pd.to_datetime(
                ["2026-01-10 00:00:00.000001", "2026-06-30 23:59:59.999999"] * 2, utc=True
            ),
            "home_country": ["", "NA", None, 'say "hi", then\nleave'],
            "avg_rating": [1.5, float("nan"), -0.1, 1e-300],
            "is_new": [True, False, True, False],
        }
    )
    settings = dev.settings()
    with patch.object(offline_tables, "COPY_CHUNK_ROWS", 3):
        offline_tables.write(settings, {"round_trip": frame})
    back = offline_tables.read(settings, "round_trip").sort_values("customer_id")
    assert back["home_country"].tolist() == ["", "NA", None, 'say "hi", then\nleave']
    assert back["avg_rating"].isna().tolist() == [False, True, False, False]
    assert back["avg_rating"].dropna().tolist() == [1.5, -0.1, 1e-300]
    assert back["is_new"].tolist() == [True, False, True, False]
    assert list(back["event_timestamp"]) == list(frame["event_timestamp"])


def _connections_to(stack: Stack, database: str) -> int:
    """This process's open connections to `database` (its TCP connections to Postgres)."""
    import psutil

    settings = stack.settings()
    port = int(settings["POSTGRES_PORT"])
    mine = {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port
    }
    with psycopg.connect(offline_tables.postgres_conninfo(settings, "postgres")) as conn:
        ports = conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return sum(1 for (client_port,) in ports if client_port in mine)


def test_a_training_set_leaves_no_registry_connection_open(dev: Stack, tmp_path: Path) -> None:
    """Each run in a long-lived process (a notebook, a test session) kept its registry's
    connection pool and refresh timer: a few runs, and Postgres refused new clients."""
    labels = pd.DataFrame(
        {"customer_id": [1], "merchant_id": [1], "amount": [1.0], "label_id": [0],
         "event_timestamp": [pd.Timestamp(AS_OF)]}
    )  # fmt: skip
    registry = dev.settings()["REGISTRY_DB"]
    before = _connections_to(dev, registry)
    for _ in range(3):
        _fast(dev, labels, tmp_path, 10_000)
    assert _connections_to(dev, registry) == before


def test_the_offline_server_copies_its_mirror_before_listening_or_leaves_it_to_a_request(
    dev: Stack, tmp_path: Path
) -> None:
    """`serve-offline` brings its mirror up to date before it listens (every view's
    Postgres table copied whole the first time); when it cannot (here, its directory
    cannot be made) it says so and starts all the same."""
    with dev.active():
        store = dev.store()
    settings = {**dev.settings(), offline_mirror.DIR_VAR: str(tmp_path / "mirror")}
    said: list[str] = []
    server_join.warm_mirror(store, settings, said.append)
    copied = [line for line in said if "copied whole (no mirror yet)" in line]
    tables = {postgres_table(v.batch_source) for v in store.list_feature_views()}
    assert len(copied) == len(tables) > 0, said
    assert len(list((tmp_path / "mirror").glob("*/*/manifest.json"))) == len(tables)
    said.clear()
    server_join.warm_mirror(store, settings, said.append)
    assert not [line for line in said if "copied whole" in line], said

    (tmp_path / "a-file").write_text("")
    broken = {**settings, offline_mirror.DIR_VAR: str(tmp_path / "a-file" / "mirror")}
    said.clear()
    server_join.warm_mirror(store, broken, said.append)
    assert said[-1].startswith("offline server: mirror not brought up to date"), said
    assert "a-file" in said[-1], said


def test_the_offline_server_refreshes_its_mirror_between_requests(
    dev: Stack, tmp_path: Path
) -> None:
    """Every OFFLINE_MIRROR_REFRESH_SECONDS the server brings its mirror up to date with
    no request: a table a statement marked (an erasure's DELETE; here an UPDATE of no
    row, which fires the same trigger) is copied whole, and the refresh after drops the
    previous copy's files."""
    with dev.active():
        store = dev.store()
    settings = {
        **dev.settings(),
        offline_mirror.DIR_VAR: str(tmp_path / "mirror"),
        server_join.REFRESH_VAR: "0.2",
    }
    server_join.warm_mirror(store, settings, lambda _line: None)
    (manifest,) = (tmp_path / "mirror").glob("*/*.customer_stats/manifest.json")
    first = set(json.loads(manifest.read_text())["parts"])
    said: list[str] = []
    refreshing = server_join.keep_mirror_current(store, settings, said.append)
    assert refreshing is not None
    try:
        conninfo = offline_tables.postgres_conninfo(dev.settings(), _offline(dev))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("UPDATE customer_stats SET n_purchases_7d = 0 WHERE false")
        eventually(
            lambda: any("customer_stats copied whole (" in line for line in said),
            "the marked table copied whole with no request",
        )
        eventually(
            lambda: not any((manifest.parent / part).exists() for part in first),
            "the previous copy's files dropped",
        )
        # A refresh that cannot read the registry is said, and the next one runs.
        said.clear()
        with patch.object(store, "list_feature_views", side_effect=RuntimeError("registry down")):
            eventually(lambda: len(said) >= 2, "two failed refreshes said")
        assert said[0] == "offline server: mirror not refreshed: RuntimeError: registry down"
    finally:
        refreshing.stop()


def _positions(dev: Stack, mirror: Path) -> set[tuple[str, str]]:
    """The places in the change log the mirror under `mirror` holds."""
    ids = {json.loads(path.read_text())["mirror_id"] for path in mirror.glob("*/*/manifest.json")}
    conninfo = offline_tables.postgres_conninfo(dev.settings(), _offline(dev))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, mirror_id FROM feature_platform_mirror_positions"
        ).fetchall()
    return {(table, mirror_id) for table, mirror_id in rows if mirror_id in ids}


@pytest.mark.parametrize("release", ["true", ""])
def test_a_stopping_offline_server_gives_up_its_mirrors_places_where_told(
    dev: Stack, tmp_path: Path, release: str
) -> None:
    """With OFFLINE_MIRROR_RELEASE_AT_EXIT (the chart sets it for a mirror on the pod's
    emptyDir), SIGTERM ends the server's refreshes and gives up its mirror's places in the
    change log; without it (a mirror on a claim outlives the pod) they stay."""
    log, mirror = tmp_path / "offline.log", tmp_path / "mirror"
    server = dev.offline_server(
        log,
        **{
            offline_mirror.DIR_VAR: str(mirror),
            server_join.REFRESH_VAR: "0.2",
            server_join.RELEASE_VAR: release,
        },
    )
    held = _positions(dev, mirror)
    assert held, "the mirror copied before the server listened holds its places"
    assert server.stop() == 0
    said = log.read_text()
    if release:
        assert _positions(dev, mirror) == set()
        assert f"gave up the mirror's place in the change log of {len(held)} tables" in said
    else:
        assert _positions(dev, mirror) == held
        assert "gave up" not in said


def test_the_offline_servers_refresh_interval_is_checked() -> None:
    assert server_join.refresh_seconds({}) == server_join.DEFAULT_REFRESH_S
    assert server_join.refresh_seconds({server_join.REFRESH_VAR: "0"}) == 0
    for bad in ("-1", "soon"):
        with pytest.raises(ConfigError, match=server_join.REFRESH_VAR):
            server_join.refresh_seconds({server_join.REFRESH_VAR: bad})
