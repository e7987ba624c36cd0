"""Session fixtures: isolated local and dev stacks with the same generated data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pushgateway import pushgateway  # noqa: F401 (a fixture for every module)
from stacks import WRITABLE, Stack, make_stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer

# A server a test stops needs no time for a load balancer to take it out of rotation (the
# lifecycle tests set their own drain).
os.environ.setdefault("FEATURE_SERVER_DRAIN_SECONDS", "0")

# One clock for the whole session: data up to AS_OF, materialized up to MAT_END, and
# training rows asked for at MAT_END, so online and offline see the same instant.
AS_OF = generator.default_as_of()
MAT_END = datetime.now(UTC).replace(microsecond=0)
SIZES = generator.Sizes(customers=300, merchants=30, days=10, transactions=3_000)
SEED = 11


NEWEST_EVENT_AGE = timedelta(minutes=20)


def newest_event(now: pd.Timestamp) -> pd.Timestamp:
    """An event time after the generated data's newest snapshot (the midnight of AS_OF's
    day) and before `now`, whatever the hour: a row written there is its entity's newest.
    At most NEWEST_EVENT_AGE before `now`, so that it is within every view's ttl."""
    newest_snapshot = pd.Timestamp(AS_OF).floor("D")
    return (now - min(NEWEST_EVENT_AGE, (now - newest_snapshot) / 2)).floor("s")


class StackFactory:
    """Stacks for tests. A stack lives until the end of the module that made it, so the
    databases and Redis dbs it holds (there are 13 to share) are back before the next
    module; the session's shared stacks (`session=True`) live until the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.module_stacks: list[Stack] = []
        self.session_stacks: list[Stack] = []

    def __call__(
        self, env: str, name: str, extra: dict[str, str] | None = None, session: bool = False
    ) -> Stack:
        stack = make_stack(env, name, self.tmp_path_factory.mktemp(f"{env}_{name}"), extra)
        (self.session_stacks if session else self.module_stacks).append(stack)
        return stack

    def close_module_stacks(self) -> None:
        while self.module_stacks:
            self.module_stacks.pop().close()


@pytest.fixture(scope="session")
def stack_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    factory = StackFactory(tmp_path_factory)
    yield factory
    factory.close_module_stacks()
    for stack in factory.session_stacks:
        stack.close()


@pytest.fixture(scope="module", autouse=True)
def _module_stacks_closed(stack_factory: StackFactory) -> Iterator[None]:
    yield
    stack_factory.close_module_stacks()


@pytest.fixture(scope="session")
def generated_tables() -> dict[str, pd.DataFrame]:
    return generator.generate(SIZES, seed=SEED, as_of=AS_OF)


def deploy(stack: Stack, tables: dict[str, pd.DataFrame], history: bool = False) -> Stack:
    """Apply, then load each view's ttl window before MAT_END into the online store.

    An explicit window per view, so that every stack holds exactly the rows a training
    set at MAT_END sees (materialize-incremental's first window depends on the clock;
    see compare.materialized_at, and test_materialization for the incremental runs).
    `history`: load every row before MAT_END instead, so entities whose newest value is
    older than the ttl have that value online too.
    """
    stack.write(tables)
    stack.feast("apply")
    store = stack.store()
    first = min(table["event_timestamp"].min() for table in tables.values()) if history else None
    for view in store.list_feature_views():
        start = MAT_END - view.ttl if first is None else first
        store.materialize(start, MAT_END, feature_views=[view.name])
    return stack


@pytest.fixture(scope="session")
def deployed_local(stack_factory: StackFactory, generated_tables: dict) -> Stack:
    return deploy(stack_factory("local", "gen", session=True), generated_tables)


@pytest.fixture(scope="session")
def deployed_dev(stack_factory: StackFactory, generated_tables: dict) -> Stack:
    return deploy(stack_factory("dev", "gen", session=True), generated_tables)


@pytest.fixture(scope="session")
def server_local(deployed_local: Stack) -> FeatureServer:
    return deployed_local.server(settings=WRITABLE)


@pytest.fixture(scope="session")
def server_dev(deployed_dev: Stack) -> FeatureServer:
    return deployed_dev.server(settings=WRITABLE)


@pytest.fixture(params=["local", "dev"])
def env_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def deployed(env_name: str, request: pytest.FixtureRequest) -> Stack:
    stack: Stack = request.getfixturevalue(f"deployed_{env_name}")
    return stack


@pytest.fixture
def server(env_name: str, request: pytest.FixtureRequest) -> FeatureServer:
    served: FeatureServer = request.getfixturevalue(f"server_{env_name}")
    return served
