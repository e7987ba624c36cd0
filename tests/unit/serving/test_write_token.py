"""The write token check: every line of FEATURE_SERVER_WRITE_TOKEN_FILE is accepted, so
a rotation holds the old token and the new one; a line too short to be a token is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_platform.config import credentials
from feature_platform.serving.writes import token_accepted

OLD, NEW = "old-token-0123456789", "new-token-0123456789"


def _bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_each_line_of_the_file_is_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = credentials.SecretFile("FEATURE_SERVER_WRITE_TOKEN", several=True)
    monkeypatch.setattr(credentials, "WRITE_TOKEN", token)
    path = tmp_path / "write-token"
    path.write_text(f"{OLD}\n")
    env = {"FEATURE_SERVER_WRITE_TOKEN_FILE": str(path)}
    token.resolve(env)
    configured = env["FEATURE_SERVER_WRITE_TOKEN"]
    assert token_accepted(_bearer(OLD), configured)
    assert not token_accepted(_bearer(NEW), configured)
    path.write_text(f"{OLD}\n{NEW}\nshort\n")
    assert token_accepted(_bearer(OLD), configured) and token_accepted(_bearer(NEW), configured)
    assert not token_accepted(_bearer("short"), configured)
    path.write_text(f"{NEW}\n")
    assert not token_accepted(_bearer(OLD), configured) and token_accepted(_bearer(NEW), configured)


def test_without_a_file_the_configured_token_alone() -> None:
    assert token_accepted(_bearer(OLD), OLD)
    assert not token_accepted(_bearer(NEW), OLD)
    assert not token_accepted(b"", OLD) and not token_accepted(_bearer(""), "")
