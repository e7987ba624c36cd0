"""The fast point-in-time join: labels and feature rows staged in DuckDB, one `ASOF` join
per view for all labels, read out in chunks, Feast's own on-demand transformations on
each chunk.

The platform's rule (`stores/training_rule.py`) as an ASOF join. A row with event time
e and creation time c (NULL: e) is usable by a label at t once e <= t and c <= t, that
is from its visibility time v = max(e, c). Among the usable rows the newest (e, then c)
wins. So per entity, rows ordered by v, a row wins from its v on exactly when its (e, c)
is the running maximum; the earlier such row keeps winning until the next. One window
pass keeps those rows, and a label takes the one with the largest v <= t (an ASOF join).
The ttl is then checked on the winner alone, `e >= t - int(ttl seconds)`: if the newest
usable row is too old, so is every other.

Only what the labels need is staged: rows of the labels' entities whose event time can
fall inside some label's ttl window and that were visible by the last label. Parquet
rows are read by DuckDB in place: a file source's, or a Postgres table's through the
offline mirror (`offline_mirror`, brought up to date first); without a mirror, Postgres
rows come out with COPY (`postgres_copy`).
DuckDB holds its tables as temporary ones (no compression and write to the database
file) under a memory limit, spilling to its work directory past it; the Python side
holds a few chunks at a time (one read ahead, one transformed, one being written):
memory depends on the chunk size and that limit, not on the label count.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from feast import FeatureService, FeatureStore, FeatureView
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.transformation.python_transformation import PythonTransformation
from feast.type_map import feast_value_type_to_pa
from psycopg import sql

from feature_platform.console import Say
from feature_platform.feast_seam import feature_refs
from feature_platform.feast_seam.stores import (
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import postgres_copy
from feature_platform.quality import suspects
from feature_platform.quality.database import Target
from feature_platform.quality.expectations import Expectations
from feature_platform.quality.screen import screen
from feature_platform.stores.duckdb_offline import DuckDBOfflineStoreConfig
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig
from feature_platform.training.labels import TIMESTAMP, LabelError

# DuckDB's share of the machine: past it, it spills to its work directory.
MEMORY_LIMIT = "1GB"
ROW, LABEL_US = "__row", "__label_us"


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
class Screening:
    """A view's expectations, and the quarantine table rows set aside are recorded in."""

    expected: Expectations
    target: Target


@dataclass(frozen=True)
class Plan:
    views: list[ViewJoin]
    odfvs: list[tuple[OnDemandFeatureView, set[str]]]
    request_columns: list[str]

    def feature_columns(self) -> list[str]:
        """The columns the join appends to the labels'."""
        odfv_features = [
            f.name for odfv, names in self.odfvs for f in odfv.features if f.name in names
        ]
        return [*(f for view in self.views for f in view.features), *odfv_features]

    def required_columns(self) -> list[str]:
        keys = [k for view in self.views for k in view.label_keys]
        return list(dict.fromkeys([*keys, TIMESTAMP, *self.request_columns]))


def plan(store: FeatureStore, features: list[str] | FeatureService) -> Plan:
    """What the join reads, resolved the way `get_historical_features` resolves it."""
    refs, grouped, odfvs = feature_refs.resolve(store, features)
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


