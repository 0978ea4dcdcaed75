"""Serving the local stack's own HTTP processes (mail sink, provider sandboxes) on one loop.

Shared by those processes: a uvicorn server that reports when it listens and leaves signals to
its caller, a listening socket with TCP_NODELAY, SIGTERM/SIGINT handlers that stop the server
gracefully (a second signal forces it), :func:`serve_app` that puts them together for one ASGI
app, and the ``env_int``/``env_float`` helpers of the command lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

InstalledHandlers = list[tuple[signal.Signals, Any]]


class ListeningServer(uvicorn.Server):
    """uvicorn server that leaves signals to its caller and reports when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def bind(host: str, port: int) -> socket.socket:
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


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, http: ListeningServer
) -> InstalledHandlers:
    """SIGTERM/SIGINT stop ``http`` gracefully (main thread only); returns what to restore."""
    if threading.current_thread() is not threading.main_thread():
        return []

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        if http.should_exit:
            http.force_exit = True
        http.should_exit = True

    installed: InstalledHandlers = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((sig, previous))
    return installed


def restore_signal_handlers(loop: asyncio.AbstractEventLoop, installed: InstalledHandlers) -> None:
    for sig, previous in installed:
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)


async def wait_served(http: ListeningServer, http_task: asyncio.Task[None]) -> None:
    """Wait until the server stops; when cancelled, let it finish its requests first."""
    try:
        await asyncio.shield(http_task)
    except asyncio.CancelledError:
        http.should_exit = True
        await http_task
        raise


async def stop_server(http: ListeningServer, http_task: asyncio.Task[None]) -> None:
    """Ask the server to stop (if it still runs) and wait for it."""
    if not http_task.done():
        http.should_exit = True
        with contextlib.suppress(Exception):
            await http_task


def env_int(name: str, default: int) -> int:
    """``int(os.environ[name])``, or ``default`` when unset or empty."""
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    """``float(os.environ[name])``, or ``default`` when unset or empty."""
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


async def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    name: str,
    logger: logging.Logger,
    ready: asyncio.Event | None = None,
    handle_signals: bool = True,
    listening_note: str = "",
    aclose: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` with uvicorn on a pre-bound socket until signalled or cancelled.

    ``ready`` is set once the port listens. ``logger`` gets ``"{name} listening on
    http://HOST:PORT{listening_note}"`` then ``"{name} stopped"``. ``aclose`` (the app's own
    clean-up: background deliveries, HTTP clients) runs last, also when binding fails. When
    cancelled, in-flight requests are finished first (``timeout_graceful_shutdown`` 5 s).
    """
    loop = asyncio.get_running_loop()
    try:
        sock = bind(host, port)
    except BaseException:
        if aclose is not None:
            await aclose()
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
    task_name = name.replace(" ", "-")
    http_task = asyncio.create_task(http.serve(sockets=[sock]), name=f"{task_name}-http")
    listening = asyncio.create_task(http.listening.wait(), name=f"{task_name}-listening")
    installed = install_signal_handlers(loop, http) if handle_signals else []
    try:
        await asyncio.wait({http_task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if http.listening.is_set():
            addr = sock.getsockname()
            logger.info("%s listening on http://%s:%d%s", name, addr[0], addr[1], listening_note)
            if ready is not None:
                ready.set()
        await wait_served(http, http_task)
    finally:
        listening.cancel()
        restore_signal_handlers(loop, installed)
        await stop_server(http, http_task)
        sock.close()
        if aclose is not None:
            await aclose()
        logger.info("%s stopped", name)


#: a sandbox's ``serve(config, host, port, ready, *, handle_signals, on_app)``
SandboxServe = Callable[..., Awaitable[None]]


@contextlib.asynccontextmanager
async def in_process(
    serve: SandboxServe, config: Any, *, host: str = "127.0.0.1", timeout_s: float = 20.0
) -> AsyncIterator[tuple[str, Starlette]]:
    """Run a sandbox's ``serve`` on this loop on a free port (tests): yields its base URL and
    app once it listens, and stops it afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    ready = asyncio.Event()
    apps: list[Starlette] = []
    task: asyncio.Future[None] = asyncio.ensure_future(
        serve(config, host, port, ready, handle_signals=False, on_app=apps.append)
    )
    waiter: asyncio.Future[Any] = asyncio.ensure_future(ready.wait())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
            raise RuntimeError("the sandbox stopped before it was ready")
        if waiter not in done:
            raise RuntimeError(f"the sandbox did not listen within {timeout_s:g} s")
        yield f"http://{host}:{port}", apps[0]
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=timeout_s)
