"""What organizers read, through the gateway: their events and templates, an event's
registrations (cursor pages, total, filters, search, CSV export), its catalog history and its
refunds; and a buyer's own orders, cursor-paged with no silent cap."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .conftest import RefundShop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT = "e2e-organizer-lists"


@pytest.fixture(scope="module")
async def shop(stack: Stack):
    s = RefundShop(stack, TENANT)
    yield s
    await s.admin.aclose()


async def _pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a cursor-paged list, checking each page's shape."""
    pages, cursor = [], None
    while True:
        resp = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200, resp.text
        pages.append(resp.json())
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


def _starts(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_events_and_templates_are_listed_by_page(shop: RefundShop) -> None:
    tenant = "e2e-lists-catalog"
    admin = shop.client(f"{tenant}-owner", roles={tenant: "owner"})
    member = shop.client(f"{tenant}-member", roles={tenant: "member"})
    try:
        made = []
        for days in (30, 10, 20):
            ev = await admin.post(
                f"/v1/tenants/{tenant}/events",
                json={"title": f"In {days} days", "starts_at": _starts(days), "currency": "CNY"},
            )
            assert ev.status_code == 201, ev.text
            made.append(ev.json()["id"])
        pages = await _pages(member, f"/v1/tenants/{tenant}/events", limit=2)
        assert [len(p["items"]) for p in pages] == [2, 1]
        listed = [e["title"] for p in pages for e in p["items"]]
        assert listed == ["In 10 days", "In 20 days", "In 30 days"]  # by start
        window = await member.get(
            f"/v1/tenants/{tenant}/events", params={"from": _starts(15), "to": _starts(25)}
        )
        assert [e["title"] for e in window.json()["items"]] == ["In 20 days"]
        none = await member.get(f"/v1/tenants/{tenant}/events", params={"status": "cancelled"})
        assert none.json() == {"items": [], "next_cursor": None}
        bad = await member.get(f"/v1/tenants/{tenant}/events", params={"status": "everything"})
        assert bad.status_code == 422

        for title in ("A", "B", "C"):
            tpl = await admin.post(
                f"/v1/tenants/{tenant}/event-templates",
                json={"title": title, "currency": "EUR", "ticket_types": []},
            )
            assert tpl.status_code == 201, tpl.text
        pages = await _pages(member, f"/v1/tenants/{tenant}/event-templates", limit=2)
        assert [t["title"] for p in pages for t in p["items"]] == ["A", "B", "C"]
        # another tenant's people find nothing
        async with shop.client("lists-outsider", roles={"elsewhere": "owner"}) as outsider:
            assert (await outsider.get(f"/v1/tenants/{tenant}/events")).status_code == 404
    finally:
        await admin.aclose()
        await member.aclose()


async def test_registrations_are_paged_filtered_searched_counted_and_exported(
    shop: RefundShop,
) -> None:
    event_id, tt_id = await shop.event()
    people = [
        ("reg-ada", "Ada Lovelace"),
        ("reg-bob", "Bob Dylan"),
        ("reg-cleo", "Cleopatra"),
        ("reg-dan", '=HYPERLINK("http://x", "Dan")'),
        ("reg-eve", "Ève Curie"),
    ]
    orders = {}
    for sub, name in people:
        async with shop.client(sub, name=name) as buyer:
            resp = await buyer.post(
                f"/v1/events/{event_id}/registrations",
                json={"ticket_type_id": tt_id, "quantity": 1},
            )
            assert resp.status_code == 201, resp.text
            orders[sub] = resp.json()["order"]
    # two of them pay
    for sub in ("reg-ada", "reg-cleo"):
        async with shop.client(sub) as buyer:
            checkout = await buyer.post(
                f"/v1/orders/{orders[sub]['id']}/payments", json={"provider": "wechatpay"}
            )
            assert checkout.status_code == 201, checkout.text
            async with httpx.AsyncClient(timeout=10) as c:
                paid = await c.post(
                    f"{shop.sandbox()}/sandbox/pay/{checkout.json()['out_trade_no']}"
                )
                assert paid.status_code == 200, paid.text
            await shop.order_status(buyer, orders[sub]["id"], "PAID")
    path = f"/v1/events/{event_id}/registrations"

    pages = await _pages(shop.admin, path, limit=2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert {p["total"] for p in pages} == {5}
    rows = [r for p in pages for r in p["items"]]
    assert [r["name"] for r in rows] == [name for _, name in people]  # oldest first, no repeats

    async def matching(**params: Any) -> list[str]:
        body = (await shop.admin.get(path, params=params)).json()
        assert body["total"] == len(body["items"]), body
        return sorted(r["user_id"] for r in body["items"])

    assert await matching(order_status="PAID") == ["reg-ada", "reg-cleo"]
    assert await matching(status="PENDING_PAYMENT") == ["reg-bob", "reg-dan", "reg-eve"]
    assert await matching(q="LOVE") == ["reg-ada"]  # a name, any case
    assert await matching(q="bob@example") == ["reg-bob"]  # an e-mail address
    assert await matching(q="ève") == ["reg-eve"]
    assert await matching(q="100%") == []  # LIKE's wildcards are plain text
    assert await matching(ticket_type_id=tt_id, order_status="PAID", q="cleo") == ["reg-cleo"]

    export = await shop.admin.get(f"{path}.csv", params={"order_status": "PENDING"})
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    text = export.content.decode("utf-8-sig")
    table = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["user_id"] for r in table) == ["reg-bob", "reg-dan", "reg-eve"]
    assert {r["ticket_type"] for r in table} == {"Standard"}
    dan = next(r for r in table if r["user_id"] == "reg-dan")
    assert dan["name"].startswith("'=")  # a spreadsheet does not run it
    assert next(r for r in table if r["user_id"] == "reg-eve")["name"] == "Ève Curie"
    async with shop.client("lists-member", roles={TENANT: "member"}) as member:
        assert (await member.get(f"{path}.csv")).status_code == 403
        assert (await member.get(path)).status_code == 403


async def test_a_buyer_pages_through_every_order(shop: RefundShop) -> None:
    async with shop.client("lists-collector") as buyer:
        made = [(await shop.order(buyer, 3 if i == 0 else 1))["id"] for i in range(5)]
        pages = await _pages(buyer, "/v1/me/orders", limit=2)
        assert [len(p["items"]) for p in pages] == [2, 2, 1]
        listed = [o for p in pages for o in p["items"]]
        assert [o["id"] for o in listed] == made[::-1]  # newest first
        # each order with its own seats, registration and invites
        assert [len(o["seats"]) for o in listed] == [1, 1, 1, 1, 3]
        assert [len(o["invites"]) for o in listed] == [0, 0, 0, 0, 2]
        assert all(len(o["registrations"]) == 1 for o in listed)


async def test_the_events_catalog_history_and_refunds(shop: RefundShop) -> None:
    async with shop.client("lists-refunded") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
    event_id = order["event_id"]
    renamed = await shop.admin.patch(f"/v1/events/{event_id}", json={"title": "Renamed gala"})
    assert renamed.status_code == 200, renamed.text
    policy = {"allow_cancellation": True, "cutoff_days": 1, "cutoff_hours": 0}
    put = await shop.admin.put(
        f"/v1/tenants/{TENANT}/cancellation-policies", json={"paid-regular": policy}
    )
    assert put.status_code == 200, put.text
    pages = await _pages(shop.admin, f"/v1/events/{event_id}/audit", limit=2)
    actions = [a["action"] for p in pages for a in p["items"]]
    assert actions[:2] == ["event.created", "ticket_type.created"]
    assert "event.updated" in actions and actions[-1] == "cancellation_policies.updated"

    refund = await shop.refund(order["id"])
    assert refund.status_code == 201, refund.text
    listed = await shop.admin.get(f"/v1/events/{event_id}/refunds")
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["items"]
    assert row["id"] == refund.json()["id"] and row["buyer_email"] == "lists-refunded@example.test"
    assert row["needs_action"] is False
    flagged = await shop.admin.get(f"/v1/events/{event_id}/refunds", params={"needs_action": True})
    assert flagged.json()["items"] == []
