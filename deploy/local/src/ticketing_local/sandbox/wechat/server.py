"""Serving: :func:`serve` runs the sandbox on the current loop (uvicorn on a pre-bound socket,
graceful SIGTERM/SIGINT); :func:`main` is ``python -m ticketing_local.sandbox.wechat``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

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


class _HTTPServer(uvicorn.Server):
    """uvicorn server that leaves signals to :func:`serve` and reports when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, so that bind errors surface as plain OSError.

    ``socket.create_server`` leaves ``proto`` 0, so asyncio would not set TCP_NODELAY on the
    accepted connections (it checks ``proto == IPPROTO_TCP``) and every response would stall
    ~40 ms on Nagle + delayed ACK; set it on the listener, which accepted sockets inherit.
    """
    family, _, _, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(addr[:2], family=family)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, http: _HTTPServer
) -> list[tuple[signal.Signals, Any]]:
    if threading.current_thread() is not threading.main_thread():
        return []

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        if http.should_exit:
            http.force_exit = True
        http.should_exit = True

    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((sig, previous))
    return installed


def _restore_signal_handlers(
    loop: asyncio.AbstractEventLoop, installed: list[tuple[signal.Signals, Any]]
) -> None:
    for sig, previous in installed:
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)


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
        sock = _bind(host, port)
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
    http = _HTTPServer(uv_config)
    http_task = asyncio.create_task(http.serve(sockets=[sock]), name="wechat-sandbox-http")
    listening = asyncio.create_task(http.listening.wait(), name="wechat-sandbox-listening")
    installed = _install_signal_handlers(loop, http) if handle_signals else []
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
        try:
            await asyncio.shield(http_task)
        except asyncio.CancelledError:
            http.should_exit = True
            await http_task
            raise
    finally:
        listening.cancel()
        _restore_signal_handlers(loop, installed)
        if not http_task.done():
            http.should_exit = True
            with contextlib.suppress(Exception):
                await http_task
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
