"""How far materialization has loaded each feature view's rows by creation time.

One row per (project, view) in `platform_materialization_watermark` of the environment's
registry database, through the SQL registry's own engine: PostgreSQL for dev and prod, the
SQLite file for local. `created_until` is the end of the newest run that wrote every row
of the view created up to then; it only moves forward, and only after those writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from feature_platform.config.guard import ConfigError

TABLE = Table(
    "platform_materialization_watermark",
    MetaData(),
    Column("project", String(255), primary_key=True),
    Column("feature_view", String(255), primary_key=True),
    Column("created_until", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    comment="Per feature view: every row created up to created_until is online",
)
# INSERT ... ON CONFLICT, in the two dialects a SQL registry runs on here.
_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _utc(ts: datetime) -> datetime:
    # SQLite hands back what it was given without the zone: always UTC here.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class Watermarks:
    def __init__(self, registry: Any, project: str) -> None:
        engine = getattr(registry, "write_engine", None)
        if not isinstance(engine, Engine) or engine.dialect.name not in _INSERTS:
            raise ConfigError(
                "materialization keeps its watermarks in the registry database: it needs "
                "a SQL registry on PostgreSQL or SQLite (registry_type: sql)"
            )
        self.engine = engine
        self.project = project
        TABLE.create(engine, checkfirst=True)

    def get(self, view: str) -> datetime | None:
        query = select(TABLE.c.created_until).where(
            TABLE.c.project == self.project, TABLE.c.feature_view == view
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return _utc(found) if found is not None else None

    def advance(self, view: str, until: datetime) -> None:
        """Move the view's watermark to `until`, unless it is already later."""
        until = _utc(until)
        insert = _INSERTS[self.engine.dialect.name](TABLE).values(
            project=self.project, feature_view=view, created_until=until,
            updated_at=datetime.now(UTC),
        )  # fmt: skip
        later = case(
            (TABLE.c.created_until < insert.excluded.created_until, insert.excluded.created_until),
            else_=TABLE.c.created_until,
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[TABLE.c.project, TABLE.c.feature_view],
            set_={"created_until": later, "updated_at": insert.excluded.updated_at},
        )
        with self.engine.begin() as conn:
            conn.execute(upsert)
