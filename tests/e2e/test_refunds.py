"""Refunds end to end on the running stack, with WeChat Pay.

organizer → refunds API → refund.requested → payments → WeChat Pay sandbox (refund accepted) →
refund.status_changed → orders (REFUND_PENDING) → the sandbox settles → signed, encrypted
REFUND.SUCCESS → payments webhook → payment.refund_updated → refunds (refunded) →
refund.completed → orders (seats voided, registrations cancelled, inventory released once) and
notifications (one e-mail). Real processes and real HTTP throughout.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ticketing_local.testing import wait_until

from .conftest import RefundShop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT = "e2e-refunds"


@pytest.fixture
async def shop(stack: Stack):
    s = RefundShop(stack, TENANT)
    yield s
    await s.admin.aclose()


async def test_full_refund_cancels_seats_releases_inventory_and_mails_once(
    shop: RefundShop,
) -> None:
    async with shop.client("rf-buyer-1") as buyer:
        order = await shop.paid_order(buyer)
        assert await shop.sold(order["event_id"]) == 3
        resp = await shop.refund(order["id"], {"note": "Event moved"})
        assert resp.status_code == 201, resp.text
        refund = resp.json()
        assert refund["amount"] == order["total_amount"] and len(refund["items"]) == 3
        done = await shop.refund_status(refund["id"], "refunded")
        assert done["provider_refund_id"] and done["provider"] == "wechatpay"
        assert [a["to_status"] for a in done["audit"]] == ["pending", "processing", "refunded"]
        final = await shop.order_status(buyer, order["id"], "REFUNDED")
        assert {r["status"] for r in final["registrations"]} == {"CANCELLED"}
        assert {i["status"] for i in final["invites"]} == {"VOID"}
        assert final["refunded_amount"] == order["total_amount"]
        assert await shop.sold(order["event_id"]) == 0
        audit = (await shop.admin.get(f"/v1/orders/{order['id']}/audit")).json()
        moves = [(a["from_status"], a["to_status"]) for a in audit if a["entity"] == "order"]
        assert ("PAID", "REFUND_PENDING") in moves and ("REFUND_PENDING", "REFUNDED") in moves
        regs = (await shop.admin.get(f"/v1/events/{order['event_id']}/registrations")).json()[
            "items"
        ]
        assert {r["cancellation_reason"] for r in regs if r["order_id"] == order["id"]} == {
            "organizer"
        }
        assert {r["order_status"] for r in regs if r["order_id"] == order["id"]} == {"REFUNDED"}
        assert all("cancellation_reason_note" in r for r in regs)
        reg_id = final["registrations"][0]["id"]
        staff_reg = (await shop.admin.get(f"/v1/registrations/{reg_id}")).json()
        assert staff_reg["order_status"] == "REFUNDED"
        mails = await wait_until(
            lambda: shop.refund_mails("rf-buyer-1@example.test"), message="refund e-mail"
        )
        assert len(mails) == 1
        again = await shop.refund(order["id"])
        assert again.status_code == 409 and again.json()["code"] == "order_not_refundable"


async def test_partial_by_seats_then_the_rest(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-2") as buyer:
        order = await shop.paid_order(buyer)
        seats = [s["id"] for s in order["seats"]]
        two = await shop.refund(order["id"], {"items": [{"seat_id": s} for s in seats[1:]]})
        assert two.status_code == 201, two.text
        await shop.refund_status(two.json()["id"], "refunded")
        partial = await shop.order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert {s["id"]: s["status"] for s in partial["seats"]}[seats[0]] != "VOID"
        assert sorted(i["status"] for i in partial["invites"]) == ["VOID", "VOID"]
        assert await shop.sold(order["event_id"]) == 1
        buyer_reg = partial["registrations"][0]
        assert buyer_reg["status"] == "APPROVED"
        rest = await shop.refund(order["id"])
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount"] == order["total_amount"] - two.json()["amount"]
        await shop.refund_status(rest.json()["id"], "refunded")
        await shop.order_status(buyer, order["id"], "REFUNDED")
        assert await shop.sold(order["event_id"]) == 0


async def test_amount_only_refund_keeps_the_seats(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-3") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
        resp = await shop.refund(order["id"], {"amount": 1000, "note": "Goodwill"})
        assert resp.status_code == 201, resp.text
        await shop.refund_status(resp.json()["id"], "refunded")
        body = await shop.order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert body["refunded_amount"] == 1000
        assert body["registrations"][0]["status"] == "APPROVED"
        assert await shop.sold(order["event_id"]) == 1


async def test_idempotent_replay_makes_one_provider_call(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-4") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
        answers = await asyncio.gather(
            *(shop.refund(order["id"], {"amount": 500}, key="same-key") for _ in range(4))
        )
        assert {r.status_code for r in answers} == {201}
        assert len({r.json()["id"] for r in answers}) == 1
        refund_id = answers[0].json()["id"]
        await shop.refund_status(refund_id, "refunded")
        again = await shop.refund(order["id"], {"amount": 500}, key="same-key")
        assert again.json()["id"] == refund_id
        async with httpx.AsyncClient(timeout=10) as c:
            sent = (
                await c.get(
                    f"{shop.sandbox()}/sandbox/notifications",
                    params={
                        "out_trade_no": uuid.UUID(order["id"]).hex,
                        "event_type": "REFUND.SUCCESS",
                    },
                )
            ).json()
        assert [n["out_refund_no"] for n in sent] == [uuid.UUID(refund_id).hex]


async def test_concurrent_partial_refunds_never_over_refund(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-5") as buyer:
        order = await shop.paid_order(buyer, quantity=1)  # 9900
        answers = await asyncio.gather(
            *(shop.refund(order["id"], {"amount": 1000}) for _ in range(20))
        )
        created = [r.json() for r in answers if r.status_code == 201]
        assert len(created) == 9
        assert all(r.json()["code"] == "over_refund" for r in answers if r.status_code != 201)
        for r in created:
            await shop.refund_status(r["id"], "refunded")
        body = await shop.order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert body["refunded_amount"] == 9000


async def test_who_may_refund(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-6") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
    oid = order["id"]
    anonymous = httpx.AsyncClient(base_url=shop.stack.gateway, timeout=30)
    async with (
        anonymous,
        shop.client("rf-buyer-6") as buyer,
        shop.client("rf-member", roles={TENANT: "member"}) as member,
        shop.client("rf-other", roles={"another-tenant": "admin"}) as other,
        shop.client("rf-tenant-admin", roles={TENANT: "admin"}) as admin,
        shop.client("rf-root", platform_admin=True) as root,
    ):
        assert (await shop.refund(oid, client=anonymous)).status_code == 401
        assert (await shop.refund(oid, client=buyer)).status_code == 404
        assert (await shop.refund(oid, client=member)).status_code == 403
        assert (await shop.refund(oid, client=other)).status_code == 404
        assert (await shop.refund(oid, {"amount": 100}, client=admin)).status_code == 201
        resp = await shop.refund(oid, {"amount": 100, "reason": "admin"}, client=root)
        assert resp.status_code == 201


async def test_refused_refund_fails_cleanly_and_a_new_one_succeeds(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-7") as buyer:
        order = await shop.paid_order(buyer)
        async with httpx.AsyncClient(timeout=10) as c:
            fault = await c.post(
                f"{shop.sandbox()}/sandbox/faults",
                json={"endpoint": "refund", "code": "NOT_ENOUGH", "times": 1},
            )
            assert fault.status_code in (200, 201), fault.text
        first = await shop.refund(order["id"])
        assert first.status_code == 201, first.text
        failed = await shop.refund_status(first.json()["id"], "failed")
        assert failed["failure_code"] == "NOT_ENOUGH"
        assert "balance" in failed["failure_message"]
        body = (await buyer.get(f"/v1/orders/{order['id']}")).json()
        assert body["status"] == "PAID"
        assert {r["status"] for r in body["registrations"]} == {"APPROVED"}
        assert await shop.sold(order["event_id"]) == 3
        retry = await shop.refund(order["id"])
        assert retry.status_code == 201, retry.text
        await shop.refund_status(retry.json()["id"], "refunded")
        await shop.order_status(buyer, order["id"], "REFUNDED")


async def test_settlement_redelivered_three_times_applies_once(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-8") as buyer:
        order = await shop.paid_order(buyer)
        refund = (await shop.refund(order["id"])).json()
        await shop.refund_status(refund["id"], "refunded")
        await shop.order_status(buyer, order["id"], "REFUNDED")
        await wait_until(
            lambda: shop.refund_mails("rf-buyer-8@example.test"), message="refund e-mail"
        )
        async with httpx.AsyncClient(timeout=30) as c:
            (note,) = (
                await c.get(
                    f"{shop.sandbox()}/sandbox/notifications",
                    params={"out_refund_no": uuid.UUID(refund["id"]).hex},
                )
            ).json()
            redo = await c.post(
                f"{shop.sandbox()}/sandbox/notifications/redeliver",
                json={"id": note["id"], "times": 3},
            )
            assert redo.status_code == 200, redo.text
            assert all(a["status_code"] == 204 for a in redo.json()["attempts"])
        await asyncio.sleep(1.5)  # time for any (wrong) second settlement to travel the chain
        assert len(await shop.refund_mails("rf-buyer-8@example.test")) == 1
        assert await shop.sold(order["event_id"]) == 0
        body = (await buyer.get(f"/v1/orders/{order['id']}")).json()
        assert body["status"] == "REFUNDED" and body["refunded_amount"] == order["total_amount"]


async def test_organizer_cannot_cancel_a_paid_registration(shop: RefundShop) -> None:
    async with shop.client("rf-buyer-9") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
        reg_id = order["registrations"][0]["id"]
        resp = await shop.admin.post(f"/v1/registrations/{reg_id}/cancel")
        assert resp.status_code == 409 and resp.json()["code"] == "refund_required"


async def test_buyer_cancellation_within_the_window_is_refunded(shop: RefundShop) -> None:
    policy = {
        "allow_cancellation": True,
        "include_transaction_fees": True,
        "include_app_fees": True,
        "cutoff_days": 2,
        "cutoff_hours": 0,
    }
    resp = await shop.admin.put(
        f"/v1/tenants/{TENANT}/cancellation-policies", json={"paid-regular": policy}
    )
    assert resp.status_code == 200, resp.text
    async with shop.client("rf-buyer-10") as buyer:
        order = await shop.paid_order(buyer, quantity=1)
        reg_id = order["registrations"][0]["id"]
        reg = (await buyer.get(f"/v1/registrations/{reg_id}")).json()
        assert reg["can_cancel"] is True and reg["refund_quote"]["amount"] == order["total_amount"]
        resp = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
        assert resp.status_code in (200, 202), resp.text

        async def cancelled() -> dict[str, Any] | None:
            body = (await buyer.get(f"/v1/registrations/{reg_id}")).json()
            return body if body["status"] == "CANCELLED" else None

        reg = await wait_until(cancelled, timeout=60, message="registration cancelled")
        assert reg["cancellation_reason"] == "user"
        refunds = (await shop.admin.get(f"/v1/orders/{order['id']}/refunds")).json()
        assert [(r["reason"], r["amount"], r["status"]) for r in refunds] == [
            ("user", order["total_amount"], "refunded")
        ]
        await shop.order_status(buyer, order["id"], "REFUNDED")
        assert await shop.sold(order["event_id"]) == 0

    # an event that starts too soon: outside the window
    async with shop.client("rf-buyer-11") as buyer:
        order = await shop.paid_order(buyer, quantity=1, starts_in=timedelta(days=1))
        reg_id = order["registrations"][0]["id"]
        reg = (await buyer.get(f"/v1/registrations/{reg_id}")).json()
        assert reg["can_cancel"] is False
        late = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
        assert late.status_code == 409 and late.json()["code"] == "cancellation_window_closed"


async def test_the_buyer_sees_the_refunds_of_their_order_without_the_internal_note(
    shop: RefundShop,
) -> None:
    async with shop.client("rf-buyer-sees") as buyer, shop.client("rf-someone-else") as other:
        order = await shop.paid_order(buyer)
        seat = order["seats"][0]["id"]
        resp = await shop.refund(
            order["id"], {"items": [{"seat_id": seat}], "internal_note": "goodwill, see ticket 42"}
        )
        assert resp.status_code == 201, resp.text
        await shop.refund_status(resp.json()["id"], "refunded")
        mine = await buyer.get(f"/v1/orders/{order['id']}/refunds")
        assert mine.status_code == 200, mine.text
        [refund] = mine.json()
        assert refund["id"] == resp.json()["id"] and refund["status"] == "refunded"
        assert [i["seat_id"] for i in refund["items"]] == [seat]
        assert refund["amount"] > 0 and refund["refunded_at"]
        assert refund["internal_note"] is None and "goodwill" not in mine.text
        staff_view = (await shop.admin.get(f"/v1/orders/{order['id']}/refunds")).json()
        assert staff_view[0]["internal_note"] == "goodwill, see ticket 42"
        theirs = await other.get(f"/v1/orders/{order['id']}/refunds")
        assert theirs.status_code == 404
