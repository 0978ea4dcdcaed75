"""Serving: :func:`serve` runs the sandbox on the current loop (uvicorn on a pre-bound socket,
graceful SIGTERM/SIGINT); :func:`main` is ``python -m ticketing_local.sandbox.wechat``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from ...serving import (
    ListeningServer,
    bind,
    install_signal_handlers,
    restore_signal_handlers,
    stop_server,
    wait_served,
)
from .app import create_app
from .config import (
    DEFAULT_AUTO_SETTLE_MS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIME_SCALE,
    LOGGER_NAME,
    SandboxConfig,
)
from .sandbox import WeChatSandbox

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
    """Run the sandbox on the current loop until signalled or cancelled.

    ``ready`` is set once the port is listening; ``on_app`` receives the app first (tests use
    ``app.state.sandbox``).
    """
    loop = asyncio.get_running_loop()
    app = create_app(config)
    sandbox: WeChatSandbox = app.state.sandbox
    if on_app is not None:
        on_app(app)
    try:
        sock = bind(host, port)
    except BaseException:
        await sandbox.aclose()
        raise
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    http = ListeningServer(uv_config)
    http_task = asyncio.create_task(http.serve(sockets=[sock]), name="wechat-sandbox-http")
    listening = asyncio.create_task(http.listening.wait(), name="wechat-sandbox-listening")
    installed = install_signal_handlers(loop, http) if handle_signals else []
    try:
        await asyncio.wait({http_task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if http.listening.is_set():
            addr = sock.getsockname()
            log.info(
                "wechat sandbox listening on http://%s:%d (mchid %s, %s)",
                addr[0],
                addr[1],
                config.mchid,
                config.public_key_id,
            )
            if ready is not None:
                ready.set()
        await wait_served(http, http_task)
    finally:
        listening.cancel()
        restore_signal_handlers(loop, installed)
        await stop_server(http, http_task)
        sock.close()
        await sandbox.aclose()
        log.info("wechat sandbox stopped")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse command-line options and run the sandbox until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m ticketing_local.sandbox.wechat",
        description="Local emulator of the WeChat Pay API v3 (direct merchant, public-key mode).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int("WECHAT_SANDBOX_PORT", DEFAULT_PORT),
        help="port (env WECHAT_SANDBOX_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=os.environ.get("TICKETING_KEYS_DIR") or None,
        help="key directory holding wechat/ (env TICKETING_KEYS_DIR; required)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=_env_float("SANDBOX_TIME_SCALE", DEFAULT_TIME_SCALE),
        help="factor on notification retry delays (env SANDBOX_TIME_SCALE, default %(default)s)",
    )
    parser.add_argument(
        "--auto-settle-ms",
        type=int,
        default=_env_int("SANDBOX_AUTO_SETTLE_MS", DEFAULT_AUTO_SETTLE_MS),
        help="refunds settle SUCCESS after this many ms, -1 = never "
        "(env SANDBOX_AUTO_SETTLE_MS, default %(default)s)",
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = SandboxConfig.from_keys_dir(
        args.keys,
        time_scale=args.time_scale,
        auto_settle_ms=args.auto_settle_ms,
        enforce_refund_spacing=args.enforce_refund_spacing,
        refund_notify_url=args.refund_notify_url,
    )
    asyncio.run(serve(config, args.host, args.port))
    return 0
