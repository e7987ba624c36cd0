"""The fast point-in-time join: labels and feature rows staged in DuckDB, one `ASOF` join
per view for all labels, read out in chunks, Feast's own on-demand transformations on
each chunk.

The platform's rule (`stores/training_rule.py`) as an ASOF join. A row with event time
e and creation time c (NULL: e) is usable by a label at t once e <= t and c <= t, that
is from its visibility time v = max(e, c). Among the usable rows the newest (e, then c)
wins. So per entity, rows ordered by v, the running arg-max of (e, c) is the winner
from v on: one window pass builds that table, and a label takes the winner with the
largest v <= t (an ASOF join). The ttl is then checked on the winner alone,
`e >= t - int(ttl seconds)`: if the newest usable row is too old, so is every other.

Only what the labels need is staged: rows of the labels' entities whose event time can
fall inside some label's ttl window and that were visible by the last label. Postgres
rows come out with COPY (`postgres_copy`), parquet rows are read by DuckDB in place.
DuckDB works in a database file under a memory limit, spilling to disk past it; the
Python side holds one chunk at a time: memory depends on the chunk size and that limit,
not on the label count.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from feast import FeatureService, FeatureStore, FeatureView, utils
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.utils.postgres.connection_utils import _get_conn_kwargs, _get_conninfo
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.type_map import feast_value_type_to_pa
from psycopg import sql

from feature_platform.stores.duckdb_offline import DuckDBOfflineStoreConfig
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig
from feature_platform.training import postgres_copy
from feature_platform.training.labels import TIMESTAMP, LabelError

# DuckDB's share of the machine: past it, it spills to its work directory.
MEMORY_LIMIT = "1GB"
ROW, LABEL_US = "__row", "__label_us"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ViewJoin:
    """One feature view's part of the join."""

    name: str
    source: Any
    label_keys: list[str]  # the label columns it joins on
    source_keys: list[str]
    features: list[str]
    timestamp: str
    created: str | None
    ttl_us: int  # 0: no limit, as in Feast


@dataclass(frozen=True)
class Plan:
    views: list[ViewJoin]
    odfvs: list[tuple[OnDemandFeatureView, set[str]]]
    request_columns: list[str]

    def required_columns(self) -> list[str]:
        keys = [k for view in self.views for k in view.label_keys]
        return list(dict.fromkeys([*keys, TIMESTAMP, *self.request_columns]))


def plan(store: FeatureStore, features: list[str] | FeatureService) -> Plan:
    """What the join reads, resolved the way `get_historical_features` resolves it."""
    refs = utils._get_features(store.registry, store.project, features, allow_cache=True)
    all_views, all_odfvs = utils._get_feature_views_to_use(
        store.registry, store.project, features, allow_cache=True
    )
    for odfv in all_odfvs:
        odfv.write_to_online_store = False
    grouped, odfvs = utils._group_feature_refs(refs, all_views, all_odfvs)
    # Feast's order: the requested references, then what on-demand views need.
    ordered = list(refs)
    for view, names in grouped:
        ordered += [f"{view.projection.name_to_use()}:{n}" for n in names]
    by_view: dict[str, list[str]] = {}
    odfv_names = {odfv.projection.name_to_use() for odfv, _ in odfvs}
    for ref in dict.fromkeys(ordered):
        view_name, feature = ref.split(":", 1)
        if view_name not in odfv_names:
            by_view.setdefault(view_name, []).append(feature)
    views = {view.projection.name_to_use(): view for view, _ in grouped}
    joins = [_view_join(views[name], names) for name, names in by_view.items()]
    seen: set[str] = set()
    for join in joins:
        clash = seen & set(join.features)
        if clash:
            raise LabelError(f"feature names {sorted(clash)} appear in more than one view")
        seen |= set(join.features)
    request = [name for odfv, _ in odfvs for name in odfv.get_request_data_schema()]
    return Plan(joins, [(o, set(n)) for o, n in odfvs], list(dict.fromkeys(request)))


def _view_join(view: FeatureView | OnDemandFeatureView, features: list[str]) -> ViewJoin:
    source = getattr(view, "batch_source", None)
    if not isinstance(view, FeatureView) or source is None:
        raise LabelError(f"{view.name}: no batch source to read features from")
    keys = [column.name for column in view.entity_columns]
    ttl = view.ttl or timedelta(0)
    return ViewJoin(
        name=view.projection.name_to_use(),
        source=source,
        label_keys=[view.projection.join_key_map.get(k, k) for k in keys],
        source_keys=keys,
        features=features,
        timestamp=source.timestamp_field,
        created=source.created_timestamp_column or None,
        ttl_us=int(ttl.total_seconds()) * 1_000_000,
    )