def view_files(
    store: FeatureStore, plan: Plan, settings: Mapping[str, str], say: Say
) -> list[list[str] | None]:
    """Per view, the parquet files holding its rows: a file source's own, or the offline
    mirror's copy of a Postgres table (the tables refreshed first, several at once) when
    `OFFLINE_MIRROR_DIR` is set; None where the rows must come out of Postgres."""
    mirror_dir = settings.get(offline_mirror.DIR_VAR)
    refreshed: dict[str, offline_mirror.Mirrored] = {}
    if mirror_dir:
        sources = [view.source for view in plan.views]
        config = store.config.offline_store
        keep = offline_mirror.keep(settings)
        refreshed = offline_mirror.refresh_sources(config, sources, Path(mirror_dir), say, keep)
    files: list[list[str] | None] = []
    for view in plan.views:
        source = view.source
        name = postgres_table(source) if isinstance(source, PostgreSQLSource) else ""
        if isinstance(source, FileSource):
            files.append([FileSource.get_uri_for_file_path(store.config.repo_path, source.path)])
        elif name in refreshed:
            files.append([str(p) for p in refreshed[name].parts])
        else:
            files.append(None)
    return files


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Stage:
    """A DuckDB database in `work_dir` holding the labels and, per view, the winners
    and their join to the labels."""

    def __init__(self, work_dir: Path, threads: int = 2) -> None:
        self.con = duckdb.connect(str(work_dir / "stage.duckdb"))
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute(f"SET threads = {threads}")
        self.con.execute(f"SET temp_directory = '{work_dir / 'spill'}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")
        # Times with a zone come back in UTC, named as pandas and Feast name it.
        self.con.execute("SET TimeZone = 'UTC'")
        self.work_dir = work_dir
        self.rows = 0
        self.joined: list[str] = []  # the joined tables' columns, once joined
        self._reader: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.shutdown(cancel_futures=True)  # waits for a read under way
        self.con.close()

    # -- labels ---------------------------------------------------------------------

    def add_labels(self, batches: Iterator[pa.RecordBatch], plan: Plan, say: Say) -> int:
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
                # The training set would hold two columns of that name.
                clash = set(plan.feature_columns()) & set(batch.schema.names)
                if clash:
                    raise LabelError(f"labels have column(s) named like features: {sorted(clash)}")
            batch = _microseconds(batch)
            numbered = batch.append_column(
                ROW, pa.array(range(self.rows, self.rows + batch.num_rows), pa.int64())
            )
            self.con.register("label_batch", numbered)
            select = f"SELECT *, epoch_us({ident(TIMESTAMP)}) AS {LABEL_US} FROM label_batch"
            if self.rows == 0:
                self.con.execute(f"CREATE TEMP TABLE labels AS {select}")
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
        columns = ", ".join(ident(c) for c in self.label_columns())
        return self.con.sql(
            f"SELECT {columns}, {ROW} FROM labels WHERE {ROW} >= {start} AND {ROW} < {stop} "
            f"ORDER BY {ROW}"
        ).to_arrow_table()

    def _label_range(self) -> tuple[int, int]:
        lo, hi = self.con.execute(f"SELECT min({LABEL_US}), max({LABEL_US}) FROM labels").fetchone()  # type: ignore[misc]
        return int(lo), int(hi)

    # -- feature rows ---------------------------------------------------------------

    def add_view(
        self,
        i: int,
        view: ViewJoin,
        files: list[str] | None,
        say: Say,
        store: FeatureStore | None = None,
        screening: Screening | None = None,
    ) -> None:
        """Stage the rows the labels can use, from the view's parquet `files` or, without
        them, out of its Postgres table (the `store`'s), judge them against the view's
        expectations (`screening`), then reduce them to winners."""
        started = time.monotonic()
        first, hi = self._label_range()
        lo = first - view.ttl_us if view.ttl_us else None
        table = f"rows_{i}"
        if files is not None:
            self._rows_from_parquet(table, view, files, lo, hi)
        else:
            assert store is not None and isinstance(view.source, PostgreSQLSource)
            self._rows_from_postgres(table, view, store, lo, hi)
        if screening is not None:
            self._screen(table, view, screening, say)
        (n_rows,) = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
        self.reduce_to_winners(i, view)
        say(f"  {view.name}: {n_rows:,} rows staged in {time.monotonic() - started:.1f}s")

    def _screen(self, table: str, view: ViewJoin, screening: Screening, say: Say) -> None:
        """The staged rows against the view's expectations on the features joined, as
        materialization judges the rows it loads: under `refuse` a broken rule raises
        `Refused`; under `quarantine` the rows breaking one are recorded in the
        quarantine table and left out of the training set (materialization, judging the
        same rows, keeps them out of Redis and withdraws them from the offline table)."""
        expected = screening.expected
        judged = Expectations(
            expected.view,
            expected.policy,
            {f: rule for f, rule in expected.features.items() if f in view.features},
        )
        if not judged.features:
            return
        started = time.monotonic()
        if self._all_clean(table, view, judged):
            (n_rows,) = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
            say(
                f"  {view.name}: {n_rows:,} rows checked against its expectations in "
                f"{time.monotonic() - started:.1f}s, 0 quarantined (none suspect)"
            )
            return
        columns = [
            *(f"__k{j} AS {ident(k)}" for j, k in enumerate(view.source_keys)),
            f"make_timestamp(__event) AS {ident(view.timestamp)}",
            *(f"__f{j} AS {ident(f)}" for j, f in enumerate(view.features) if f in judged.features),
        ]
        rows = self.con.execute(f"SELECT rowid AS __rowid, {', '.join(columns)} FROM {table}").df()
        ids = rows.pop("__rowid")
        set_aside = screen(
            [judged], rows, screening.target, "training", datetime.now(UTC), view.source_keys
        )
        if set_aside:
            gone = pa.table({"id": ids.iloc[set_aside].to_numpy()})  # noqa: F841 (read by DuckDB)
            self.con.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT id FROM gone)")
        say(
            f"  {view.name}: {len(rows):,} rows checked against its expectations in "
            f"{time.monotonic() - started:.1f}s, {len(set_aside):,} quarantined"
        )

    def _all_clean(self, table: str, view: ViewJoin, judged: Expectations) -> bool:
        """No staged row may break a rule (`quality.suspects`): judging them row by row
        would set none aside."""
        kinds = {row[0]: row[1] for row in self.con.execute(f"DESCRIBE {table}").fetchall()}
        columns = {
            f: (f"__f{j}", kinds[f"__f{j}"])
            for j, f in enumerate(view.features)
            if f in judged.features
        }
        return suspects.all_clean(self.con, table, judged.features, columns)

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
        with psycopg.connect(postgres_conninfo(config), **postgres_conn_kwargs(config)) as conn:
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
        keys = [f"{ident(k)} AS __k{j}" for j, k in enumerate(view.source_keys)]
        feats = [f"{ident(f)} AS __f{j}" for j, f in enumerate(view.features)]
        return (
            f"SELECT {', '.join(keys)}, epoch_us(__event) AS __event, "
            f"epoch_us(__created) AS __created{''.join(', ' + f for f in feats)} FROM {relation}"
        )

    def _rows_from_parquet(
        self, table: str, view: ViewJoin, files: list[str], lo: int | None, hi: int
    ) -> None:
        paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        ts = ident(view.timestamp)
        created = f"COALESCE({ident(view.created)}, {ts})" if view.created else ts
        columns = ", ".join(ident(c) for c in [*view.source_keys, *view.features])
        # Per entity, only rows its own labels can use: visible by its last label and,
        # under a ttl, not too old for its first (such a row could only win to be
        # dropped by the ttl, and so could any older row that would win instead).
        span_keys = ", ".join(f"{ident(k)} AS __s{j}" for j, k in enumerate(view.label_keys))
        on = " AND ".join(f"src.{ident(k)} = s.__s{j}" for j, k in enumerate(view.source_keys))
        where = [
            f"epoch_us({ts}) <= {hi}",
            f"epoch_us({created}) <= {hi}",
            f"greatest(epoch_us({ts}), epoch_us({created})) <= s.__last",
        ]
        if lo is not None:
            where.append(f"epoch_us({ts}) >= {lo}")
            where.append(f"epoch_us({ts}) >= s.__first - {view.ttl_us}")
        spans = (
            f"SELECT {span_keys}, min({LABEL_US}) AS __first, max({LABEL_US}) AS __last "
            f"FROM labels GROUP BY ALL"
        )
        source = (
            f"(SELECT {columns}, {ts} AS __event, {created} AS __created "
            f"FROM read_parquet([{paths}]) AS src JOIN ({spans}) AS s ON {on} "
            f"WHERE {' AND '.join(where)})"
        )
        self.con.execute(f"CREATE TEMP TABLE {table} AS {self._rows_select(view, source)}")

    def _distinct_keys(self, view: ViewJoin) -> list[tuple[Any, ...]]:
        keys = ", ".join(ident(k) for k in view.label_keys)
        not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in view.label_keys)
        return self.con.execute(f"SELECT DISTINCT {keys} FROM labels WHERE {not_null}").fetchall()

    def reduce_to_winners(self, i: int, view: ViewJoin) -> None:
        """`rows_{i}` (keys, __event, __created, features as epoch microseconds and
        values) to `win_{i}`: per entity, the rows that win from their visibility time on.

        A row wins from its v on only if its (e, c) beats every row visible by v (those
        with v' <= v, its own v's peers included); between two such rows the earlier
        keeps winning. So the table is the rows whose (e, c) is the running maximum in
        visibility order: a max over one 128-bit number, (e, c) packed in order, where
        an arg-max would carry every feature through the window."""
        keys = ", ".join(f"__k{j}" for j in range(len(view.source_keys)))
        feats = "".join(f", __f{j}" for j in range(len(view.features)))
        newest = "(__event::HUGEINT * 18446744073709551616 + __created::HUGEINT)"
        visible = "greatest(__event, __created)"
        self.con.execute(
            f"""
            CREATE TEMP TABLE win_{i} AS
            SELECT {keys}, {visible} AS __visible, __event{feats}
            FROM rows_{i}
            QUALIFY max({newest}) OVER (PARTITION BY {keys} ORDER BY {visible}) = {newest}
            """
        )
        self.con.execute(f"DROP TABLE rows_{i}")

    # -- the join -------------------------------------------------------------------

    def join(self, plan: Plan, start: int, stop: int) -> pa.Table:
        """Labels [start, stop) with their features, in label order."""
        if not self.joined:
            self._join_all(plan)
        return on_demand(plan, self._read(plan, start, stop))

    def chunks(self, plan: Plan, size: int) -> Generator[pa.Table, None, None]:
        """Every label with its features, in label order, `size` labels a chunk. DuckDB
        runs without the GIL, so the next chunk is read out in a thread while the caller
        transforms and writes this one; never more than one chunk ahead."""
        if not self.joined:
            self._join_all(plan)
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-read")
        starts = range(0, self.rows, size)
        ahead: Future[pa.Table] | None = None
        try:
            for start in starts:
                if ahead is None:
                    ahead = self._reader.submit(self._read, plan, start, start + size)
                table = ahead.result()
                ahead = None
                if start + size < self.rows:
                    ahead = self._reader.submit(self._read, plan, start + size, start + 2 * size)
                yield on_demand(plan, table)
        finally:
            # Left early: the read under way finishes before the connection is used again.
            if ahead is not None and not ahead.cancel():
                wait([ahead])

    def _read(self, plan: Plan, start: int, stop: int) -> pa.Table:
        """The labels' columns and each view's features for rows [start, stop), side by
        side: every table holds one row per label, read in label order."""
        where = f"WHERE {ROW} >= {start} AND {ROW} < {stop} ORDER BY {ROW}"
        columns = ", ".join(ident(c) for c in self.label_columns())
        table = self.con.sql(f"SELECT {columns} FROM labels {where}").to_arrow_table()
        for i, view in enumerate(plan.views):
            features = ", ".join(ident(f) for f in view.features)
            part = self.con.sql(f"SELECT {features} FROM joined_{i} {where}").to_arrow_table()
            if part.num_rows != table.num_rows:
                raise RuntimeError(f"joined_{i}: {part.num_rows} rows for {table.num_rows} labels")
            for name, column in zip(part.column_names, part.columns, strict=True):
                table = table.append_column(name, column)
        return table

    def _join_all(self, plan: Plan) -> None:
        """Per view, one ASOF join for every label at once, into `joined_{i}`: an ASOF
        join sorts its right side, so one join beats one per chunk; DuckDB spills what
        does not fit its memory limit. Each view is joined on its own, its left side
        only the labels' row numbers, keys and times (joins in a chain would carry every
        column through every sort); chunks are read out of the tables by row number."""
        names = [*self.label_columns()]
        for i, view in enumerate(plan.views):
            keys = ", ".join(ident(k) for k in view.label_keys)
            on = " AND ".join(f"l.{ident(k)} = w.__k{j}" for j, k in enumerate(view.label_keys))
            selected = []
            for j, feature in enumerate(view.features):
                value = f"w.__f{j}"
                if view.ttl_us:
                    value = f"CASE WHEN w.__event >= l.{LABEL_US} - {view.ttl_us} THEN {value} END"
                selected.append(f"{value} AS {ident(feature)}")
                names.append(feature)
            self.con.execute(
                f"CREATE TEMP TABLE joined_{i} AS SELECT l.{ROW}, {', '.join(selected)} "
                f"FROM (SELECT {ROW}, {keys}, {LABEL_US} FROM labels) AS l "
                f"ASOF LEFT JOIN win_{i} AS w ON {on} AND l.{LABEL_US} >= w.__visible"
            )
            self.con.execute(f"DROP TABLE win_{i}")
        self.joined = names


