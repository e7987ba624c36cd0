"""HTTP URLs given on the command line or in settings: checked, and shown without
credentials."""

from __future__ import annotations

from urllib.parse import urlsplit

from feature_platform.config.guard import ConfigError


def shown(url: str) -> str:
    """A URL without any user or password in it, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def http_url(value: str, what: str, variable: str, flag: str) -> str:
    """`value` as an http(s) URL (http:// when it names no scheme); a configuration
    error naming the flag and the variable that give it when it is empty or not one."""
    url = value.strip().rstrip("/")
    if not url:
        raise ConfigError(f"no {what} URL: pass {flag} or set {variable}")
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} URL {shown(url)!r} is not an http(s) URL")
    return url
