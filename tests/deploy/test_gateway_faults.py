"""The gateway in front of an API that is down: a 503 problem with Retry-After, never nginx's own
502 page, through the real nginx configuration. What an API answers itself (its own 503, say)
passes through unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_gateway
from ticketing_local.embedded import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

# what the refunds API stand-in answers: a service's own 503 (its database is away)
OWN_503 = {
    "type": "https://errors.ticketing.dev/database_unavailable",
    "title": "Service unavailable",
    "status": 503,
    "code": "database_unavailable",
    "detail": "the service's database cannot be reached now; try again after Retry-After",
}


def nginx(folder: Path, **upstreams: int) -> contextlib.AbstractContextManager[str]:
    """The gateway, rendered as the local stack renders it, in front of these API ports."""
    return run_gateway(
        folder, **{f"{svc.upper()}_API": f"127.0.0.1:{p}" for svc, p in upstreams.items()}
    )


@pytest.fixture
async def refunds_api() -> AsyncIterator[int]:
    """A stand-in refunds API whose database is away: every request is its own 503 problem."""
    body = json.dumps(OWN_503).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
        f"Retry-After: 7\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        yield port


@pytest.fixture
async def notifications_api() -> AsyncIterator[int]:
    """A stand-in notifications API that dies with the request it was sent: the connection
    closes without an answer (a process killed mid-request)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        yield port


@pytest.fixture
def gateway(tmp_path: Path, refunds_api: int, notifications_api: int) -> Iterator[str]:
    # nothing listens on the orders and payments ports: connection refused
    with nginx(
        tmp_path,
        orders=free_port(),
        payments=free_port(),
        refunds=refunds_api,
        notifications=notifications_api,
    ) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/events/e1"),  # orders
        ("POST", "/v1/events/e1/registrations"),  # orders: a purchase
        ("POST", "/v1/webhooks/mollie"),  # payments: the provider sends it again later
        ("POST", "/v1/orders/o1/payments"),  # payments
        ("GET", "/v1/notifications/n1"),  # notifications: cut off mid-request
    ],
)
async def test_an_api_that_is_down_is_a_503_problem_to_retry(
    gateway: str, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as c:
        resp = await c.request(method, path, content=b"id=tr_x")
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.json()["code"] == "service_unavailable"
    assert resp.json()["status"] == 503
    assert resp.headers["x-request-id"]


async def test_what_an_api_answers_itself_passes_through(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as c:
        resp = await c.get("/v1/orders/o1/refunds")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "7"
    assert resp.json() == OWN_503