def on_demand(plan: Plan, table: pa.Table) -> pa.Table:
    """Feast's on-demand transformations over a joined chunk, their columns appended as
    Feast's retrieval job appends them, in their declared types (a chunk whose values
    are all null would otherwise get Arrow's null type)."""
    keys = {k for view in plan.views for k in view.label_keys}
    for odfv, requested in plan.odfvs:
        declared = {f.name: feast_value_type_to_pa(f.dtype.to_value_type()) for f in odfv.features}
        transformation = odfv.feature_transformation
        if isinstance(transformation, PythonTransformation) and not odfv.singleton:
            outputs = _python_udf(odfv, transformation, table, keys)
        else:
            outputs = _feast_transform(odfv, table, keys)
        for name, column in outputs:
            if name in requested:
                if column.type != declared[name]:
                    column = column.cast(declared[name])
                table = table.append_column(name, column)
    return table


def _feast_transform(
    odfv: OnDemandFeatureView, table: pa.Table, keys: set[str]
) -> list[tuple[str, pa.ChunkedArray]]:
    # Only the transformation's inputs (its sources' features, its request data, the
    # keys and the label time): Feast converts every column it is given.
    inputs = keys | {TIMESTAMP} | set(odfv.get_request_data_schema())
    for projection in odfv.source_feature_view_projections.values():
        inputs |= {f.name for f in projection.features}
        inputs |= {f"{projection.name}__{f.name}" for f in projection.features}
    given = table.select([name for name in table.column_names if name in inputs])
    transformed = odfv.transform_arrow(given, full_feature_names=False)
    return list(zip(transformed.column_names, transformed.columns, strict=True))


