"""What a careless client or a fuzzer sends, through the gateway: each of these once reached a
500 or was accepted; each is now a 422 problem (or a refusal of its own), never a 5xx, and
changes nothing.

Bodies are read strictly: a key named twice, a number or a flag of another JSON type, a control
character in text (a line holds none; staff notes may hold TAB, LF and CR); and the
Idempotency-Key header must be sent once, 1-255 printable ASCII characters.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import RefundShop, Stack

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
        ("escape sequence in a title", {**EVENT, "starts_at": STARTS, "title": "\x1b[2Jgala"}),
        ("line break in a title", {**EVENT, "starts_at": STARTS, "title": "gala\nEVIL: 1"}),
        ("DEL in a title", {**EVENT, "starts_at": STARTS, "title": "gala\x7f"}),
        ("flag as a number", {**EVENT, "starts_at": STARTS, "require_approval": 1}),
        ("flag as a string", {**EVENT, "starts_at": STARTS, "require_approval": "false"}),
        ("time far in the past", {**EVENT, "starts_at": "0001-01-01T00:00:00+01:00"}),
        ("time far in the future", {**EVENT, "starts_at": "9999-12-31T23:59:59-01:00"}),
        ("time without an offset", {**EVENT, "starts_at": "2030-01-01T00:00:00"}),
        ("unknown field", {**EVENT, "starts_at": STARTS, "admin": True}),
    ],
)
async def test_event_bodies(
    stack: Stack, staff: tuple[httpx.AsyncClient, str, str], what: str, body: Any
) -> None:
    c, tenant, _ = staff
    _refused(await c.post(f"/v1/tenants/{tenant}/events", json=body))
    assert await _events_of(stack, tenant) == 1  # the fixture's, no other


async def _events_of(stack: Stack, tenant: str) -> int:
    conn = await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{stack.port('POSTGRES_PORT')}/orders"
    )
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant))
    finally:
        await conn.close()


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
        ("TAB in a name", {"name": "VIP\tfront", "price_tiers": TIER}),
        ("seat count as a string", {"max_quantity": "10", "price_tiers": TIER}),
        ("seat count as a float", {"max_quantity": 10.0, "price_tiers": TIER}),
        ("price as a boolean", {"price_tiers": [{"quantity": 1, "total_amount": True}]}),
        ("tier quantity as a string", {"price_tiers": [{"quantity": "1", "total_amount": 100}]}),
        ("flag as a number", {"organizer_registration": 1, "price_tiers": TIER}),
    ],
)
async def test_ticket_type_bodies(
    staff: tuple[httpx.AsyncClient, str, str], what: str, body: Any
) -> None:
    c, _, event_id = staff
    full = {"name": "Standard", "max_quantity": 10, **body}
    _refused(await c.post(f"/v1/events/{event_id}/ticket-types", json=full))
    assert (await c.get(f"/v1/events/{event_id}")).json()["ticket_types"] == []


async def test_a_renamed_event_keeps_its_title_when_the_new_one_is_not_text(
    staff: tuple[httpx.AsyncClient, str, str],
) -> None:
    c, _, event_id = staff
    for title in ("a\x00b", "a\rb", "a\x1fb", "a\u007fb"):
        _refused(await c.patch(f"/v1/events/{event_id}", json={"title": title}))
    duplicate = await c.patch(
        f"/v1/events/{event_id}",
        content=b'{"title": "Renamed", "title": "Hostile"}',
        headers={"Content-Type": "application/json"},
    )
    _refused(duplicate)
    assert duplicate.json()["code"] == "duplicate_key"
    assert (await c.get(f"/v1/events/{event_id}")).json()["title"] == "Hostile"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 10**9},
        {"limit": 0},
        {"limit": "all"},
        {"cursor": "not base64!"},
        {"cursor": _b64(b"not json")},
        {"cursor": _b64(b'["9999-99-99", "x"]')},
        {"cursor": _b64(b'["2026-01-01T00:00:00", "01a23c8d-4289-74c0-8381-ca5e05ba77f5"]')},
        {"cursor": _b64(b'["1000-01-01T00:00:00+00:00", "01a23c8d-4289-74c0-8381-ca5e05ba77f5"]')},
        {"cursor": _b64(b"{}")},
        {"cursor": "x" * 500},
        {"status": "EVERYTHING"},
        {"order_status": "paid; DROP TABLE orders"},
        {"q": "a\x00b"},
        {"q": "x" * 201},
        {"ticket_type_id": "not-a-uuid"},
    ],
)
async def test_paging_and_filters_are_bounded(
    staff: tuple[httpx.AsyncClient, str, str], query: Any
) -> None:
    c, _, event_id = staff
    for path in (
        f"/v1/events/{event_id}/registrations",
        f"/v1/events/{event_id}/registrations.csv",
    ):
        if ("cursor" in query or "limit" in query) and path.endswith(".csv"):
            continue  # the export has no pages
        _refused(await c.get(path, params=query))


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


@pytest.fixture(scope="module")
async def shop(stack: Stack) -> AsyncIterator[RefundShop]:
    s = RefundShop(stack, f"t-hostile-{uuid.uuid4().hex[:6]}")
    yield s
    await s.admin.aclose()


async def test_a_quantity_of_another_json_type_takes_no_seat(shop: RefundShop) -> None:
    """``true`` once bought a seat, ``"5"`` five: only a JSON integer is a quantity, and a body
    naming the quantity twice is refused whichever one would have counted."""
    event_id, tt_id = await shop.event()
    async with shop.client("hostile-buyer-1") as buyer:
        url = f"/v1/events/{event_id}/registrations"
        for quantity in (True, "5", "1", 1.0, 3.0, [1], None):
            resp = await buyer.post(url, json={"ticket_type_id": tt_id, "quantity": quantity})
            _refused(resp)
            assert resp.json()["errors"][0]["loc"] == ["body", "quantity"], quantity
        twice = await buyer.post(
            url,
            content=f'{{"ticket_type_id": "{tt_id}", "quantity": 1, "quantity": 3}}'.encode(),
            headers={"Content-Type": "application/json"},
        )
        _refused(twice)
        assert (twice.json()["code"], twice.json()["key"]) == ("duplicate_key", "quantity")
        assert (await buyer.get("/v1/me/orders")).json()["items"] == []
    assert await shop.sold(event_id) == 0


async def test_a_malformed_idempotency_key_buys_nothing(shop: RefundShop) -> None:
    event_id, tt_id = await shop.event()
    async with shop.client("hostile-buyer-2") as buyer:
        url = f"/v1/events/{event_id}/registrations"
        body = {"ticket_type_id": tt_id, "quantity": 1}
        for headers, code in (
            ([("Idempotency-Key", "")], "bad_idempotency_key"),
            ([("Idempotency-Key", "k" * 256)], "bad_idempotency_key"),
            ([("Idempotency-Key", "k" * 5000)], "bad_idempotency_key"),
            ([("Idempotency-Key", "clé".encode("latin-1"))], "bad_idempotency_key"),
            ([("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")], "idempotency_key_repeated"),
        ):
            resp = await buyer.post(url, json=body, headers=headers)
            _refused(resp, 400)
            assert resp.json()["code"] == code, (headers, resp.text)
        assert (await buyer.get("/v1/me/orders")).json()["items"] == []
    assert await shop.sold(event_id) == 0


async def test_refused_refund_requests_leave_the_order_untouched(shop: RefundShop) -> None:
    """``{"amount": 1, "amount": null}`` once refunded everything; malformed keys and text with
    control characters are refused too, and the paid order stays as it was."""
    async with shop.client("hostile-payer") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
        url = f"/v1/orders/{order['id']}/refunds"
        json_body = {"Content-Type": "application/json"}
        twice = await shop.admin.post(
            url,
            content=b'{"reason": "organizer", "amount": 1, "amount": null}',
            headers={**json_body, "Idempotency-Key": uuid.uuid4().hex},
        )
        _refused(twice)
        assert (twice.json()["code"], twice.json()["key"]) == ("duplicate_key", "amount")
        nested = await shop.admin.post(
            url,
            content=(
                b'{"reason": "organizer", "items": [{"seat_id": "%s", "seat_id": "%s"}]}'
                % (order["seats"][0]["id"].encode(), uuid.uuid4().hex.encode())
            ),
            headers={**json_body, "Idempotency-Key": uuid.uuid4().hex},
        )
        _refused(nested)
        assert nested.json()["code"] == "duplicate_key"
        for body in ({"amount": True}, {"amount": "1"}, {"amount": 1.0}):
            _refused(await shop.refund(order["id"], body))
        for body in ({"note": "sorry\nEVIL"}, {"internal_note": "called\x00them"}):
            _refused(await shop.refund(order["id"], body))
        for headers in (
            [("Idempotency-Key", "")],
            [("Idempotency-Key", "k" * 256)],
            [("Idempotency-Key", "k1"), ("Idempotency-Key", "k1")],
        ):
            resp = await shop.admin.post(url, json={"reason": "organizer"}, headers=headers)
            _refused(resp, 400)
        assert (await shop.admin.get(url)).json() == []
        after = (await buyer.get(f"/v1/orders/{order['id']}")).json()
        assert (after["status"], after["refunded_amount"]) == ("PAID", 0)
        assert after["refund"]["refundable_amount"] == order["total_amount"]
    assert await shop.sold(order["event_id"]) == 1


async def test_an_openid_with_control_characters_starts_no_payment(shop: RefundShop) -> None:
    """Paying inside WeChat (JSAPI) takes the buyer's openid from the body or the token: a NUL
    or any other control character in either is refused, and no payment attempt is made."""
    inside_wechat = {"User-Agent": "Mozilla/5.0 (iPhone) AppleWebKit MicroMessenger/8.0.50"}
    async with shop.client("hostile-wx") as buyer:
        order = await shop.order(buyer, quantity=1)
        url = f"/v1/orders/{order['id']}/payments"
        for openid in ("o-openid\x00", "o\x00penid", "o-openid\n", "o-openid\x1b"):
            resp = await buyer.post(
                url, json={"provider": "wechatpay", "openid": openid}, headers=inside_wechat
            )
            _refused(resp)
        # the same buyer, with the openid in the token: the token itself is refused
        async with shop.client("hostile-wx", wechat_openid="o-openid\x00") as claimed:
            resp = await claimed.post(url, json={"provider": "wechatpay"}, headers=inside_wechat)
            _refused(resp, 401)
            assert resp.json()["code"] == "invalid_token"
        assert (await buyer.get(url)).json() == []
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PENDING"


async def test_control_characters_in_paths_and_queries_are_refused(shop: RefundShop) -> None:
    async with shop.client("hostile-buyer-3") as buyer:
        for url in ("/v1/invites/abc%01def/redeem", "/v1/invites/abc%0Adef/redeem"):
            _refused(await buyer.post(url))
        resp = await buyer.get("/v1/me/orders", params={"event_id": "\x01"})
        _refused(resp)
        assert resp.json()["errors"][0]["type"] == "control_character"
