"""Abuse limits at the gateway, through the real nginx configuration: purchases, checkouts and
refunds per bearer token and per client address, webhooks per client address; X-Forwarded-For
believed only from the configured proxies. A limit answers 429 problem+json with Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, run_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")


def gateway(stack: Stack, folder: Path, **limits: str) -> contextlib.AbstractContextManager[str]:
    """A second gateway in front of the running stack's APIs, with these limits."""
    apis = {
        f"{svc}_API": f"127.0.0.1:{stack.port(f'{svc}_API_PORT')}"
        for svc in ("ORDERS", "PAYMENTS", "REFUNDS", "NOTIFICATIONS")
    }
    return run_gateway(folder, **apis, **limits)


@pytest.fixture(scope="module")
async def paid_ticket_type(stack: Stack) -> AsyncIterator[tuple[str, str]]:
    """A paid ticket type whose unpaid limit is out of the way (the gateway's limits are tested)."""
    tenant = f"t-abuse-{uuid.uuid4().hex[:6]}"
    admin = stack.token("abuse-admin", roles={tenant: "owner"})
    async with httpx.AsyncClient(
        base_url=stack.gateway, headers={"Authorization": f"Bearer {admin}"}, timeout=10
    ) as c:
        event = await c.post(
            f"/v1/tenants/{tenant}/events",
            json={
                "title": "Limits",
                "starts_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
                "currency": "CNY",
            },
        )
        assert event.status_code == 201, event.text
        tt = await c.post(
            f"/v1/events/{event.json()['id']}/ticket-types",
            json={
                "name": "Standard",
                "max_quantity": 5000,
                "max_unpaid_per_buyer": 5000,
                "price_tiers": [{"quantity": 1, "total_amount": 100}],
            },
        )
        assert tt.status_code == 201, tt.text
        yield event.json()["id"], tt.json()["id"]


def _buy(
    client: httpx.AsyncClient,
    event_tt: tuple[str, str],
    token: str,
    scheme: str = "Bearer",
    **headers: str,
) -> Any:
    event_id, tt_id = event_tt
    return client.post(
        f"/v1/events/{event_id}/registrations",
        json={"ticket_type_id": tt_id, "quantity": 1},
        headers={"Authorization": f"{scheme} {token}", **headers},
    )


def _assert_rate_limited(resp: httpx.Response) -> None:
    assert resp.status_code == 429
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["code"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1


async def test_one_token_posting_purchases_too_fast_is_told_to_slow_down(
    stack: Stack, paid_ticket_type: tuple[str, str]
) -> None:
    """The stack's gateway: 10 purchases/s per token with a burst of 20; the same token's reads,
    and another token's purchases, are not held back."""
    hasty, patient = stack.token("hasty-buyer"), stack.token("patient-buyer")
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        # however the scheme is written (the services accept any case), it is the same token
        schemes = ("Bearer", "BEARER", "bearer")
        answers = await asyncio.gather(
            *(_buy(c, paid_ticket_type, hasty, schemes[n % 3]) for n in range(45))
        )
        limited = [a for a in answers if a.status_code == 429]
        served = [a for a in answers if a.status_code == 201]
        assert len(served) + len(limited) == 45, {a.status_code for a in answers}
        assert 20 <= len(served) <= 24 and len(limited) >= 21
        for resp in limited:
            _assert_rate_limited(resp)
        assert (await _buy(c, paid_ticket_type, patient)).status_code == 201
        mine = await c.get("/v1/me/orders", headers={"Authorization": f"Bearer {hasty}"})
        assert mine.status_code == 200 and len(mine.json()["items"]) == len(served)


async def _twelve_clients_at_once(
    stack: Stack, paid_ticket_type: tuple[str, str], folder: Path, network: str, **limits: str
) -> list[int]:
    """Twelve purchases at once through a gateway allowing one per second per client address
    (a burst of 3), each with its own token and an X-Forwarded-For of ``network``.n."""
    with gateway(
        stack, folder, GATEWAY_RATE_PER_ADDRESS="1r/s", GATEWAY_BURST_PER_ADDRESS="3", **limits
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            answers = await asyncio.gather(
                *(
                    _buy(
                        c,
                        paid_ticket_type,
                        stack.token(f"client-{uuid.uuid4().hex[:8]}"),
                        **{"X-Forwarded-For": f"{network}.{n}"},
                    )
                    for n in range(12)
                )
            )
    return [a.status_code for a in answers]


async def test_one_address_is_limited_whatever_x_forwarded_for_it_claims(
    stack: Stack, paid_ticket_type: tuple[str, str], tmp_path: Path
) -> None:
    """The gateway believes no proxy: a made-up X-Forwarded-For makes no one another client."""
    codes = await _twelve_clients_at_once(stack, paid_ticket_type, tmp_path, "203.0.113")
    assert codes.count(201) <= 4 and codes.count(429) >= 8, codes


async def test_a_trusted_proxy_names_the_clients_it_forwards(
    stack: Stack, paid_ticket_type: tuple[str, str], tmp_path: Path
) -> None:
    """Behind a load balancer the gateway trusts, the clients it names are told apart: all
    twelve are served under the same per-address limit."""
    codes = await _twelve_clients_at_once(
        stack, paid_ticket_type, tmp_path, "198.51.100", GATEWAY_TRUSTED_PROXIES="127.0.0.1/32"
    )
    assert codes == [201] * 12


async def test_webhooks_are_limited_per_address(stack: Stack, tmp_path: Path) -> None:
    """Unsigned junk posted to the webhook as fast as one can: past the burst, 429 before it
    reaches the payments service at all."""
    with gateway(
        stack,
        tmp_path / "webhooks",
        GATEWAY_WEBHOOK_RATE_PER_ADDRESS="1r/s",
        GATEWAY_WEBHOOK_BURST_PER_ADDRESS="5",
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            answers = await asyncio.gather(
                *(c.post("/v1/webhooks/mollie", content=b"id=tr_junk") for _ in range(20))
            )
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 13
    for resp in limited:
        _assert_rate_limited(resp)
    assert all(a.status_code in (200, 429) for a in answers)


async def test_reads_and_other_routes_are_never_limited(stack: Stack, tmp_path: Path) -> None:
    token = stack.token("reader")
    with gateway(
        stack,
        tmp_path / "reads",
        GATEWAY_RATE_PER_TOKEN="1r/s",
        GATEWAY_BURST_PER_TOKEN="1",
        GATEWAY_RATE_PER_ADDRESS="1r/s",
        GATEWAY_BURST_PER_ADDRESS="1",
    ) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            answers = await asyncio.gather(*(c.get("/v1/me/orders") for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
