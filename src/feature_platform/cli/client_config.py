"""`feature-platform client-config ENV`: the thin client's feature_store.yaml on stdout."""

from __future__ import annotations

import argparse

from feature_platform.config import environments
from feature_platform.config.client import for_environment


def command(env: str, args: argparse.Namespace) -> str:
    environments.settings(env)  # an unknown environment is a clear error
    return for_environment(
        env,
        args.registry,
        args.offline,
        args.online,
        args.write_token_env,
        tls=getattr(args, "tls", False),
        ca_file=getattr(args, "ca_file", None),
    ).render()
