"""Serving: :func:`serve` runs the sandbox on the current loop (uvicorn on a pre-bound socket,
graceful SIGTERM/SIGINT); :func:`main` is ``python -m ticketing_local.sandbox.mollie``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from starlette.applications import Starlette

from ..common import configure_logging, sandbox_parser, serve_sandbox
from .app import create_app
from .config import (
    DEFAULT_AUTO_SETTLE_MS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIME_SCALE,
    LOGGER_NAME,
    SandboxConfig,
)

log = logging.getLogger(LOGGER_NAME)


async def serve(
    config: SandboxConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ready: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
    on_app: Callable[[Starlette], None] | None = None,
) -> None:
    """Run the sandbox on the current loop until signalled or cancelled (``serve_sandbox``)."""
    keys = "any live_/test_ key" if config.api_keys is None else f"{len(config.api_keys)} key(s)"
    await serve_sandbox(
        create_app(config),
        host,
        port,
        ready,
        name="mollie sandbox",
        logger=log,
        listening_note=f" (profile {config.profile_id}, {keys})",
        handle_signals=handle_signals,
        on_app=on_app,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse command-line options and run the sandbox until SIGTERM/SIGINT."""
    parser = sandbox_parser(
        prog="python -m ticketing_local.sandbox.mollie",
        description="Local emulator of the Mollie API v2 (payments, refunds, classic webhooks).",
        port_env="MOLLIE_SANDBOX_PORT",
        default_port=DEFAULT_PORT,
        keys_help="key directory holding mollie/mollie.json: only its api_key is accepted "
        "(env TICKETING_KEYS_DIR; without it any live_/test_ key is)",
        default_time_scale=DEFAULT_TIME_SCALE,
        default_auto_settle_ms=DEFAULT_AUTO_SETTLE_MS,
        auto_settle_help="refunds walk pending → processing → refunded, one step per this many "
        "ms, -1 = never",
    )
    parser.add_argument(
        "--public-url",
        default=os.environ.get("MOLLIE_SANDBOX_PUBLIC_URL") or None,
        help="base of the links in responses (env MOLLIE_SANDBOX_PUBLIC_URL; default: the "
        "address each request was sent to)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    knobs = {
        "time_scale": args.time_scale,
        "auto_settle_ms": args.auto_settle_ms,
        "public_url": args.public_url,
    }
    if args.keys is not None:
        config = SandboxConfig.from_keys_dir(args.keys, **knobs)
    else:
        config = SandboxConfig(**knobs)
    asyncio.run(serve(config, args.host, args.port))
    return 0
