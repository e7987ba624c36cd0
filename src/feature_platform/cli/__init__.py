"""`feature-platform`: the commands the Makefile, CI, the image and people all use."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from feature_platform.config import environments, feast_commands
from feature_platform.config.guard import ConfigError
from feature_platform.console import say
from feature_platform.devtools import generator
from feature_platform.errors import EXIT_CONFIG_ERROR
from feature_platform.offline import tables as offline_tables


def _timestamp(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO timestamp: {text!r}") from exc
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


def cmd_check_config(args: argparse.Namespace) -> int:
    feast_commands.prepare(args.env)
    say(f"{args.env}: {environments.feature_store_yaml(args.env).name} has every variable it needs")
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    offline_tables.ensure_databases(feast_commands.prepare(args.env), say)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    env = feast_commands.prepare(args.env)
    sizes = generator.Sizes(args.customers, args.merchants, args.days, args.transactions)
    as_of = args.as_of or generator.default_as_of()
    say(f"generating data as of {as_of.isoformat()} (seed {args.seed})")
    tables = generator.generate(sizes, seed=args.seed, as_of=as_of, progress=say)
    offline_tables.ensure_databases(env, say)
    offline_tables.write(env, tables, progress=say)
    return 0


def cmd_feast(args: argparse.Namespace) -> int:
    feast_args = args.feast_args[1:] if args.feast_args[:1] == ["--"] else args.feast_args
    return feast_commands.run(args.env, feast_args, check=False).returncode


def cmd_materialize(args: argparse.Namespace) -> int:
    from feature_platform.materialization import load as materialize

    return materialize.job(args.env, args.end, say)


def cmd_rebuild_online(args: argparse.Namespace) -> int:
    from feature_platform.materialization import rebuild

    views = [name.strip() for name in (args.views or "").split(",") if name.strip()] or None
    return rebuild.job(args.env, views, say)


def cmd_serve(args: argparse.Namespace) -> int:
    from feature_platform.serving.redis_memory import check_at_start
    from feature_platform.serving.runner import serve
    from feature_platform.serving.settings import ServerSettings

    # The workers read the environment's settings from this process's environment.
    os.environ.update(feast_commands.prepare(args.env))
    settings = ServerSettings.from_env()
    check_at_start(args.env, say)
    serve(settings)
    return 0


def cmd_serve_registry(args: argparse.Namespace) -> int:
    from feature_platform.servers import registry

    store = feast_commands.open_store(args.env)
    rest_port = None if args.no_rest else args.rest_port
    try:
        registry.serve(store, args.host, args.port, rest_port, say)
    except OSError as exc:
        say(f"serve-registry: {exc}")
        return 1
    return 0


def cmd_serve_offline(args: argparse.Namespace) -> int:
    from feature_platform.servers import offline
    from feature_platform.training import server_join

    settings = feast_commands.prepare(args.env)
    fast_join = server_join.fast_join(settings)
    store = feast_commands.open_store(args.env)
    # Before listening: the pod is ready once its mirror is (the chart's startup probe).
    server_join.warm_mirror(store, settings, say)
    refreshing = server_join.keep_mirror_current(store, settings, say)
    try:
        offline.serve(store, args.host, args.port, say, fast_join)
    except OSError as exc:
        say(f"serve-offline: {exc}")
        return 1
    finally:
        server_join.release_mirror(store, settings, say, refreshing)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from feature_platform.servers import ui

    store = feast_commands.open_store(args.env)
    try:
        ui.serve(store, args.host, args.port, say)
    except OSError as exc:
        say(f"ui: {exc}")
        return 1
    return 0


def cmd_client_config(args: argparse.Namespace) -> int:
    from feature_platform.cli import client_config

    print(client_config.command(args.env, args), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from feature_platform.devtools import demo

    return demo.run(
        args.env,
        sizes=generator.Sizes(args.customers, args.merchants, args.days, args.transactions),
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from feature_platform.cli import rollouts

    return rollouts.cli_plan(args.env, args.json, args.markdown, say)


def cmd_apply(args: argparse.Namespace) -> int:
    from feature_platform.cli import rollouts

    return rollouts.cli_apply(args.env, args.json, args.lock_timeout, say)


def cmd_rollout_log(args: argparse.Namespace) -> int:
    from feature_platform.cli import rollouts

    return rollouts.cli_log(args.env, args.limit, say)


def cmd_rollout_readers(args: argparse.Namespace) -> int:
    from feature_platform.cli import rollouts

    return rollouts.cli_readers(args.env, say)


def cmd_quarantine(args: argparse.Namespace) -> int:
    from feature_platform.cli import quality

    return quality.cli_quarantine(args.env, args.view, args.limit, say)


def cmd_forget(args: argparse.Namespace) -> int:
    from feature_platform.cli import erasure

    return erasure.cli_forget(
        args.env, args.entity, args.yes, args.requested_by, args.settle_seconds, say
    )


def cmd_forget_log(args: argparse.Namespace) -> int:
    from feature_platform.cli import erasure

    return erasure.cli_forget_log(args.env, args.limit, say)


def cmd_quality(args: argparse.Namespace) -> int:
    from feature_platform.cli import quality

    return quality.cli_drift(
        args.env,
        args.training_set,
        args.current_hours,
        args.baseline_days,
        args.report,
        args.pushgateway,
        args.served_vectors,
        args.keep_served_days,
        say,
    )


def cmd_registry_backup(args: argparse.Namespace) -> int:
    from feature_platform.cli import recovery

    return recovery.cli_backup(args.env, args.output, args.retain, say)


def cmd_registry_restore(args: argparse.Namespace) -> int:
    from feature_platform.cli import recovery

    return recovery.cli_restore(args.env, args.input, args.replace, say)


def cmd_rotate_password(args: argparse.Namespace) -> int:
    from feature_platform.cli import rotation

    return rotation.command(args.env, args.store, args.action, say)


def cmd_skew_check(args: argparse.Namespace) -> int:
    from feature_platform.cli import skew_check

    return skew_check.command(
        args.env, args.server_url, args.rows, args.seed, args.json, args.pushgateway, say
    )


def cmd_training_set(args: argparse.Namespace) -> int:
    from feature_platform.cli import training_set
    from feature_platform.training import command

    request = command.Request(
        env=args.env,
        output=args.output,
        labels_path=args.labels,
        labels_sql=args.labels_sql,
        feature_service=args.feature_service,
        features=[f.strip() for f in (args.features or "").split(",") if f.strip()] or None,
        chunk_rows=args.chunk_rows,
        engine=args.engine,
        name=args.name,
    )
    return training_set.command(request, say)


def cmd_training_sets(args: argparse.Namespace) -> int:
    from feature_platform.cli import quality

    return quality.cli_training_sets(args.env, args.name, args.limit, say)


def _listener(parser: argparse.ArgumentParser, port: int, what: str) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=_port, default=port, help=f"{what} port (default {port})")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="feature-platform", description=__doc__)
    subs = top.add_subparsers(dest="command", required=True)

    def sub(name: str, help_text: str, func: object) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("env", help=f"environment: {', '.join(environments.available())}")
        p.set_defaults(func=func)
        return p

    def size_flags(p: argparse.ArgumentParser, defaults: generator.Sizes) -> None:
        p.add_argument("--customers", type=_positive, default=defaults.customers)
        p.add_argument("--merchants", type=_positive, default=defaults.merchants)
        p.add_argument("--days", type=_positive, default=defaults.days)
        p.add_argument("--transactions", type=_positive, default=defaults.transactions)

    sub(
        "check-config", "check that every variable the configuration needs is set", cmd_check_config
    )
    sub("init-db", "create the registry and offline databases if missing", cmd_init_db)

    gen = sub("generate", "write the deterministic data set to the offline store", cmd_generate)
    size_flags(gen, generator.Sizes())
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--as-of",
        type=_timestamp,
        default=None,
        help="newest event time (ISO 8601, UTC if no offset); default: this hour",
    )

    fst = sub("feast", "run a Feast CLI command for the environment", cmd_feast)
    fst.add_argument("feast_args", nargs=argparse.REMAINDER, help="-- then Feast's arguments")

    mat = sub(
        "materialize",
        "load rows created since the last run (and Feast's event-time window) into the "
        "online store, up to now (or --end)",
        cmd_materialize,
    )
    mat.add_argument("--end", type=_timestamp, default=None)
    reb = sub(
        "rebuild-online",
        "load every entity's newest value within ttl into the online store, whatever the "
        "watermarks (a lost or replaced store); newer values online stay",
        cmd_rebuild_online,
    )
    reb.add_argument("--views", default=None, help="comma-separated views (default: all)")

    sub("serve", "run the feature server in the foreground (FEATURE_SERVER_* settings)", cmd_serve)

    reg = sub(
        "serve-registry",
        "run Feast's registry server (gRPC, and REST under /api/v1), read-only, in the foreground",
        cmd_serve_registry,
    )
    _listener(reg, 6570, "gRPC")
    reg.add_argument("--rest-port", type=_port, default=6572, help="REST port (default 6572)")
    reg.add_argument("--no-rest", action="store_true", help="serve gRPC only")
    off = sub(
        "serve-offline",
        "run Feast's offline server (Arrow Flight), read-only, in the foreground",
        cmd_serve_offline,
    )
    _listener(off, 8815, "Flight")
    fui = sub(
        "ui",
        "run Feast's UI over the environment's registry, read-only, in the foreground",
        cmd_ui,
    )
    _listener(fui, 8888, "HTTP")
    cfg = sub(
        "client-config",
        "print a feature_store.yaml for a client without database or Redis credentials",
        cmd_client_config,
    )
    cfg.add_argument("--registry", default=None, help="registry server host:port (gRPC)")
    cfg.add_argument("--offline", default=None, help="offline server host:port (Arrow Flight)")
    cfg.add_argument("--online", default=None, help="feature server URL (http://host:port)")
    cfg.add_argument(
        "--write-token-env",
        default=None,
        metavar="VAR",
        help="send the bearer token in this environment variable (writes to the feature server)",
    )
    cfg.add_argument("--tls", action="store_true", help="the servers speak TLS (https)")
    cfg.add_argument(
        "--ca-file",
        default=None,
        metavar="PATH",
        help="verify the servers against this CA bundle on the client's machine (implies --tls)",
    )

    demo = sub("demo", "generate, apply, materialize, serve, fetch, train, check skew", cmd_demo)
    size_flags(demo, generator.Sizes(customers=200, merchants=20, days=14, transactions=2_000))

    pln = sub("plan", "what apply would change: markdown on stdout; exit 3 if breaking", cmd_plan)
    pln.add_argument("--json", type=Path, default=None, help="also write the plan as JSON here")
    pln.add_argument("--markdown", type=Path, default=None, help="also write the summary here")
    apl = sub(
        "apply",
        "apply under the environment's lock; breaking needs ALLOW_BREAKING_CHANGES",
        cmd_apply,
    )
    apl.add_argument("--json", type=Path, default=None, help="write the applied plan as JSON")
    apl.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        help="seconds to wait for another apply (default: APPLY_LOCK_TIMEOUT_SECONDS)",
    )
    log = sub(
        "rollout-log", "the latest applies recorded in ENV's registry database", cmd_rollout_log
    )
    log.add_argument("--limit", type=_positive, default=20)
    sub(
        "rollout-readers",
        "each feature service's last read and whether its old version may be retired",
        cmd_rollout_readers,
    )

    qrn = sub(
        "quarantine",
        "the rows set aside for breaking their view's expectations, newest first, as JSON",
        cmd_quarantine,
    )
    qrn.add_argument("--view", default=None, help="only this feature view's rows")
    qrn.add_argument("--limit", type=_positive, default=20)

    fgt = sub(
        "forget",
        "an entity's values out of the online and offline stores, the mirror, the served "
        "vectors and the quarantine; a dry run unless --yes; the report as JSON",
        cmd_forget,
    )
    fgt.add_argument("--entity", action="append", required=True, metavar="KEY=VALUE",
                     help="its join key and value (repeated: several keys)")  # fmt: skip
    fgt.add_argument("--yes", action="store_true", help="remove (default: count only)")
    fgt.add_argument("--requested-by", default=None,
                     help="who asked, for the audit (default: the user running it)")  # fmt: skip
    fgt.add_argument("--settle-seconds", type=float, default=None,
                     help="the wait between the Redis tombstones and the offline delete "
                          "(default: twice the offline store's write timeout)")  # fmt: skip
    flog = sub("forget-log", "the recorded forget runs, newest first, as JSON", cmd_forget_log)
    flog.add_argument("--limit", type=_positive, default=20)

    qly = sub(
        "quality",
        "every feature's drift: the offline rows (or the served vectors) of the last hours "
        "against a training set or the baseline days before them, to an HTML report and JSON",
        cmd_quality,
    )
    qly.add_argument("--training-set", default=None,
                     help="the reference: a training set's recorded name (training-sets lists "
                          "them) or parquet file (default: the baseline window)")  # fmt: skip
    qly.add_argument("--served-vectors", default=None,
                     help="the served vectors a feature service logged (its SERVED_VECTORS_PATH: "
                          "postgresql:TABLE or a directory): the current values "
                          "(default: the offline rows)")  # fmt: skip
    qly.add_argument("--keep-served-days", type=_positive, default=None,
                     help="after the run, delete the vectors served more than N days ago from "
                          "a postgresql:TABLE destination (default: keep all)")  # fmt: skip
    qly.add_argument("--current-hours", type=_positive, default=24)
    qly.add_argument("--baseline-days", type=_positive, default=7)
    qly.add_argument("--report", type=Path, default=Path("quality-report.html"),
                     help="where the HTML report goes (default: quality-report.html)")  # fmt: skip
    qly.add_argument("--pushgateway", default=None,
                     help="push the result to this Pushgateway "
                          "(default: QUALITY_PUSHGATEWAY_URL)")  # fmt: skip

    bkp = sub(
        "registry-backup",
        "one consistent snapshot of ENV's registry database (Feast's registry and the "
        "platform's tables) to a file",
        cmd_registry_backup,
    )
    bkp.add_argument(
        "--output",
        type=Path,
        required=True,
        help="the file to write, or a directory to write registry-ENV-<snapshot time>.backup.gz in",
    )
    bkp.add_argument(
        "--retain",
        type=_positive,
        default=None,
        help="with a directory: keep the newest N backups of ENV there, delete the older ones",
    )
    rst = sub(
        "registry-restore",
        "restore ENV's registry database from a registry-backup file into an empty database "
        "(or over one, with --replace); watermarks later than the snapshot are lowered to it",
        cmd_registry_restore,
    )
    rst.add_argument(
        "--input",
        type=Path,
        required=True,
        help="the backup file, or a directory: the newest backup of ENV in it",
    )
    rst.add_argument(
        "--replace",
        action="store_true",
        help="drop the tables of a database that holds a registry, then restore",
    )

    rot = sub(
        "rotate-password",
        "change a store's password in place, read from standard input (never the command "
        "line): redis --add a new one beside the old, --remove the old; postgres --set",
        cmd_rotate_password,
    )
    rot.add_argument("store", choices=["redis", "postgres"])
    action = rot.add_mutually_exclusive_group(required=True)
    action.add_argument("--add", dest="action", action="store_const", const="add",
                        help="redis: the user accepts this password too")  # fmt: skip
    action.add_argument("--remove", dest="action", action="store_const", const="remove",
                        help="redis: the user no longer accepts this password")  # fmt: skip
    action.add_argument("--set", dest="action", action="store_const", const="set",
                        help="postgres: the role's password becomes this one")  # fmt: skip
    skw = sub(
        "skew-check",
        "served vectors against training rows for sampled keys; exit 1 on any mismatch",
        cmd_skew_check,
    )
    skw.add_argument(
        "--server-url", default=None, help="the feature server (default: SKEW_CHECK_SERVER_URL)"
    )
    skw.add_argument("--rows", type=_positive, default=None, help="entity rows (default 200)")
    skw.add_argument("--seed", type=int, default=None, help="for the same sample again")
    skw.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    skw.add_argument(
        "--pushgateway",
        default=None,
        help="push the result to this Pushgateway (default: SKEW_CHECK_PUSHGATEWAY_URL)",
    )
    tset = sub(
        "training-set",
        "point-in-time training set for labels (file or SQL) as parquet, in bounded chunks",
        cmd_training_set,
    )
    source = tset.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="labels as a .parquet or .csv file")
    source.add_argument("--labels-sql", help="labels as a SQL query over the offline store")
    wanted = tset.add_mutually_exclusive_group()
    wanted.add_argument(
        "--feature-service", default="fraud_detection_v1", help="default: fraud_detection_v1"
    )
    wanted.add_argument("--features", help="comma-separated view:feature references")
    tset.add_argument("--output", type=Path, required=True, help="the parquet file to write")
    tset.add_argument("--name", default=None,
                      help="the name it is recorded under, for a model to point to and "
                           "quality --training-set to find (default: the output's "
                           "stem)")  # fmt: skip
    tset.add_argument(
        "--chunk-rows", type=_positive, default=200_000, help="labels per chunk (default 200000)"
    )
    tset.add_argument(
        "--engine",
        choices=["auto", "fast", "feast", "ray"],
        default="auto",
        help="fast: DuckDB ASOF joins; ray: the same, a chunk per Ray task "
        "(TRAINING_RAY_ADDRESS); feast: get_historical_features; auto: fast where it applies",
    )
    sets = sub(
        "training-sets",
        "the training sets training-set wrote, newest first, as JSON",
        cmd_training_sets,
    )
    sets.add_argument("--name", default=None, help="only those of this name")
    sets.add_argument("--limit", type=_positive, default=20)
    return top


# Commands that import the feature repository: Feast's type checks refuse a mistyped
# definition there.
CHECKED_DEFINITIONS = frozenset({"plan", "apply", "demo", "feast"})


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if argv is None and args.command not in CHECKED_DEFINITIONS:
        # A process of its own (a server, a job) starts without typeguard's instrumentation.
        from feature_platform.feast_seam import patches

        patches.import_feast_unchecked()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        say(f"config error: {exc}")
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
