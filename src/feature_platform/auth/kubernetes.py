"""Kubernetes identities: a service-account (or user) token checked by a TokenReview.

Feast's Kubernetes parser calls the API with no deadline, inside the async handler, and,
when the TokenReview fails, still reads the service account's name from the token's
unverified `sub` and looks its roles up: a forged token naming a service account gets
that account's roles. Here the TokenReview must say `authenticated`, the identity is the
one the API server returns (never a claim of the token), every API call ends within
AUTH_FETCH_TIMEOUT_SECONDS in a worker thread, and an answer is reused for a short while.

Roles are derived as Feast does: for a service account, the names of the Roles bound to
it by RoleBindings in the server's own namespace; for a user, the Roles and ClusterRoles
bound to the user or one of its groups (RoleBindings of the server's namespace and
ClusterRoleBindings). Namespaces: the service account's, and those of
`system:serviceaccounts:<ns>` groups.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from pathlib import Path
from typing import Any

from feast.permissions.user import User

from feature_platform.auth.errors import unauthorized
from feature_platform.auth.tokens import TokenVerifier, VerifiedCache
from feature_platform.config.auth import AuthSettings
from feature_platform.config.guard import ConfigError
from feature_platform.errors import unavailable

log = logging.getLogger("feature_platform.auth")

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# How long a TokenReview's answer is reused: a revoked token works at most this long.
REVIEW_CACHE_S = 30.0
SA_PREFIX = "system:serviceaccount:"
SA_GROUP_PREFIX = "system:serviceaccounts:"


def current_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise ConfigError(
            "AUTH_TYPE=kubernetes needs the pod's namespace: set POD_NAMESPACE or run in a pod"
        ) from None


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError):
            raise ConfigError(
                "AUTH_TYPE=kubernetes needs the Kubernetes API: run in a pod, or give a kubeconfig"
            ) from None
    return client.ApiClient()


class KubernetesVerifier(TokenVerifier):
    def __init__(
        self, settings: AuthSettings, api_client: Any = None, namespace: str | None = None
    ) -> None:
        from kubernetes import client

        self.settings = settings
        self.namespace = namespace or current_namespace()
        api_client = api_client if api_client is not None else _api_client()
        self._auth = client.AuthenticationV1Api(api_client)
        self._rbac = client.RbacAuthorizationV1Api(api_client)
        # Bounded: a slow API server queues reviews (each waited on for the deadline at
        # most) instead of starting a thread per request.
        self._executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="token-review")
        self._reviewed = VerifiedCache()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def user_of(self, token: str) -> User:
        cached = self._reviewed.get(token, time.monotonic())
        if cached is not None:
            return cached
        future = self._executor.submit(self._review, token)
        try:
            async with asyncio.timeout(self.settings.fetch_timeout_s):
                return await asyncio.shield(asyncio.wrap_future(future))
        except TimeoutError:
            raise self._timed_out() from None

    def user_of_blocking(self, token: str) -> User:
        cached = self._reviewed.get(token, time.monotonic())
        if cached is not None:
            return cached
        future = self._executor.submit(self._review, token)
        try:
            return future.result(timeout=self.settings.fetch_timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> Exception:
        return unavailable(
            f"the Kubernetes API did not answer within {self.settings.fetch_timeout_s:g}s"
        )

    def _review(self, token: str) -> User:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        timeout = self.settings.fetch_timeout_s
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        try:
            status = self._auth.create_token_review(review, _request_timeout=timeout).status
        except (ApiException, Urllib3Error, OSError, ValueError) as exc:
            # ValueError: an answer the client cannot read (its models validate)
            log.warning("TokenReview failed: %s", type(exc).__name__)
            raise unavailable("the Kubernetes API refused or failed the token review") from None
        if status is None or not status.authenticated or status.user is None:
            raise unauthorized("the Kubernetes API does not accept this token")
        username = status.user.username or ""
        groups = sorted(set(status.user.groups or []))
        namespaces = {g[len(SA_GROUP_PREFIX) :] for g in groups if g.startswith(SA_GROUP_PREFIX)}
        try:
            if username.startswith(SA_PREFIX) and username.count(":") == 3:
                sa_namespace, sa_name = username[len(SA_PREFIX) :].split(":")
                namespaces.add(sa_namespace)
                roles = self._service_account_roles(sa_namespace, sa_name, timeout)
            else:
                roles = self._user_roles(username, groups, timeout)
        except (ApiException, Urllib3Error, OSError, ValueError) as exc:
            log.warning("role lookup failed: %s", type(exc).__name__)
            raise unavailable("the Kubernetes API failed the role lookup") from None
        user = User(username=username, roles=roles, groups=groups, namespaces=sorted(namespaces))
        self._reviewed.put(token, user, time.monotonic() + REVIEW_CACHE_S)
        return user

    def _service_account_roles(self, namespace: str, name: str, timeout: float) -> list[str]:
        bindings = self._rbac.list_namespaced_role_binding(self.namespace, _request_timeout=timeout)
        roles = {
            binding.role_ref.name
            for binding in bindings.items
            for subject in binding.subjects or []
            if subject.kind == "ServiceAccount"
            and subject.name == name
            and subject.namespace == namespace
        }
        return sorted(roles)

    def _user_roles(self, username: str, groups: list[str], timeout: float) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        def bound(binding: Any) -> bool:
            return any(
                (s.kind == "User" and s.name == username)
                or (s.kind == "Group" and s.name in groups)
                for s in binding.subjects or []
            )

        namespaced = self._rbac.list_namespaced_role_binding(
            self.namespace, _request_timeout=timeout
        )
        bindings: list[Any] = list(namespaced.items)
        try:
            bindings += self._rbac.list_cluster_role_binding(_request_timeout=timeout).items
        except ApiException as exc:
            # a server granted only its namespace's bindings: ClusterRoles count for nothing
            if exc.status != 403:
                raise
        return sorted({b.role_ref.name for b in bindings if bound(b)})
