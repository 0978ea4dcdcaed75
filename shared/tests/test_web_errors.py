"""An unexpected error is a logged problem+json 500 on a connection that stays usable: the
gateway keeps upstream connections alive, and a connection closed after a 500 would make it
answer the next, innocent request on that connection with a 502. The database being unavailable
is no bug: 503 with Retry-After, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from ticketing_local.embedded import free_port
from ticketing_local.testing import wait_until
from ticketing_shared import db
from ticketing_shared.errors import install_handlers
from ticketing_shared.web import _Observe

# what asyncpg and our pool raise, as they raise it (messages included: see db.unavailable)
UNAVAILABLE = {
    "refused": db.DatabaseUnavailable("cannot connect to the database: ConnectionRefusedError()"),
    "dropped": asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation: terminating connection due to "
        "administrator command"
    ),
    "closed-in-transaction": asyncpg.InterfaceError(
        "cannot call Transaction.__aexit__(): the underlying connection is closed"
    ),
    "starting-up": asyncpg.CannotConnectNowError("the database system is starting up"),
    "shutting-down": asyncpg.AdminShutdownError("terminating connection due to administrator"),
    "crashed": asyncpg.CrashShutdownError("terminating connection because of crash"),
    "full": asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    # a statement on a connection the server had just ended (its FATAL came, its close not yet)
    "ended-while-idle": asyncpg.InternalClientError(
        "cannot switch to state 11; another operation (2) is in progress"
    ),
}
# ...and what is a bug of ours however close to the database it happens
BUGS = {
    "driver-misuse": asyncpg.InterfaceError(
        "cannot perform operation: another operation is in progress"
    ),
    "released": asyncpg.InterfaceError(
        "cannot call Connection.fetch(): connection has been released back to the pool"
    ),
    "protocol": asyncpg.ProtocolViolationError("bind message supplies 2 parameters"),
    "driver-internal": asyncpg.InternalClientError("unknown error in protocol implementation"),
    "os-error": FileNotFoundError("/no/such/key.pem"),
    "timeout": TimeoutError(),
}
FAULTS: dict[str, BaseException] = {**UNAVAILABLE, **BUGS}


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

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise FAULTS[name]

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


@pytest.mark.parametrize("fault", sorted(UNAVAILABLE))
async def test_the_database_unavailable_is_a_503_to_retry(server: int, fault: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        status, headers, body = await _exchange(reader, writer, f"/raise/{fault}")
        assert status == 503, body
        assert headers["content-type"] == "application/problem+json"
        assert int(headers["retry-after"]) >= 1
        assert b'"code":"database_unavailable"' in body
        status, _, _ = await _exchange(reader, writer, "/fine")
        assert status == 200
    finally:
        writer.close()


@pytest.mark.parametrize("fault", sorted(BUGS))
async def test_a_bug_near_the_database_stays_a_500(server: int, fault: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        status, headers, body = await _exchange(reader, writer, f"/raise/{fault}")
        assert status == 500, body
        assert "retry-after" not in headers
        assert b'"code":"internal_error"' in body
    finally:
        writer.close()


async def test_a_pool_that_cannot_connect_says_the_database_is_unavailable() -> None:
    """Connection refused is raised as db.DatabaseUnavailable (a bare OSError says nothing
    about the database), and neither it nor a wait that timed out loses the pool a turn."""
    pool = await db.create_pool(
        f"postgresql://nobody@127.0.0.1:{free_port()}/x", min_size=0, max_size=1
    )
    try:
        for _ in range(3):  # one turn only: a lost turn would hang the next attempt
            with pytest.raises(db.DatabaseUnavailable) as refused:
                await asyncio.wait_for(pool.fetchval("SELECT 1"), 5)
            assert isinstance(refused.value.__cause__, OSError)
        await pool._turns.acquire()  # the pool's only turn, held by someone else
        with pytest.raises(db.DatabaseUnavailable):
            await pool.acquire(timeout=0.05)
        pool._turns.release()
        with pytest.raises(db.DatabaseUnavailable):
            await asyncio.wait_for(pool.fetchval("SELECT 1"), 5)
    finally:
        await pool.close()
