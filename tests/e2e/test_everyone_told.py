"""Nobody stuck, nobody uninformed: what buyers, guests and organizers see and are told, on the
running stack, through the gateway, as clients call it.

- a buyer's cancellation whose refund fails can be tried again, and the buyer is told;
- a cancellation under a policy that keeps the fees leaves the order REFUNDED, and the
  registration names the refund that cancelled it;
- approval, rejection, an invite redeemed, a guest's seat refunded and a reschedule each send
  one e-mail, in the recipient's locale, as plain text and HTML.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ticketing_local.testing import wait_until

from .conftest import RefundShop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

POLICY = {"allow_cancellation": True, "cutoff_days": 2, "cutoff_hours": 0}


async def _shop(stack: Stack, tenant: str, **policy: bool) -> RefundShop:
    shop = RefundShop(stack, tenant)
    resp = await shop.admin.put(
        f"/v1/tenants/{tenant}/cancellation-policies",
        json={"paid-regular": {**POLICY, **policy}},
    )
    assert resp.status_code == 200, resp.text
    return shop


async def _mail(shop: RefundShop, to: str, subject: str) -> dict[str, Any]:
    """The one e-mail to ``to`` whose subject holds ``subject`` (waiting for it to arrive)."""

    async def arrived() -> list[dict[str, Any]]:
        return [m for m in await shop.mails(to) if subject in m["subject"]]

    [mail] = await wait_until(arrived, timeout=60, message=f"e-mail {subject!r} to {to}")
    assert mail["text"] and mail["html"] and "<html" in mail["html"]  # multipart, both parts
    return mail


async def _registration(
    client: httpx.AsyncClient, reg_id: str, ready: Any, what: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = (await client.get(f"/v1/registrations/{reg_id}")).json()
        return body if ready(body) else None

    return await wait_until(probe, timeout=60, message=what)


async def test_a_failed_cancellation_refund_can_be_tried_again_and_the_buyer_is_told(
    stack: Stack,
) -> None:
    shop = await _shop(
        stack, "e2e-told-failed", include_transaction_fees=True, include_app_fees=True
    )
    try:
        async with shop.client("told-failer", locale="nl-NL") as buyer:
            order = await shop.paid_order(buyer, quantity=1)
            reg_id = order["registrations"][0]["id"]
            async with httpx.AsyncClient(timeout=10) as c:
                fault = await c.post(
                    f"{shop.sandbox()}/sandbox/faults",
                    json={"endpoint": "refund", "code": "NOT_ENOUGH", "times": 1},
                )
                assert fault.status_code in (200, 201), fault.text
            first = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
            assert first.status_code == 202, first.text
            assert first.json()["cancellation_requested"] is True
            assert first.json()["can_cancel"] is False

            # the refund fails: the request is cleared and the policy decides again
            reg = await _registration(
                buyer,
                reg_id,
                lambda r: not r["cancellation_requested"],
                "the failed cancellation cleared",
            )
            assert reg["status"] == "APPROVED" and reg["can_cancel"] is True
            assert reg["refund_quote"]["amount"] == order["total_amount"]
            failed = await _mail(shop, "told-failer@", "niet gelukt")
            assert "opnieuw annuleren" in failed["text"]
            [refund] = (await buyer.get(f"/v1/orders/{order['id']}/refunds")).json()
            assert refund["status"] == "failed" and refund["failure_code"] == "NOT_ENOUGH"

            # the second try goes through
            second = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
            assert second.status_code == 202, second.text
            reg = await _registration(
                buyer, reg_id, lambda r: r["status"] == "CANCELLED", "the cancellation"
            )
            refunds = (await buyer.get(f"/v1/orders/{order['id']}/refunds")).json()
            assert [r["status"] for r in refunds] == ["failed", "refunded"]
            assert reg["refund_id"] == refunds[1]["id"]
            await shop.order_status(buyer, order["id"], "REFUNDED")
            # told once each: the two requests, the failure, the completed refund
            await _mail(shop, "told-failer@", "terugbetaling voor je bestelling")
            requested = [
                m for m in await shop.mails("told-failer@") if "annulering" in m["subject"]
            ]
            assert len(requested) == 2
            assert "€" not in requested[0]["text"] and "CN¥" in requested[0]["text"]
    finally:
        await shop.admin.aclose()


async def test_a_cancellation_that_keeps_the_fees_leaves_the_order_refunded(
    stack: Stack,
) -> None:
    shop = await _shop(stack, "e2e-told-fees")
    try:
        async with shop.client("told-fees", locale="zh-CN") as buyer:
            order = await shop.paid_order(buyer, quantity=1)
            reg_id = order["registrations"][0]["id"]
            quote = (await buyer.get(f"/v1/registrations/{reg_id}")).json()["refund_quote"]
            assert 0 < quote["amount"] < order["total_amount"]  # the fees stay
            resp = await buyer.post(f"/v1/registrations/{reg_id}/cancel")
            assert resp.status_code == 202, resp.text
            reg = await _registration(
                buyer, reg_id, lambda r: r["status"] == "CANCELLED", "the cancellation"
            )
            body = await shop.order_status(buyer, order["id"], "REFUNDED")
            assert body["refunded_amount"] == quote["amount"] < body["total_amount"]
            assert {s["status"] for s in body["seats"]} == {"VOID"}
            [refund] = (await buyer.get(f"/v1/orders/{order['id']}/refunds")).json()
            assert reg["refund_id"] == refund["id"] and reg["cancellation_reason"] == "user"
            listed = (await shop.admin.get(f"/v1/events/{order['event_id']}/registrations")).json()
            [row] = [r for r in listed["items"] if r["id"] == reg_id]
            assert row["refund_id"] == refund["id"] and row["order_status"] == "REFUNDED"
            # zh-CN: the request (with the amount, as Chinese writes it) and the refund
            mail = await _mail(shop, "told-fees@", "取消申请")
            assert f"¥{quote['amount'] / 100:.2f}" in mail["text"]
            await _mail(shop, "told-fees@", "退款已完成")
    finally:
        await shop.admin.aclose()


async def test_approval_invites_guests_and_reschedules_are_each_told_once(stack: Stack) -> None:
    shop = RefundShop(stack, "e2e-told-approval")
    try:
        async with (
            shop.client("told-host") as host,
            shop.client("told-guest", locale="nl") as guest,
        ):
            order = await shop.paid_order(host, quantity=3, require_approval=True)
            event_id = order["event_id"]
            reg_id = order["registrations"][0]["id"]
            approved = await shop.admin.post(f"/v1/registrations/{reg_id}/approve")
            assert approved.status_code == 200, approved.text
            await _mail(shop, "told-host@", "is approved")

            [invite, *_] = (await host.get(f"/v1/orders/{order['id']}/invites")).json()
            redeemed = await guest.post(f"/v1/invites/{invite['token']}/redeem")
            assert redeemed.status_code == 201, redeemed.text
            told = await _mail(shop, "told-host@", "claimed a seat")
            assert "told-guest@example.test" in told["text"]

            starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
            moved = await shop.admin.patch(
                f"/v1/events/{event_id}", json={"starts_at": starts.isoformat()}
            )
            assert moved.status_code == 200, moved.text
            await _mail(shop, "told-host@", "has a new date")
            await _mail(shop, "told-guest@", "heeft een nieuwe datum")

            # the organizer refunds the guest's seat: the guest hears why their seat went
            refund = await shop.refund(order["id"], {"items": [{"seat_id": invite["seat_id"]}]})
            assert refund.status_code == 201, refund.text
            await shop.refund_status(refund.json()["id"], "refunded")
            gone = await _mail(shop, "told-guest@", "geannuleerd")
            assert "terugbetaald" in gone["text"]
            guest_reg = redeemed.json()["registration"]["id"]
            reg = (await shop.admin.get(f"/v1/registrations/{guest_reg}")).json()
            assert reg["status"] == "CANCELLED" and reg["refund_id"] == refund.json()["id"]

        # rejection of a free registration
        async with shop.client("told-hopeful") as hopeful:
            free = await _free_registration(shop, hopeful)
            rejected = await shop.admin.post(f"/v1/registrations/{free}/reject")
            assert rejected.status_code == 200, rejected.text
            await _mail(shop, "told-hopeful@", "not approved")

        await asyncio.sleep(1)  # time for any (wrong) second e-mail to travel the chain
        for to in ("told-host@", "told-guest@", "told-hopeful@"):
            subjects = [m["subject"] for m in await shop.mails(to)]
            assert len(subjects) == len(set(subjects)), subjects
    finally:
        await shop.admin.aclose()


async def _free_registration(shop: RefundShop, client: httpx.AsyncClient) -> str:
    event = await shop.admin.post(
        f"/v1/tenants/{shop.tenant}/events",
        json={
            "title": "Open day",
            "starts_at": (datetime.now(UTC) + timedelta(days=10)).isoformat(),
            "currency": "CNY",
            "require_approval": True,
        },
    )
    assert event.status_code == 201, event.text
    tt = await shop.admin.post(
        f"/v1/events/{event.json()['id']}/ticket-types",
        json={
            "name": "Free",
            "max_quantity": 10,
            "price_tiers": [{"quantity": 1, "total_amount": 0}],
        },
    )
    assert tt.status_code == 201, tt.text
    reg = await client.post(
        f"/v1/events/{event.json()['id']}/registrations",
        json={"ticket_type_id": tt.json()["id"], "quantity": 1},
    )
    assert reg.status_code == 201, reg.text
    return str(reg.json()["registration"]["id"])
