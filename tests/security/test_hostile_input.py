"""What a careless client or a fuzzer sends, through the gateway: each of these once reached a
500 or was accepted; each is now a 422 problem (or a refusal of its own), never a 5xx."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def staff(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    tenant = f"t-hostile-{uuid.uuid4().hex[:6]}"
    token = stack.token("hostile-admin", roles={tenant: "owner"})
    async with httpx.AsyncClient(
        base_url=stack.gateway, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        event = await c.post(
            f"/v1/tenants/{tenant}/events",
            json={
                "title": "Hostile",
                "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                "currency": "CNY",
            },
        )
        assert event.status_code == 201, event.text
        yield c, tenant, event.json()["id"]


def _refused(resp: httpx.Response, status: int = 422) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


TIER = [{"quantity": 1, "total_amount": 100}]
EVENT: dict[str, Any] = {"title": "x", "currency": "CNY"}
STARTS = "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("NUL in a title", {**EVENT, "starts_at": STARTS, "title": "gala\x00"}),
        ("time far in the past", {**EVENT, "starts_at": "0001-01-01T00:00:00+01:00"}),
        ("time far in the future", {**EVENT, "starts_at": "9999-12-31T23:59:59-01:00"}),
        ("time without an offset", {**EVENT, "starts_at": "2030-01-01T00:00:00"}),
        ("unknown field", {**EVENT, "starts_at": STARTS, "admin": True}),
    ],
)
async def test_event_bodies(
    staff: tuple[httpx.AsyncClient, str, str], what: str, body: Any
) -> None:
    c, tenant, _ = staff
    _refused(await c.post(f"/v1/tenants/{tenant}/events", json=body))


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("price beyond any amount", {"price_tiers": [{"quantity": 1, "total_amount": 10**19}]}),
        ("negative price", {"price_tiers": [{"quantity": 1, "total_amount": -1}]}),
        ("huge seat count", {"max_quantity": 2**63, "price_tiers": TIER}),
        (
            "cut-off of a billion days",
            {
                "price_tiers": TIER,
                "use_tenant_cancellation_policy": False,
                "cancellation_policy": {"allow_cancellation": True, "cutoff_days": 10**12},
            },
        ),
        (
            "a thousand tiers",
            {"price_tiers": [{"quantity": q, "total_amount": q} for q in range(1, 1001)]},
        ),
        ("NUL in a name", {"name": "\x00", "price_tiers": TIER}),
    ],
)
async def test_ticket_type_bodies(
    staff: tuple[httpx.AsyncClient, str, str], what: str, body: Any
) -> None:
    c, _, event_id = staff
    full = {"name": "Standard", "max_quantity": 10, **body}
    _refused(await c.post(f"/v1/events/{event_id}/ticket-types", json=full))


@pytest.mark.parametrize(
    "query",
    [{"offset": 2**63}, {"offset": -1}, {"limit": 10**9}, {"limit": 0}, {"limit": "all"}],
)
async def test_paging_is_bounded(staff: tuple[httpx.AsyncClient, str, str], query: Any) -> None:
    c, _, event_id = staff
    _refused(await c.get(f"/v1/events/{event_id}/registrations", params=query))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tenants/a,b/events",
        "/v1/tenants/*/events",
        "/v1/tenants/%00/events",
        f"/v1/tenants/{'t' * 65}/events",
    ],
)
async def test_tenant_ids_in_paths_are_checked(
    staff: tuple[httpx.AsyncClient, str, str], path: str
) -> None:
    c, _, _ = staff
    resp = await c.post(path, json={**EVENT, "starts_at": STARTS})
    assert resp.status_code in (400, 404, 422), resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


async def test_what_the_gateway_refuses_itself_is_a_problem_too(stack: Stack) -> None:
    """A URI nginx will not parse, one far too long, headers far too large: answered by the
    gateway, as problems like the services' (never its HTML pages)."""
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        for resp in (
            await c.get("/v1/events/%00"),
            await c.get("/v1/events/" + "x" * 20000),
            await c.get("/v1/me/orders", headers={"X-Filler": "y" * 20000}),
        ):
            assert resp.status_code in (400, 414), resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")


async def test_refund_amounts_are_bounded_and_keys_checked(stack: Stack) -> None:
    token = stack.token("hostile-refunder", roles={"t-any": "owner"})
    order = uuid.uuid4()
    async with httpx.AsyncClient(
        base_url=stack.gateway, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        url = f"/v1/orders/{order}/refunds"
        key = {"Idempotency-Key": uuid.uuid4().hex}
        _refused(await c.post(url, json={"reason": "organizer", "amount": 10**19}, headers=key))
        _refused(await c.post(url, json={"reason": "organizer", "note": "a\x00b"}, headers=key))
        missing = await c.post(url, json={"reason": "organizer"})
        _refused(missing, 400)
        assert missing.json()["code"] == "idempotency_key_required"
