"""The verifier of the configured identity source."""

from __future__ import annotations

from feature_platform.auth.kubernetes import KubernetesVerifier
from feature_platform.auth.oidc import OidcVerifier
from feature_platform.auth.tokens import NoAuthVerifier, TokenVerifier
from feature_platform.config.auth import AuthSettings


def verifier_for(settings: AuthSettings) -> TokenVerifier:
    """The verifier of the configured identity source (not started)."""
    if settings.type == "oidc":
        return OidcVerifier(settings)
    if settings.type == "kubernetes":
        return KubernetesVerifier(settings)
    return NoAuthVerifier()
