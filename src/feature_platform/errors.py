"""What goes wrong, said one way: the platform's error base class, the HTTP errors its
servers answer with, and the one table of exit codes its commands end with."""

from __future__ import annotations

from typing import Any

# Exit codes of every `feature-platform` command (and of ci/plan.sh and ci/apply.sh).
EXIT_OK = 0
# The work ran and failed: a view that did not load, an apply that failed.
EXIT_FAILED = 1
# Nothing ran: a missing or bad setting (the config guard), or bad input such as labels.
EXIT_CONFIG_ERROR = 2
EXIT_BAD_INPUT = 2
# plan: the change is breaking; apply: a breaking change refused without
# ALLOW_BREAKING_CHANGES.
EXIT_BREAKING = 3
# skew-check: every sampled value matched; some did not; the check itself could not run.
EXIT_CONSISTENT = 0
EXIT_MISMATCH = 1
EXIT_CHECK_FAILED = 3


class PlatformError(Exception):
    """An error the platform raises on purpose, with a message fit for a user."""


class HTTPError(PlatformError):
    """A client or dependency problem, phrased for the response body."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}


def bad_request(detail: str) -> HTTPError:
    return HTTPError(400, "bad request", detail)


def not_found(detail: str) -> HTTPError:
    return HTTPError(404, "not found", detail)


def unavailable(detail: str) -> HTTPError:
    return HTTPError(503, "service unavailable", detail)
