"""`feature-platform training-set ENV`: bad labels or references as one line and exit 2;
rows breaking a refusing view's expectations as one line and exit 1."""

from __future__ import annotations

from feast.errors import FeastError

from feature_platform.console import Say
from feature_platform.errors import EXIT_BAD_INPUT, EXIT_FAILED
from feature_platform.quality.expectations import Refused
from feature_platform.training.command import Request, build
from feature_platform.training.labels import LabelError


def command(request: Request, say: Say) -> int:
    """Exit 0 with the file written; 2 with one line on bad input; 1 when a view's rows
    break its expectations under `refuse`."""
    try:
        build(request, say)
    except LabelError as exc:
        say(f"training-set: {exc}")
        return EXIT_BAD_INPUT
    except FeastError as exc:
        say(f"training-set: {str(exc).splitlines()[0]}")
        return EXIT_BAD_INPUT
    except Refused as exc:
        say(f"training-set: {exc}")
        return EXIT_FAILED
    return 0
