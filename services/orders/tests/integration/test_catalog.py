"""Catalog through the HTTP API: policies, templates, events, ticket types; who may write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")

POLICY = {
    "allow_cancellation": True,
    "include_transaction_fees": False,
    "include_app_fees": False,
    "cutoff_days": 2,
    "cutoff_hours": 12,
}


async def test_policies_round_trip_and_are_validated(orders_service: OrdersService) -> None:
    async with orders_service.client("owner1", "owner") as owner:
        url = f"/v1/tenants/{orders_service.tenant}/cancellation-policies"
        resp = await owner.put(
            url, json={"paid-regular": POLICY, "free-regular": {**POLICY, "cutoff_days": 0}}
        )
        assert resp.status_code == 200, resp.text
        assert (await owner.get(url)).json()["paid-regular"] == POLICY
        for bad in (
            {"paid-regular": {**POLICY, "cutoff_hours": 24}},
            {"paid-regular": {**POLICY, "cutoff_days": -1}},
            {"paid-vip": POLICY},
        ):
            resp = await owner.put(url, json=bad)
            assert resp.status_code == 422
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert resp.json()["code"] == "validation_error"


async def test_only_owner_or_admin_write_and_outsiders_see_nothing(
    orders_service: OrdersService,
) -> None:
    url = f"/v1/tenants/{orders_service.tenant}/events"
    body = {
        "title": "x",
        "starts_at": "2030-01-01T10:00:00Z",
        "require_approval": False,
        "currency": "EUR",
    }
    async with orders_service.client("m1", "member") as member:
        resp = await member.post(url, json=body)
        assert (resp.status_code, resp.json()["code"]) == (403, "forbidden")
    async with orders_service.client("stranger", "admin", tenant="other-tenant") as stranger:
        assert (await stranger.post(url, json=body)).status_code == 404
    async with orders_service.client("anon") as c:
        c.headers.pop("Authorization")
        assert (await c.post(url, json=body)).status_code == 401


async def test_event_from_template_copies_ticket_types_and_accepts_overrides(
    orders_service: OrdersService,
) -> None:
    async with orders_service.client("admin1", "admin") as admin:
        tpl = await admin.post(
            f"/v1/tenants/{orders_service.tenant}/event-templates",
            json={
                "title": "Monthly meetup",
                "require_approval": True,
                "currency": "CNY",
                "ticket_types": [
                    {
                        "name": "Early",
                        "max_quantity": 50,
                        "price_tiers": [{"quantity": 1, "total_amount": 9900}],
                        "use_tenant_cancellation_policy": False,
                        "cancellation_policy": POLICY,
                    },
                    {
                        "name": "Free",
                        "max_quantity": 20,
                        "price_tiers": [{"quantity": 1, "total_amount": 0}],
                    },
                ],
            },
        )
        assert tpl.status_code == 201, tpl.text
        starts = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
        ev = await admin.post(
            f"/v1/event-templates/{tpl.json()['id']}/events",
            json={
                "starts_at": starts.isoformat(),
                "title": "Meetup #12",
                "require_approval": False,
            },
        )
        assert ev.status_code == 201, ev.text
        event = ev.json()
        assert (event["title"], event["require_approval"], event["currency"]) == (
            "Meetup #12",
            False,
            "CNY",
        )
        assert datetime.fromisoformat(event["starts_at"]) == starts
        types = {t["name"]: t for t in event["ticket_types"]}
        assert types["Early"]["cancellation_policy"] == POLICY
        assert types["Early"]["use_tenant_cancellation_policy"] is False
        assert (types["Free"]["max_quantity"], types["Free"]["current_quantity"]) == (20, 0)
    async with orders_service.client("someone") as anyone:
        got = await anyone.get(f"/v1/events/{event['id']}")
        assert got.status_code == 200 and len(got.json()["ticket_types"]) == 2


async def test_ticket_type_validation(orders_service: OrdersService) -> None:
    async with orders_service.client("admin1", "admin") as admin:
        event = await orders_service.event(admin)
        url = f"/v1/events/{event['id']}/ticket-types"
        for tiers in (
            [],
            [{"quantity": 1, "total_amount": 0}, {"quantity": 2, "total_amount": 100}],
            [{"quantity": 1, "total_amount": 10}, {"quantity": 1, "total_amount": 20}],
            [{"quantity": 1, "total_amount": -5}],
        ):
            resp = await admin.post(
                url, json={"name": "x", "max_quantity": 5, "price_tiers": tiers}
            )
            assert resp.status_code == 422, tiers
        tt = await orders_service.ticket_type(
            admin, event["id"], max_quantity=3, tiers={1: 100, 2: 150}
        )
        async with orders_service.client("b1") as buyer:
            resp = await buyer.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 2},
            )
            assert resp.status_code == 201
        resp = await admin.patch(f"/v1/ticket-types/{tt['id']}", json={"max_quantity": 1})
        assert (resp.status_code, resp.json()["code"]) == (409, "max_quantity_below_taken")
        resp = await admin.patch(f"/v1/ticket-types/{tt['id']}", json={"max_quantity": 5})
        assert resp.json()["max_quantity"] == 5 and resp.json()["current_quantity"] == 2
