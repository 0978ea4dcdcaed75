"""A buyer gives back a gift seat nobody redeemed, on the running stack through the gateway:
the quote on the order, the policy's window, one refund of the seat's share, then seat and
invite VOID and the seat released once; a redeemed seat is its guest's, not the buyer's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from ticketing_local.testing import wait_until

from .conftest import RefundShop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT = "e2e-gift-seats"


@pytest.fixture
async def shop(stack: Stack):
    s = RefundShop(stack, TENANT)
    policy = {
        "allow_cancellation": True,
        "include_transaction_fees": True,
        "include_app_fees": True,
        "cutoff_days": 2,
        "cutoff_hours": 0,
    }
    resp = await s.admin.put(
        f"/v1/tenants/{TENANT}/cancellation-policies", json={"paid-regular": policy}
    )
    assert resp.status_code == 200, resp.text
    yield s
    await s.admin.aclose()


async def test_an_unredeemed_gift_seat_goes_back_for_its_share(shop: RefundShop) -> None:
    async with (
        shop.client("gift-buyer") as buyer,
        shop.client("gift-guest") as guest,
        shop.client("gift-stranger") as stranger,
    ):
        order = await shop.paid_order(buyer, quantity=3)  # 26700 for three
        oid, event_id = order["id"], order["event_id"]
        assert await shop.sold(event_id) == 3
        mine = (await buyer.get(f"/v1/orders/{oid}")).json()
        own, gift, redeemed_seat = mine["seats"]
        assert own["can_return"] is False
        assert own["return_unavailable_reason"] == "seat_has_registration"
        assert gift["can_return"] is True and gift["return_quote"] == {
            "amount": 8900,
            "currency": "CNY",
        }
        # the staff view carries no buyer's quote
        staff_seats = (await shop.admin.get(f"/v1/orders/{oid}")).json()["seats"]
        assert all(s.get("can_return") is None for s in staff_seats)

        invites = {i["seat_id"]: i for i in (await buyer.get(f"/v1/orders/{oid}/invites")).json()}
        # a guest holds the third seat: only they may cancel it
        took = await guest.post(f"/v1/invites/{invites[redeemed_seat['id']]['token']}/redeem")
        assert took.status_code == 201, took.text
        theirs = await buyer.post(f"/v1/orders/{oid}/seats/{redeemed_seat['id']}/cancel")
        assert theirs.status_code == 409 and theirs.json()["code"] == "invite_redeemed"
        # nobody else may give a seat back, nor the buyer their own registration's seat
        other = await stranger.post(f"/v1/orders/{oid}/seats/{gift['id']}/cancel")
        assert other.status_code == 404
        own_seat = await buyer.post(f"/v1/orders/{oid}/seats/{own['id']}/cancel")
        assert own_seat.status_code == 409 and own_seat.json()["code"] == "seat_has_registration"

        # two taps at once: one return
        first, second = await asyncio.gather(
            buyer.post(f"/v1/orders/{oid}/seats/{gift['id']}/cancel"),
            buyer.post(f"/v1/orders/{oid}/seats/{gift['id']}/cancel"),
        )
        assert sorted([first.status_code, second.status_code]) == [202, 409], (
            first.text,
            second.text,
        )
        loser = first if first.status_code == 409 else second
        assert loser.json()["code"] == "return_requested"
        # while its refund is on its way, the invite cannot be redeemed
        late = await stranger.post(f"/v1/invites/{invites[gift['id']]['token']}/redeem")
        assert late.status_code == 409 and late.json()["code"] == "invite_being_returned"

        async def settled() -> dict[str, Any] | None:
            body = (await buyer.get(f"/v1/orders/{oid}")).json()
            seat = next(s for s in body["seats"] if s["id"] == gift["id"])
            return body if seat["status"] == "VOID" else None

        body = await wait_until(settled, timeout=60, message="the returned seat void")
        assert body["status"] == "PARTIALLY_REFUNDED" and body["refunded_amount"] == 8900
        invite = next(i for i in body["invites"] if i["seat_id"] == gift["id"])
        assert invite["status"] == "VOID"
        assert await shop.sold(event_id) == 2  # released once
        [refund] = (await buyer.get(f"/v1/orders/{oid}/refunds")).json()
        assert refund["reason"] == "user" and refund["amount"] == 8900
        assert [i["seat_id"] for i in refund["items"]] == [gift["id"]]
        # the guest's seat and the buyer's own are untouched
        assert {s["id"]: s["status"] for s in body["seats"]}[redeemed_seat["id"]] == "ACTIVE"
        mails = await wait_until(
            lambda: shop.mails("gift-buyer@"), timeout=60, message="the return e-mail"
        )
        assert any("giving back a seat" in m["subject"] for m in mails)


async def test_the_policy_window_applies_to_gift_seats(shop: RefundShop) -> None:
    async with shop.client("gift-late") as buyer:
        order = await shop.paid_order(buyer, quantity=3, starts_in=timedelta(days=1))
        gift = (await buyer.get(f"/v1/orders/{order['id']}")).json()["seats"][1]
        assert gift["can_return"] is False
        assert gift["return_unavailable_reason"] == "cancellation_window_closed"
        resp = await buyer.post(f"/v1/orders/{order['id']}/seats/{gift['id']}/cancel")
        assert resp.status_code == 409 and resp.json()["code"] == "cancellation_window_closed"
        assert await shop.sold(order["event_id"]) == 3
