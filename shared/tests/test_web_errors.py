"""An unexpected error is a logged problem+json 500 on a connection that stays usable: the
gateway keeps upstream connections alive, and a connection closed after a 500 would make it
answer the next, innocent request on that connection with a 502."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from ticketing_shared.embedded import free_port
from ticketing_shared.errors import install_handlers
from ticketing_shared.testing import wait_until
from ticketing_shared.web import _Observe


def _app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    app.add_middleware(_Observe)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/value-refused")
    async def value_refused() -> None:
        raise asyncpg.NumericValueOutOfRangeError("bigint out of range")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
async def server() -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(_app(), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    await wait_until(lambda: asyncio.sleep(0, srv.started), timeout=10, interval=0.01)
    yield port
    srv.should_exit = True
    await task


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str], bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


async def test_a_500_leaves_the_connection_usable_for_the_next_request(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        status, headers, body = await _exchange(reader, writer, "/boom")
        assert status == 500
        assert headers["content-type"] == "application/problem+json"
        assert b'"code":"internal_error"' in body and b"a bug" not in body
        assert headers.get("connection") != "close"
        # the same connection answers the next request
        status, headers, body = await _exchange(reader, writer, "/fine")
        assert (status, body) == (200, b'{"ok":"yes"}')
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        writer.close()


async def test_a_value_the_database_refuses_is_the_clients_422(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        status, _, body = await _exchange(reader, writer, "/value-refused")
        assert status == 422 and b'"code":"invalid_input"' in body
        status, _, _ = await _exchange(reader, writer, "/fine")
        assert status == 200
    finally:
        writer.close()
