"""Cancellation policies through the read API and buyer cancellation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ticketing_shared.contracts import PaymentSucceeded

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _policy(**kw):
    return {
        "allow_cancellation": True,
        "include_transaction_fees": False,
        "include_app_fees": False,
        "cutoff_days": 1,
        "cutoff_hours": 0,
        **kw,
    }


async def _paid_order(
    svc: OrdersService, buyer: str, *, starts_in: timedelta, policy: dict, quantity: int = 3
):
    async with svc.client("admin1", "admin") as admin:
        event = await svc.event(admin, starts_in=starts_in)
        tt = await svc.ticket_type(
            admin,
            event["id"],
            max_quantity=10,
            tiers={1: 1500, 3: 1000},
            use_tenant_cancellation_policy=False,
            cancellation_policy=policy,
        )
    async with svc.client(buyer) as c:
        order = (
            await c.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": quantity},
            )
        ).json()["order"]
    payment = PaymentSucceeded(
        order_id=order["id"],
        tenant_id=svc.tenant,
        payment_id=uuid.uuid4(),
        provider="mollie",
        payment_method="REDIRECT",
        transaction_id=f"tr_{buyer}",
        amount=order["total_amount"],
        currency="EUR",
        paid_at=datetime.now(UTC),
        transaction_fee=10,
        app_fee=5,
    )
    await svc.publish(payment, order["id"])
    async with svc.client(buyer) as c:
        paid = await svc.wait_order_status(c, order["id"], "PAID")
    return event, paid


async def test_paid_cancellation_within_window_requests_the_policy_refund(
    orders_service: OrdersService,
) -> None:
    _, order = await _paid_order(
        orders_service, "pol-1", starts_in=timedelta(days=5), policy=_policy()
    )
    reg_id = order["registrations"][0]["id"]
    async with orders_service.client("pol-1") as buyer:
        view = (await buyer.get(f"/v1/registrations/{reg_id}")).json()
        # seat 1 of 3 for 1000: share 334, minus transaction fee share 4, minus app fee share 2
        assert (view["can_cancel"], view["cancel_unavailable_reason"]) == (True, None)
        assert view["refund_quote"] == {"amount": 328, "currency": "EUR"}
        assert view["policy_source"] == "option"
        resp = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
        assert resp.status_code == 202, resp.text
        after = resp.json()
        assert after["status"] == "APPROVED" and after["cancellation_requested"] is True
        assert (after["can_cancel"], after["cancel_unavailable_reason"]) == (
            False,
            "cancellation_requested",
        )
        again = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
        assert again.status_code == 409
    requested = await orders_service.outbox("registration.cancellation_requested", order["id"])
    assert len(requested) == 1
    assert (requested[0]["amount"], requested[0]["seat_id"], requested[0]["reason"]) == (
        328,
        order["seats"][0]["id"],
        "user",
    )


async def test_fees_included_by_the_policy_are_refunded(orders_service: OrdersService) -> None:
    policy = _policy(include_transaction_fees=True, include_app_fees=True)
    _, order = await _paid_order(
        orders_service, "pol-2", starts_in=timedelta(days=5), policy=policy
    )
    async with orders_service.client("pol-2") as buyer:
        view = (await buyer.get(f"/v1/registrations/{order['registrations'][0]['id']}")).json()
    assert view["refund_quote"]["amount"] == 334


async def test_outside_the_window_is_409_and_a_reschedule_reopens_it(
    orders_service: OrdersService,
) -> None:
    event, order = await _paid_order(
        orders_service, "pol-3", starts_in=timedelta(hours=20), policy=_policy()
    )
    reg_id = order["registrations"][0]["id"]
    async with orders_service.client("pol-3") as buyer:
        view = (await buyer.get(f"/v1/registrations/{reg_id}")).json()
        assert (view["can_cancel"], view["cancel_unavailable_reason"]) == (
            False,
            "cancellation_window_closed",
        )
        resp = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
        assert (resp.status_code, resp.json()["code"]) == (409, "cancellation_window_closed")
    async with orders_service.client("admin1", "admin") as admin:
        later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        assert (
            await admin.patch(f"/v1/events/{event['id']}", json={"starts_at": later})
        ).status_code == 200
    async with orders_service.client("pol-3") as buyer:
        assert (await buyer.get(f"/v1/registrations/{reg_id}")).json()["can_cancel"] is True


async def test_policy_that_forbids_cancellation(orders_service: OrdersService) -> None:
    _, order = await _paid_order(
        orders_service,
        "pol-4",
        starts_in=timedelta(days=30),
        policy=_policy(allow_cancellation=False),
    )
    async with orders_service.client("pol-4") as buyer:
        resp = await buyer.post(f"/v1/registrations/{order['registrations'][0]['id']}/cancel")
    assert (resp.status_code, resp.json()["code"]) == (409, "cancellation_not_allowed")


async def test_free_cancellation_releases_the_seat_at_once_with_the_tenant_policy(
    orders_service: OrdersService,
) -> None:
    async with orders_service.client("admin1", "admin") as admin:
        url = f"/v1/tenants/{orders_service.tenant}/cancellation-policies"
        assert (
            await admin.put(url, json={"free-regular": _policy(cutoff_days=0)})
        ).status_code == 200
        event = await orders_service.event(admin, starts_in=timedelta(days=2))
        tt = await orders_service.ticket_type(admin, event["id"], max_quantity=1, tiers={1: 0})
    async with orders_service.client("pol-free") as c:
        reg = (
            await c.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 1},
            )
        ).json()["registration"]
        assert (
            reg["policy_source"] == "tenant"
            and reg["can_cancel"] is True
            and reg["refund_quote"] is None
        )
        resp = await c.post(f"/v1/registrations/{reg['id']}/cancel")
        assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
        assert resp.json()["cancellation_reason"] == "user"
    async with orders_service.client("pol-free-2") as other:
        resp = await other.post(
            f"/v1/events/{event['id']}/registrations",
            json={"ticket_type_id": tt["id"], "quantity": 1},
        )
        assert resp.status_code == 201
    await orders_service.check_inventory_invariant()


async def test_organizer_cancels_free_registration_with_reason(
    orders_service: OrdersService,
) -> None:
    async with orders_service.client("admin1", "admin") as admin:
        event = await orders_service.event(admin)
        tt = await orders_service.ticket_type(admin, event["id"], max_quantity=5, tiers={1: 0})
    async with orders_service.client("pol-free-3") as c:
        reg = (
            await c.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 1},
            )
        ).json()["registration"]
    async with orders_service.client("owner9", "owner") as owner:
        missing_note = await owner.post(
            f"/v1/registrations/{reg['id']}/cancel", json={"reason": "other"}
        )
        assert missing_note.status_code == 422
        resp = await owner.post(
            f"/v1/registrations/{reg['id']}/cancel",
            json={"reason": "other", "note": "venue change"},
        )
        assert resp.status_code == 200, resp.text
        assert (resp.json()["cancellation_reason"], resp.json()["cancellation_reason_note"]) == (
            "other",
            "venue change",
        )
