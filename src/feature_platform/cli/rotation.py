"""`feature-platform rotate-password ENV STORE`: a store's password changed in place, the
password read from standard input (a prompt without echo on a terminal), never from the
command line, and never printed."""

from __future__ import annotations

import getpass
import sys

import psycopg
import redis

from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError, one_line_error, password_problems
from feature_platform.console import Say
from feature_platform.errors import EXIT_FAILED
from feature_platform.stores import passwords


def read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def command(env: str, store: str, action: str, say: Say) -> int:
    if (store == "postgres") != (action == "set"):
        raise ConfigError("postgres takes --set; redis takes --add or --remove")
    config = feast_commands.repo_config(env)
    old = action == "remove"
    password = read_password(f"the {'old' if old else 'new'} {store} password: ")
    if not password:
        raise ConfigError("no password on standard input")
    problems = [] if old else password_problems(f"{store.upper()}_PASSWORD", password)
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        if action == "set":
            role = passwords.set_postgres_password(config, password)
            say(f"postgres: role {role} has the new password; new connections need it")
        elif action == "add":
            user = passwords.add_redis_password(config, password)
            say(f"redis: user {user} accepts the new password beside the ones it had")
        else:
            user = passwords.remove_redis_password(config, password)
            say(f"redis: user {user} no longer accepts the old password")
    except (passwords.Refused, redis.RedisError, psycopg.Error, OSError) as exc:
        say(f"rotate-password: {one_line_error(exc, {'ROTATED_PASSWORD': password})}")
        return EXIT_FAILED
    return 0
