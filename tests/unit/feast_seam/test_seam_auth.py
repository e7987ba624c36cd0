"""auth.*: Feast's process-wide auth and security managers, as its servers read them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from feast.permissions.auth import auth_manager
from feast.permissions.auth.token_extractor import TokenExtractor
from feast.permissions.auth.token_parser import TokenParser
from feast.permissions.user import User
from seam_helpers import assert_params, repo_config


@pytest.fixture
def auth() -> Iterator[ModuleType]:
    """The seam, with the process's managers put back afterwards."""
    from feast.permissions import security_manager

    from feature_platform.feast_seam import auth

    saved = auth_manager._auth_manager, security_manager.get_security_manager()
    yield auth
    auth_manager._auth_manager = saved[0]
    security_manager._sm = saved[1]


class Alice(TokenParser):
    async def user_details_from_access_token(self, access_token: str) -> User:
        assert access_token == "alice-token"
        return User("alice", ["reader"])


class Header(TokenExtractor):
    def extract_access_token(self, **kwargs: Any) -> str:
        return str(kwargs["request"].headers["authorization"]).removeprefix("Bearer ")


@pytest.mark.seam("auth.server_managers")
def test_feasts_set_up_replaces_both_managers(auth: ModuleType, store: Any) -> None:
    from feast.offline_server import _init_auth_manager
    from feast.permissions.security_manager import get_security_manager
    from feast.permissions.server import utils

    assert_params(utils.init_security_manager, "auth_type, fs", by_keyword=True)
    assert_params(utils.init_auth_manager, "auth_type, server_type, auth_config", by_keyword=True)
    assert_params(_init_auth_manager, "store")
    for init in (auth.init_grpc_managers, auth.init_arrow_managers):
        auth.use_cached_security_manager(store)
        auth.use_token_parser(Alice(), Header())
        init(store)  # the store's auth: no_auth
        assert get_security_manager() is None
        assert not isinstance(auth_manager.get_auth_manager().token_parser, Alice)
    assert auth.init_grpc_managers(store) == utils.AuthManagerType.NONE


@pytest.mark.seam("auth.token_parser")
def test_feasts_rest_servers_ask_the_process_parser(auth: ModuleType, store: Any) -> None:
    from feast.permissions.security_manager import get_security_manager
    from feast.permissions.server.rest import inject_user_details
    from starlette.requests import Request

    auth.use_cached_security_manager(store)
    auth.use_token_parser(Alice(), Header())
    request = Request({
        "type": "http", "method": "GET", "path": "/", "query_string": b"",
        "headers": [(b"authorization", b"Bearer alice-token")],
    })  # fmt: skip

    async def inject() -> User | None:
        details = inject_user_details(request)
        await anext(details)
        manager = get_security_manager()
        return manager.current_user if manager else None

    user = asyncio.run(inject())
    assert user is not None
    assert (user.username, user.roles) == ("alice", ["reader"])


@pytest.mark.seam("auth.cached_security_manager")
def test_permissions_come_from_the_cached_registry(
    auth: ModuleType, store: Any, objects: dict[str, Any], tmp_path: Path
) -> None:
    from feast import Entity, FeatureStore
    from feast.errors import FeastPermissionError
    from feast.permissions.action import AuthzedAction
    from feast.permissions.permission import Permission
    from feast.permissions.policy import RoleBasedPolicy

    manager = auth.CachedSecurityManager(store.project, store.registry)
    readers = Permission(
        name="readers",
        types=[Entity],
        policy=RoleBasedPolicy(roles=["reader"]),
        actions=[AuthzedAction.DESCRIBE],
    )
    FeatureStore(config=repo_config(tmp_path)).apply([readers])  # another process's apply
    assert manager.permissions == []  # the cached copy, not the database
    store.refresh_registry()
    assert [p.name for p in manager.permissions] == ["readers"]
    # Feast enforces through the `permissions` property
    customer = objects["customer"]
    manager.set_current_user(User("alice", ["reader"]))
    assert manager.assert_permissions([customer], AuthzedAction.DESCRIBE) == [customer]
    manager.set_current_user(User("bob", []))
    with pytest.raises(FeastPermissionError):
        manager.assert_permissions([customer], AuthzedAction.DESCRIBE)
    # a request's project (_current_project) before the server's (_project)
    manager.set_current_project("elsewhere")
    assert manager.permissions == []
