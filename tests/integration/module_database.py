"""A database of a test module's own on the local Postgres, dropped after it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg

DSN = "host=127.0.0.1 port=5432 user=postgres"


def scratch(name: str) -> Iterator[str]:
    """For a module-scoped fixture: the database `feast_test_<name>_<pid>`, made empty."""
    database = f"feast_test_{name}_{os.getpid()}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
    yield database
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
