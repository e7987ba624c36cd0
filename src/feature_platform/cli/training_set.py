"""`feature-platform training-set ENV`: bad labels or references as one line and exit 2."""

from __future__ import annotations

from feast.errors import FeastError

from feature_platform.console import Say
from feature_platform.errors import EXIT_BAD_INPUT
from feature_platform.training.command import Request, build
from feature_platform.training.labels import LabelError


def command(request: Request, say: Say) -> int:
    """Exit 0 with the file written; 2 with one line on bad input."""
    try:
        build(request, say)
    except LabelError as exc:
        say(f"training-set: {exc}")
        return EXIT_BAD_INPUT
    except FeastError as exc:
        say(f"training-set: {str(exc).splitlines()[0]}")
        return EXIT_BAD_INPUT
    return 0
