"""A database of each module's own on the local Postgres, dropped after it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

DSN = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"feast_{request.module.__name__}_{os.getpid()}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
