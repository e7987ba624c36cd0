"""Feast's process-wide auth and security managers: every server of the platform sets
them through here.

Feast's servers find the caller through one auth manager (a token extractor and a token
parser) and decide through one security manager, both globals of the process. Feast's
own set-up fills them per server kind; the platform then replaces the parser with its
verifier and, in the feature server, the security manager with one reading the cached
registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feast.permissions.auth.auth_manager import AuthManager, set_auth_manager
from feast.permissions.permission import Permission
from feast.permissions.security_manager import SecurityManager, set_security_manager
from feast.permissions.server.utils import (
    AuthManagerType,
    ServerType,
    init_auth_manager,
    init_security_manager,
    str_to_auth_manager_type,
)

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.permissions.auth.token_extractor import TokenExtractor
    from feast.permissions.auth.token_parser import TokenParser


def init_grpc_managers(store: FeatureStore) -> AuthManagerType:
    """Feast's managers for the store's `auth:` block, as its gRPC registry server sets
    them; the auth type."""
    auth_type = str_to_auth_manager_type(store.config.auth_config.type)
    init_security_manager(auth_type=auth_type, fs=store)
    init_auth_manager(
        auth_type=auth_type, server_type=ServerType.GRPC, auth_config=store.config.auth_config
    )
    return auth_type


def init_arrow_managers(store: FeatureStore) -> None:
    """Feast's managers as its offline (Arrow Flight) server sets them."""
    from feast.offline_server import _init_auth_manager

    _init_auth_manager(store)


def use_token_parser(parser: TokenParser, extractor: TokenExtractor) -> None:
    """Make `parser` and `extractor` the process's auth manager."""
    set_auth_manager(AuthManager(token_parser=parser, token_extractor=extractor))


class CachedSecurityManager(SecurityManager):
    """Feast's security manager reading permissions from the cached registry the server
    refreshes, not from the registry database on every check."""

    @property
    def permissions(self) -> list[Permission]:
        project = self._current_project.get() or self._project
        return self._registry.list_permissions(project=project, allow_cache=True)


def use_cached_security_manager(store: FeatureStore) -> None:
    """Make a `CachedSecurityManager` over the store's registry the process's."""
    set_security_manager(CachedSecurityManager(store.project, store.registry))