def unsupported(store: FeatureStore, plan: Plan) -> str | None:
    """Why the fast join does not apply to this store and plan; None when it does."""
    config = store.config.offline_store
    if getattr(config, "include_values_created_after_label", False):
        return "the offline store uses Feast's rule (include_values_created_after_label)"
    for view in plan.views:
        source = view.source
        if source.field_mapping:
            return f"{view.name}: its source renames columns (field_mapping)"
        if isinstance(config, PostgreSQLOfflineStoreConfig):
            if not isinstance(source, PostgreSQLSource):
                return f"{view.name}: not a PostgreSQLSource"
        elif isinstance(config, DuckDBOfflineStoreConfig):
            if not isinstance(source, FileSource) or not isinstance(
                source.file_format or ParquetFormat(), ParquetFormat
            ):
                return f"{view.name}: not a parquet FileSource"
        else:
            return f"offline store {config.type} has no fast join"
    return None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Stage:
    """A DuckDB database in `work_dir` holding the labels and, per view, the winners."""

    def __init__(self, work_dir: Path, threads: int = 2) -> None:
        self.con = duckdb.connect(str(work_dir / "stage.duckdb"))
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute(f"SET threads = {threads}")
        self.con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
        self.con.execute("SET preserve_insertion_order = false")
        # Times with a zone come back in UTC, named as pandas and Feast name it.
        self.con.execute("SET TimeZone = 'UTC'")
        self.work_dir = work_dir
        self.rows = 0
        self.joined: list[str] = []  # the joined table's columns, once joined

    def close(self) -> None:
        self.con.close()

    # -- labels ---------------------------------------------------------------------

    def add_labels(self, batches: Iterator[pa.RecordBatch], plan: Plan, say: Progress) -> int:
        """Stage every label batch, numbered in input order; check the columns."""
        for batch in batches:
            if self.rows == 0:
                missing = [c for c in plan.required_columns() if c not in batch.schema.names]
                if missing:
                    raise LabelError(
                        f"labels lack column(s) the features need: {', '.join(missing)}"
                    )
                reserved = {ROW, LABEL_US} & set(batch.schema.names)
                if reserved:
                    raise LabelError(f"labels may not have columns named {sorted(reserved)}")
            batch = _microseconds(batch)
            numbered = batch.append_column(
                ROW, pa.array(range(self.rows, self.rows + batch.num_rows), pa.int64())
            )
            self.con.register("label_batch", numbered)
            select = f"SELECT *, epoch_us({_ident(TIMESTAMP)}) AS {LABEL_US} FROM label_batch"
            if self.rows == 0:
                self.con.execute(f"CREATE TABLE labels AS {select}")
            else:
                self.con.execute(f"INSERT INTO labels BY NAME {select}")
            self.con.unregister("label_batch")
            self.rows += batch.num_rows
            say(f"  labels: {self.rows:,} rows staged")
        return self.rows

    def label_columns(self) -> list[str]:
        names = [row[0] for row in self.con.execute("DESCRIBE labels").fetchall()]
        return [n for n in names if n not in (ROW, LABEL_US)]

    def labels(self, start: int, stop: int) -> pa.Table:
        columns = ", ".join(_ident(c) for c in self.label_columns())
        return self.con.sql(
            f"SELECT {columns}, {ROW} FROM labels WHERE {ROW} >= {start} AND {ROW} < {stop} "
            f"ORDER BY {ROW}"
        ).to_arrow_table()

    def _label_range(self) -> tuple[int, int]:
        lo, hi = self.con.execute(f"SELECT min({LABEL_US}), max({LABEL_US}) FROM labels").fetchone()  # type: ignore[misc]
        return int(lo), int(hi)

    # -- feature rows ---------------------------------------------------------------

    def add_view(self, i: int, view: ViewJoin, store: FeatureStore, say: Progress) -> None:
        """Stage the rows the labels can use, then reduce them to the winners table."""
        started = time.monotonic()
        first, hi = self._label_range()
        lo = first - view.ttl_us if view.ttl_us else None
        table = f"rows_{i}"
        if isinstance(view.source, PostgreSQLSource):
            self._rows_from_postgres(table, view, store, lo, hi)
        else:
            self._rows_from_parquet(table, view, store, lo, hi)
        (n_rows,) = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
        self.reduce_to_winners(i, view)
        say(f"  {view.name}: {n_rows:,} rows staged in {time.monotonic() - started:.1f}s")

    def _columns(self, view: ViewJoin) -> list[str]:
        return [*view.source_keys, view.timestamp, *view.features]

    def _rows_from_postgres(
        self, table: str, view: ViewJoin, store: FeatureStore, lo: int | None, hi: int
    ) -> None:
        config = store.config.offline_store
        ts = sql.Identifier(view.timestamp)
        created = (
            sql.SQL("COALESCE({}, {})").format(sql.Identifier(view.created), ts)
            if view.created
            else ts
        )
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in view.source_keys)
        source = sql.SQL(view.source.get_table_query_string())
        where = [
            sql.SQL("{} <= {}").format(ts, sql.Literal(_stamp(hi))),
            sql.SQL("{} <= {}").format(created, sql.Literal(_stamp(hi))),
            sql.SQL("({}) IN (SELECT {} FROM pg_temp.label_keys)").format(keys, keys),
        ]
        if lo is not None:
            where.append(sql.SQL("{} >= {}").format(ts, sql.Literal(_stamp(lo))))
        query = sql.SQL("SELECT {}, {} AS __event, {} AS __created FROM {} AS src WHERE {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in [*view.source_keys, *view.features]),
            ts,
            created,
            source,
            sql.SQL(" AND ").join(where),
        )
        with psycopg.connect(_get_conninfo(config), **_get_conn_kwargs(config)) as conn:
            conn.execute(
                sql.SQL("CREATE TEMP TABLE label_keys AS SELECT {} FROM {} AS src LIMIT 0").format(
                    keys, source
                )
            )
            label_keys = self._distinct_keys(view)
            with conn.cursor() as cur:
                copy_keys = sql.SQL("COPY pg_temp.label_keys ({}) FROM STDIN").format(keys)
                with cur.copy(copy_keys) as copy:
                    for row in label_keys:
                        copy.write_row(row)
            conn.execute("ANALYZE pg_temp.label_keys")
            schema, batches = postgres_copy.stream(conn, query, self.work_dir)
        # The table from an empty batch of the result's schema, so no rows is no error.
        for n, batch in enumerate(itertools.chain([schema.empty_table()], batches)):
            self.con.register("row_batch", batch)
            select = self._rows_select(view, "row_batch")
            if n == 0:
                self.con.execute(f"CREATE TABLE {table} AS {select}")
            else:
                self.con.execute(f"INSERT INTO {table} {select}")
            self.con.unregister("row_batch")

    def _rows_select(self, view: ViewJoin, relation: str) -> str:
        keys = [f"{_ident(k)} AS __k{j}" for j, k in enumerate(view.source_keys)]
        feats = [f"{_ident(f)} AS __f{j}" for j, f in enumerate(view.features)]
        return (
            f"SELECT {', '.join(keys)}, epoch_us(__event) AS __event, "
            f"epoch_us(__created) AS __created{''.join(', ' + f for f in feats)} FROM {relation}"
        )

    def _rows_from_parquet(
        self, table: str, view: ViewJoin, store: FeatureStore, lo: int | None, hi: int
    ) -> None:
        path = FileSource.get_uri_for_file_path(store.config.repo_path, view.source.path)
        ts = _ident(view.timestamp)
        created = f"COALESCE({_ident(view.created)}, {ts})" if view.created else ts
        keys = ", ".join(_ident(k) for k in view.source_keys)
        label_keys = ", ".join(_ident(k) for k in view.label_keys)
        columns = ", ".join(_ident(c) for c in [*view.source_keys, *view.features])
        where = [
            f"epoch_us({ts}) <= {hi}",
            f"epoch_us({created}) <= {hi}",
            f"({keys}) IN (SELECT ({label_keys}) FROM labels)",
        ]
        if lo is not None:
            where.append(f"epoch_us({ts}) >= {lo}")
        source = (
            f"(SELECT {columns}, {ts} AS __event, {created} AS __created "
            f"FROM read_parquet('{path}') WHERE {' AND '.join(where)})"
        )
        self.con.execute(f"CREATE TABLE {table} AS {self._rows_select(view, source)}")

    def _distinct_keys(self, view: ViewJoin) -> list[tuple[Any, ...]]:
        keys = ", ".join(_ident(k) for k in view.label_keys)
        not_null = " AND ".join(f"{_ident(k)} IS NOT NULL" for k in view.label_keys)
        return self.con.execute(f"SELECT DISTINCT {keys} FROM labels WHERE {not_null}").fetchall()

    def reduce_to_winners(self, i: int, view: ViewJoin) -> None:
        """`rows_{i}` (keys, __event, __created, features as epoch microseconds and
        values) to `win_{i}`: per entity and visibility time, the winning row."""
        keys = [f"__k{j}" for j in range(len(view.source_keys))]
        feats = [f"__f{j}" for j in range(len(view.features))]
        best = ", ".join(f"{f} := {f}" for f in ["__event", *feats])
        self.con.execute(
            f"""
            CREATE TABLE win_{i} AS
            SELECT {", ".join(keys)}, __visible,
                {", ".join(f"__best.{f} AS {f}" for f in ["__event", *feats])}
            FROM (
                SELECT {", ".join(keys)}, greatest(__event, __created) AS __visible,
                    arg_max(struct_pack({best}), struct_pack(e := __event, c := __created))
                        OVER (PARTITION BY {", ".join(keys)}
                              ORDER BY greatest(__event, __created)) AS __best
                FROM rows_{i}
            )
            QUALIFY row_number() OVER (PARTITION BY {", ".join(keys)}, __visible) = 1
            """
        )
        self.con.execute(f"DROP TABLE rows_{i}")

    # -- the join -------------------------------------------------------------------

    def join(self, plan: Plan, start: int, stop: int) -> pa.Table:
        """Labels [start, stop) with their features, in label order."""
        if not self.joined:
            self._join_all(plan)
        columns = ", ".join(_ident(c) for c in self.joined)
        table = self.con.sql(
            f"SELECT {columns} FROM joined WHERE {ROW} >= {start} AND {ROW} < {stop} ORDER BY {ROW}"
        ).to_arrow_table()
        return on_demand(plan, table)

    def _join_all(self, plan: Plan) -> None:
        """The ASOF joins for every label at once, into the `joined` table: an ASOF join
        sorts its right side, so one join beats one per chunk; DuckDB spills what does
        not fit its memory limit. Chunks are then read out of it in label order."""
        selected = [f"l.{_ident(c)}" for c in self.label_columns()]
        names = [*self.label_columns()]
        joins = []
        for i, view in enumerate(plan.views):
            on = " AND ".join(f"l.{_ident(k)} = w{i}.__k{j}" for j, k in enumerate(view.label_keys))
            joins.append(
                f"ASOF LEFT JOIN win_{i} AS w{i} ON {on} AND l.{LABEL_US} >= w{i}.__visible"
            )
            for j, feature in enumerate(view.features):
                value = f"w{i}.__f{j}"
                if view.ttl_us:
                    value = (
                        f"CASE WHEN w{i}.__event >= l.{LABEL_US} - {view.ttl_us} THEN {value} END"
                    )
                selected.append(f"{value} AS {_ident(feature)}")
                names.append(feature)
        self.con.execute(
            f"CREATE TABLE joined AS SELECT l.{ROW}, {', '.join(selected)} FROM labels AS l "
            f"{' '.join(joins)}"
        )
        for i in range(len(plan.views)):
            self.con.execute(f"DROP TABLE win_{i}")
        self.joined = names