class _Inputs(dict[str, list[Any]]):
    """A python-mode transformation's inputs; the label time, which the serving path
    does not give, is converted only if the transformation asks for it (datetimes are
    most of the cost of converting a chunk to Python)."""

    def __init__(self, columns: dict[str, list[Any]], times: pa.ChunkedArray) -> None:
        super().__init__(columns)
        self._times = times

    def __missing__(self, name: str) -> list[Any]:
        if name != TIMESTAMP:
            raise KeyError(name)
        self[name] = values = self._times.to_pylist()
        return values


def _python_udf(
    odfv: OnDemandFeatureView,
    transformation: PythonTransformation,
    table: pa.Table,
    keys: set[str],
) -> list[tuple[str, pa.ChunkedArray]]:
    """What `odfv.transform_arrow` returns for a python-mode view, the udf called with
    what the serving path gives it (keys, request data, source features under short and
    `view__feature` names), each column converted to Python once."""
    names = keys | set(odfv.get_request_data_schema())
    present = set(table.column_names)
    aliases: dict[str, str] = {}  # the name Feast adds -> the column it copies
    for projection in odfv.source_feature_view_projections.values():
        for field in projection.features:
            full = f"{projection.name}__{field.name}"
            names |= {field.name, full}
            if full in present and field.name not in present:
                aliases[field.name] = full
            elif field.name in present and full not in present:
                aliases[full] = field.name
    columns = {n: table[n].to_pylist() for n in table.column_names if n in names}
    for added, existing in aliases.items():
        columns[added] = columns[existing]
    outputs = pa.Table.from_pydict(transformation.udf(_Inputs(columns, table[TIMESTAMP])))
    # Feast's clean-up: the added aliases dropped, the view's `odfv__feature` names
    # shortened.
    projected = {feature_refs.projected_feature_name(odfv, f.name): f.name for f in odfv.features}
    return [
        (projected.get(name, name), column)
        for name, column in zip(outputs.column_names, outputs.columns, strict=True)
        if name not in aliases
    ]


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
