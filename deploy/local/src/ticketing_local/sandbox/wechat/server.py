"""Serving: :func:`serve` runs the sandbox on the current loop (uvicorn on a pre-bound socket,
graceful SIGTERM/SIGINT); :func:`main` is ``python -m ticketing_local.sandbox.wechat``."""

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
    await serve_sandbox(
        create_app(config),
        host,
        port,
        ready,
        name="wechat sandbox",
        logger=log,
        listening_note=f" (mchid {config.mchid}, {config.public_key_id})",
        handle_signals=handle_signals,
        on_app=on_app,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse command-line options and run the sandbox until SIGTERM/SIGINT."""
    parser = sandbox_parser(
        prog="python -m ticketing_local.sandbox.wechat",
        description="Local emulator of the WeChat Pay API v3 (direct merchant, public-key mode).",
        port_env="WECHAT_SANDBOX_PORT",
        default_port=DEFAULT_PORT,
        keys_help="key directory holding wechat/ (env TICKETING_KEYS_DIR; required)",
        default_time_scale=DEFAULT_TIME_SCALE,
        default_auto_settle_ms=DEFAULT_AUTO_SETTLE_MS,
        auto_settle_help="refunds settle SUCCESS after this many ms, -1 = never",
    )
    parser.add_argument(
        "--enforce-refund-spacing",
        action="store_true",
        default=os.environ.get("WECHAT_SANDBOX_ENFORCE_REFUND_SPACING", "") in ("1", "true"),
        help="refuse refunds of one order less than 1 minute apart "
        "(env WECHAT_SANDBOX_ENFORCE_REFUND_SPACING=1)",
    )
    parser.add_argument(
        "--refund-notify-url",
        default=os.environ.get("WECHAT_SANDBOX_REFUND_NOTIFY_URL") or None,
        help="notify_url for refunds that carry none (env WECHAT_SANDBOX_REFUND_NOTIFY_URL)",
    )
    args = parser.parse_args(argv)
    if args.keys is None:
        parser.error("the key directory is required: pass --keys DIR or set TICKETING_KEYS_DIR")
    configure_logging()
    config = SandboxConfig.from_keys_dir(
        args.keys,
        time_scale=args.time_scale,
        auto_settle_ms=args.auto_settle_ms,
        enforce_refund_spacing=args.enforce_refund_spacing,
        refund_notify_url=args.refund_notify_url,
    )
    asyncio.run(serve(config, args.host, args.port))
    return 0
