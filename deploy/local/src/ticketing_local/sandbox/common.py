"""What every provider sandbox shares: background tasks with one pooled aiohttp session for the
outgoing deliveries (notifications, webhooks), the control API's plumbing (plain JSON in and out,
errors as ``{"code", "message"}``), serving an app, and the common command-line options."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..serving import env_float, env_int, serve_app


class Background:
    """Background tasks (deliveries, settlements) and the HTTP session they send with.

    Deliveries go out through aiohttp: under a burst (a hundred refunds settling per second) its
    client costs a fraction of httpx's CPU per request, and a sandbox must never be the slowest
    part of what a benchmark measures.
    """

    def __init__(
        self, logger: logging.Logger, *, timeout_s: float, user_agent: str, limit: int = 200
    ) -> None:
        self._log = logger
        self._timeout_s = timeout_s
        self._user_agent = user_agent
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.closing = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in the background (dropped once closing); failures are logged."""
        if self.closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def http(self) -> aiohttp.ClientSession:
        """The shared session (made on first use, inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                headers={"User-Agent": self._user_agent},
                trust_env=False,
                connector=aiohttp.TCPConnector(limit=self._limit),
            )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout_s: float,
        record: dict[str, Any],
    ) -> int | None:
        """POST ``body`` once (no redirects followed) and fill ``record``'s ``status_code``,
        ``error`` and ``elapsed_ms``; the HTTP status, or None when there was no answer in time."""
        started = time.monotonic()
        status: int | None = None
        try:
            async with asyncio.timeout(timeout_s):
                async with self.http().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    status = response.status
        except TimeoutError:
            record["error"] = f"no answer within {timeout_s:g} s"
        except aiohttp.ClientError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        record["status_code"] = status
        record["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        return status

    async def aclose(self) -> None:
        """Cancel what is still pending and close the session (idempotent)."""
        self.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class ControlError(Exception):
    """An error of a sandbox control API (plain JSON ``{"code", "message"}``, unsigned)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def control_body(request: Request) -> dict[str, Any]:
    """A control request's JSON object body (empty body: ``{}``)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ControlError(400, "PARAM_ERROR", "body must be JSON") from None
    if not isinstance(data, dict):
        raise ControlError(400, "PARAM_ERROR", "body must be a JSON object")
    return data


def valid_retry_after(value: object) -> bool:
    """A ``Retry-After`` a fault may carry: delay-seconds in 0..3600, or an HTTP date (printable
    ASCII only: it becomes a header as given)."""
    if type(value) is int:
        return 0 <= value <= 3600
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        return False
    try:
        return parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError):
        return False


def control(
    run: Callable[[Request], Awaitable[tuple[int, Any]]],
) -> Callable[[Request], Awaitable[Response]]:
    """A control endpoint: ``run`` answers ``(status, payload)``; None payload = empty body."""

    async def handle(request: Request) -> Response:
        try:
            status, payload = await run(request)
        except ControlError as err:
            return JSONResponse({"code": err.code, "message": err.message}, err.status)
        if payload is None:
            return Response(status_code=status)
        return JSONResponse(payload, status)

    return handle


def sandbox_parser(
    *,
    prog: str,
    description: str,
    port_env: str,
    default_port: int,
    keys_help: str,
    default_time_scale: float,
    default_auto_settle_ms: int,
    auto_settle_help: str,
) -> argparse.ArgumentParser:
    """The options every sandbox takes: ``--host``, ``--port`` (env ``port_env``), ``--keys``
    (env ``TICKETING_KEYS_DIR``), ``--time-scale`` (env ``SANDBOX_TIME_SCALE``) and
    ``--auto-settle-ms`` (env ``SANDBOX_AUTO_SETTLE_MS``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=env_int(port_env, default_port),
        help=f"port (env {port_env}, default %(default)s)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=os.environ.get("TICKETING_KEYS_DIR") or None,
        help=keys_help,
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=env_float("SANDBOX_TIME_SCALE", default_time_scale),
        help="factor on delivery retry delays (env SANDBOX_TIME_SCALE, default %(default)s)",
    )
    parser.add_argument(
        "--auto-settle-ms",
        type=int,
        default=env_int("SANDBOX_AUTO_SETTLE_MS", default_auto_settle_ms),
        help=f"{auto_settle_help} (env SANDBOX_AUTO_SETTLE_MS, default %(default)s)",
    )
    return parser


def configure_logging() -> None:
    """Log lines as the local stack's processes print them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def serve_sandbox(
    app: Starlette,
    host: str,
    port: int,
    ready: asyncio.Event | None,
    *,
    name: str,
    logger: logging.Logger,
    listening_note: str,
    handle_signals: bool,
    on_app: Callable[[Starlette], None] | None,
) -> None:
    """Run a sandbox's app (whose ``state.sandbox`` has ``aclose()``) until signalled or
    cancelled; ``ready`` is set once the port listens, ``on_app`` receives the app first (tests
    use ``app.state.sandbox``)."""
    if on_app is not None:
        on_app(app)
    await serve_app(
        app,
        host,
        port,
        name=name,
        logger=logger,
        ready=ready,
        handle_signals=handle_signals,
        listening_note=listening_note,
        aclose=app.state.sandbox.aclose,
    )
