"""The command line every service shares: ``python -m <service> <command>``.

Commands::

    api                         serve the HTTP API (uvicorn)
    worker                      run consumers, the outbox relay and schedulers
    migrate                     apply pending SQL migrations (safe to run concurrently)
    outbox replay --since 15m   re-publish the outbox rows created since then
    outbox replay --published-since 2026-12-03T10:00:00Z
                                re-publish the rows published since then (all a broker that
                                lost its log had been given since it started)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from . import db, kafka, outbox
from .settings import ServiceSettings


def run_cli(
    *,
    service: str,
    settings_factory: Callable[[], ServiceSettings],
    api_factory: Callable[[ServiceSettings], Any],
    worker_factory: Callable[[ServiceSettings], Any],
    migrations_dir: Path,
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {service}", description=f"{service} service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the HTTP API")
    sub.add_parser("worker", help="run consumers, the outbox relay and schedulers")
    sub.add_parser("migrate", help="apply pending migrations")
    ob = sub.add_parser("outbox", help="outbox operations")
    ob_sub = ob.add_subparsers(dest="outbox_command", required=True)
    rp = ob_sub.add_parser("replay", help="re-publish outbox rows created or published since")
    when = rp.add_mutually_exclusive_group(required=True)
    when.add_argument("--since", help="rows created within: e.g. 90s, 15m, 2h, 1d")
    when.add_argument(
        "--published-since",
        type=_timestamp,
        help="rows published at or after this time (ISO 8601 with a zone, or a Unix time)",
    )
    args = parser.parse_args(argv)
    settings = settings_factory()

    if args.command == "migrate":
        applied = asyncio.run(
            db.migrate(
                settings.migration_dsn(),
                db.shared_migrations() + db.dir_migrations(service, migrations_dir),
                runtime_role=db.user_of(settings.database_url),
            )
        )
        print(f"{service}: {len(applied)} migration(s) applied", *applied, sep="\n  ")
        return 0
    if args.command == "outbox":
        since = outbox.parse_duration(args.since) if args.since else None

        async def _replay() -> int:
            # after a memory-only broker restart the topics are gone: recreate them first
            await kafka.ensure_topics(
                kafka.client_options(settings),
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
            )
            conn = await asyncpg.connect(settings.database_url)
            try:
                return await outbox.replay(conn, since=since, published_since=args.published_since)
            finally:
                await conn.close()

        count = asyncio.run(_replay())
        window = f"since {args.since}" if args.since else f"published since {args.published_since}"
        print(f"{service}: {count} outbox row(s) queued for re-publishing ({window})")
        return 0

    import gc

    import uvicorn

    # Long-lived servers: move what start-up allocated out of the collector's sight and collect
    # young objects less often; full collections of a busy heap are what stretch tail latency.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if args.command == "api":
        app, host, port = api_factory(settings), settings.api_host, settings.api_port
    else:
        app, host, port = worker_factory(settings), settings.worker_host, settings.worker_port
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10
    )
    return 0


def _timestamp(text: str) -> datetime:
    """An aware time: ISO 8601 with a zone, or seconds since the epoch."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone")
    return value


def main_for(**kwargs: Any) -> None:
    sys.exit(run_cli(**kwargs))