def on_demand(plan: Plan, table: pa.Table) -> pa.Table:
    """Feast's on-demand transformations over a joined chunk, their columns appended as
    Feast's retrieval job appends them, in their declared types (a chunk whose values
    are all null would otherwise get Arrow's null type)."""
    keys = {k for view in plan.views for k in view.label_keys} | {TIMESTAMP}
    for odfv, requested in plan.odfvs:
        declared = {f.name: feast_value_type_to_pa(f.dtype.to_value_type()) for f in odfv.features}
        # Only the transformation's inputs (its sources' features, its request data, the
        # keys and the label time): a python-mode transformation converts every column
        # it is given to Python objects, five times the work on the whole row.
        inputs = keys | set(odfv.get_request_data_schema())
        for projection in odfv.source_feature_view_projections.values():
            inputs |= {f.name for f in projection.features}
            inputs |= {f"{projection.name}__{f.name}" for f in projection.features}
        given = table.select([name for name in table.column_names if name in inputs])
        transformed = odfv.transform_arrow(given, full_feature_names=False)
        for name in transformed.column_names:
            if name in requested:
                table = table.append_column(name, transformed[name].cast(declared[name]))
    return table


def _microseconds(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The label time in microseconds, as Postgres holds times (nanoseconds truncated,
    as Feast's upload of a pandas frame truncates them)."""
    i = batch.schema.get_field_index(TIMESTAMP)
    kind = batch.schema.field(i).type
    if kind.unit == "us":
        return batch
    column = batch.column(i).cast(pa.timestamp("us", tz=kind.tz), safe=False)
    return batch.set_column(i, TIMESTAMP, column)


def _stamp(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
