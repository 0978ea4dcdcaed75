"""Mollie end to end on the running stack: EUR events are paid through the Mollie sandbox.

buyer → payments checkout → Mollie sandbox payment → buyer pays on the checkout page → classic
webhook ``id=tr_…`` → payments fetches the payment from the API → payment.succeeded → orders
(PAID) → notifications (e-mail). Refunds: organizer → refunds → payments → Mollie refund (keyed on
the refund id) → the sandbox walks it ``pending → processing → refunded`` and calls the payment's
webhook at each step → payments fetches the refunds → the same refund.completed path as WeChat
Pay. Real processes and real HTTP throughout.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from ticketing_local.testing import wait_until

from .conftest import RefundShop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT = "e2e-mollie"


class MollieShop(RefundShop):
    async def control(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as c:
            return await c.post(f"{self.mollie()}{path}", json=body or {})

    async def webhooks(self, payment_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as c:
            listed = (await c.get(f"{self.mollie()}/sandbox/webhooks")).json()
        return [w for w in listed if w["payment_id"] == payment_id]

    async def api_calls(self, payment_id: str, endpoint: str | None = None) -> int:
        """How many calls of Mollie's API about ``payment_id`` the sandbox received."""
        params = {"payment_id": payment_id, **({"endpoint": endpoint} if endpoint else {})}
        async with httpx.AsyncClient(timeout=10) as c:
            listed = await c.get(f"{self.mollie()}/sandbox/requests", params=params)
        return int(listed.json()["count"])

    async def gated_webhooks(self) -> dict[str, float]:
        """How the payments API served Mollie webhooks so far (from its /metrics): ``fetch``,
        queued a fetch; ``coalesced``, joined one already queued."""
        port = self.stack.port("PAYMENTS_API_PORT")
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
        found = re.findall(r'^payments_mollie_webhooks_total\{served="(\w+)"\} (\S+)$', text, re.M)
        return {served: float(value) for served, value in found}

    async def mollie_payment(self, buyer: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
        attempts = (await buyer.get(f"/v1/orders/{order_id}/payments")).json()
        return next(p for p in attempts if p["provider"] == "mollie")

    async def paid_mollie(self, buyer: httpx.AsyncClient, quantity: int = 3) -> dict[str, Any]:
        return await self.paid_order(buyer, quantity, currency="EUR")

    async def order_mails(self, to: str) -> list[dict[str, Any]]:
        return [m for m in await self.mails(to) if "refund" not in m["subject"].lower()]


@pytest.fixture
async def shop(stack: Stack) -> AsyncIterator[MollieShop]:
    s = MollieShop(stack, TENANT)
    yield s
    await s.control("/sandbox/balance", {"low": False})
    await s.admin.aclose()


async def test_pay_with_mollie_marks_paid_and_mails_once(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-1") as buyer:
        order = await shop.order(buyer, 3, currency="EUR")
        wrong = await buyer.post(
            f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"}
        )
        assert wrong.status_code == 422 and wrong.json()["code"] == "provider_not_supported"
        first = await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        assert first.status_code == 201, first.text
        checkout = first.json()
        assert checkout["checkout_url"].startswith(shop.mollie())
        assert checkout["provider_payment_id"].startswith("tr_")
        assert checkout["amount"] == order["total_amount"] and checkout["currency"] == "EUR"
        again = await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        assert again.json()["provider_payment_id"] == checkout["provider_payment_id"]
        async with httpx.AsyncClient(timeout=10) as c:
            page = await c.get(checkout["checkout_url"])
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            paid = await c.post(checkout["checkout_url"], data={"action": "paid"})
            assert paid.status_code == 303
        body = await shop.order_status(buyer, order["id"], "PAID")
        assert body["transaction_id"] == checkout["provider_payment_id"]
        assert sorted(i["status"] for i in body["invites"]) == ["OPEN", "OPEN"]
        mails = await wait_until(
            lambda: shop.order_mails("ml-buyer-1@example.test"), message="order e-mail"
        )
        assert len(mails) == 1
        attempt = await shop.mollie_payment(buyer, order["id"])
        assert attempt["status"] == "SUCCEEDED" and attempt["paid_at"]

        # the webhook again, twice: payments fetches, finds nothing new, changes nothing
        tr = checkout["provider_payment_id"]
        redelivered = await shop.control(
            "/sandbox/webhooks/redeliver", {"payment_id": tr, "times": 2}
        )
        assert redelivered.status_code == 200, redelivered.text
        await wait_until(
            lambda: _delivered(shop, tr, at_least=3), message="the redelivered webhooks"
        )
        # a forged call for an unknown id: 200, and nothing happens
        forged = await shop.admin.post(
            "/v1/webhooks/mollie",
            content=b"id=tr_Forged1234",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert forged.status_code == 200
        junk = await shop.admin.post(
            "/v1/webhooks/mollie",
            content=b"nothing=here",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (junk.status_code, junk.json()["code"]) == (400, "malformed_webhook")
        after = (await buyer.get(f"/v1/orders/{order['id']}")).json()
        assert after["status"] == "PAID" and after["paid_at"] == body["paid_at"]
        assert len(await shop.order_mails("ml-buyer-1@example.test")) == 1
        payments = (await buyer.get(f"/v1/orders/{order['id']}/payments")).json()
        assert [p["status"] for p in payments] == ["SUCCEEDED"]


async def _delivered(shop: MollieShop, tr: str, *, at_least: int) -> bool:
    attempts = [a for w in await shop.webhooks(tr) for a in w["attempts"]]
    return sum(1 for a in attempts if a.get("status_code") == 200) >= at_least


async def test_canceled_checkout_then_a_new_attempt_pays(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-2") as buyer:
        order = await shop.order(buyer, 1, currency="EUR")
        first = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        ).json()
        async with httpx.AsyncClient(timeout=10) as c:
            canceled = await c.post(first["checkout_url"], data={"action": "canceled"})
            assert canceled.status_code == 303

        async def failed() -> bool:
            return (await shop.mollie_payment(buyer, order["id"]))["status"] == "FAILED"

        await wait_until(failed, message="the canceled Mollie payment recorded")
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PENDING"
        second = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        ).json()
        assert second["provider_payment_id"] != first["provider_payment_id"]
        async with httpx.AsyncClient(timeout=10) as c:
            assert (
                await c.post(second["checkout_url"], data={"action": "paid"})
            ).status_code == 303
        await shop.order_status(buyer, order["id"], "PAID")


async def test_full_refund_through_mollie(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-3") as buyer:
        order = await shop.paid_mollie(buyer)
        assert await shop.sold(order["event_id"]) == 3
        resp = await shop.refund(order["id"], {"note": "Event moved"})
        assert resp.status_code == 201, resp.text
        done = await shop.refund_status(resp.json()["id"], "refunded")
        assert done["provider"] == "mollie" and done["provider_refund_id"].startswith("re_")
        assert [a["to_status"] for a in done["audit"]] == ["pending", "processing", "refunded"]
        final = await shop.order_status(buyer, order["id"], "REFUNDED")
        assert {r["status"] for r in final["registrations"]} == {"CANCELLED"}
        assert {i["status"] for i in final["invites"]} == {"VOID"}
        assert await shop.sold(order["event_id"]) == 0
        mails = await wait_until(
            lambda: shop.refund_mails("ml-buyer-3@example.test"), message="refund e-mail"
        )
        assert len(mails) == 1
        # Mollie's own view: fully refunded, the payment itself still "paid"
        async with httpx.AsyncClient(timeout=10) as c:
            tr = order["transaction_id"]
            raw = (await c.get(f"{shop.mollie()}/sandbox/payments/{tr}")).json()
        assert raw["status"] == "paid" and raw["amountRemaining"]["value"] == "0.00"


async def test_partial_refunds_by_seats_and_by_amount(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-4") as buyer:
        order = await shop.paid_mollie(buyer)
        seats = [s["id"] for s in order["seats"]]
        two = await shop.refund(order["id"], {"items": [{"seat_id": s} for s in seats[1:]]})
        assert two.status_code == 201, two.text
        await shop.refund_status(two.json()["id"], "refunded")
        partial = await shop.order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert sorted(i["status"] for i in partial["invites"]) == ["VOID", "VOID"]
        assert await shop.sold(order["event_id"]) == 1
        money = await shop.refund(order["id"], {"amount": 500})
        assert money.status_code == 201, money.text
        await shop.refund_status(money.json()["id"], "refunded")
        after = await shop.order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert after["refunded_amount"] == two.json()["amount"] + 500
        assert await shop.sold(order["event_id"]) == 1
        assert after["registrations"][0]["status"] == "APPROVED"


async def test_queued_refund_under_low_balance_is_canceled(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-5") as buyer:
        order = await shop.paid_mollie(buyer)
        low = await shop.control("/sandbox/balance", {"low": True})
        assert low.status_code == 200, low.text
        resp = await shop.refund(order["id"])
        assert resp.status_code == 201, resp.text
        refund_id = resp.json()["id"]
        queued = await shop.refund_status(refund_id, "queued")
        assert queued["provider_refund_id"].startswith("re_")
        await shop.order_status(buyer, order["id"], "REFUND_PENDING")
        cancel = await shop.admin.post(f"/v1/refunds/{refund_id}/cancel")
        assert cancel.status_code == 202, cancel.text
        canceled = await shop.refund_status(refund_id, "canceled")
        assert [a["to_status"] for a in canceled["audit"]][-1] == "canceled"
        back = await shop.order_status(buyer, order["id"], "PAID")
        assert {r["status"] for r in back["registrations"]} == {"APPROVED"}
        assert await shop.sold(order["event_id"]) == 3
        async with httpx.AsyncClient(timeout=10) as c:
            gone = await c.get(
                f"{shop.mollie()}/v2/payments/{order['transaction_id']}/refunds/"
                f"{queued['provider_refund_id']}",
                headers={"Authorization": f"Bearer {shop.mollie_key()}"},
            )
        assert gone.status_code == 404
        # with the balance back, a new refund goes through
        await shop.control("/sandbox/balance", {"low": False})
        again = await shop.refund(order["id"])
        assert again.status_code == 201, again.text
        await shop.refund_status(again.json()["id"], "refunded")
        await shop.order_status(buyer, order["id"], "REFUNDED")


async def test_refund_failed_at_the_bank_returns_the_order_to_paid(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-6") as buyer:
        order = await shop.paid_mollie(buyer)
        # hold new refunds in the queue so the bank's answer can be scripted
        await shop.control("/sandbox/balance", {"low": True})
        resp = await shop.refund(order["id"])
        refund_id = resp.json()["id"]
        queued = await shop.refund_status(refund_id, "queued")
        re_id = queued["provider_refund_id"]
        for status in ("pending", "processing", "failed"):
            moved = await shop.control(f"/sandbox/refunds/{re_id}/advance", {"status": status})
            assert moved.status_code == 200, moved.text
        failed = await shop.refund_status(refund_id, "failed")
        assert failed["failure_code"] == "mollie_failed"
        assert "Refund the buyer another way" in failed["failure_message"]
        back = await shop.order_status(buyer, order["id"], "PAID")
        assert {r["status"] for r in back["registrations"]} == {"APPROVED"}
        assert await shop.sold(order["event_id"]) == 3
        # the buyer is told it failed (and that the organizer knows), never that it completed
        [mail] = await wait_until(
            lambda: shop.refund_mails("ml-buyer-6@example.test"), message="refund failed e-mail"
        )
        assert "could not be completed" in mail["subject"]
        assert "The organizer has been told" in mail["text"]


async def test_refund_refused_at_initiation_then_retried(shop: MollieShop) -> None:
    async with shop.client("ml-buyer-7") as buyer:
        order = await shop.paid_mollie(buyer)
        fault = await shop.control(
            "/sandbox/faults", {"endpoint": "create_refund", "status": 422, "times": 1}
        )
        assert fault.status_code in (200, 201), fault.text
        resp = await shop.refund(order["id"])
        failed = await shop.refund_status(resp.json()["id"], "failed")
        assert failed["failure_code"] and failed["failure_message"]
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PAID"
        # 503 twice: retried with the same Idempotency-Key, one refund at Mollie
        await shop.control(
            "/sandbox/faults", {"endpoint": "create_refund", "status": 503, "times": 2}
        )
        again = await shop.refund(order["id"], key=uuid.uuid4().hex)
        assert again.status_code == 201, again.text
        await shop.refund_status(again.json()["id"], "refunded")
        await shop.order_status(buyer, order["id"], "REFUNDED")
        async with httpx.AsyncClient(timeout=10) as c:
            listed = await c.get(
                f"{shop.mollie()}/v2/payments/{order['transaction_id']}/refunds",
                headers={"Authorization": f"Bearer {shop.mollie_key()}"},
            )
        assert listed.json()["count"] == 1


async def test_webhook_while_mollie_is_unavailable_is_retried_until_paid(
    shop: MollieShop,
) -> None:
    """The webhook cannot fetch the payment (Mollie answers 503 more often than the adapter
    retries): payments answers 503, so Mollie calls again, and the next call marks it paid."""
    async with shop.client("ml-buyer-8") as buyer:
        order = await shop.order(buyer, 1, currency="EUR")
        checkout = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        ).json()
        fault = await shop.control(
            "/sandbox/faults", {"endpoint": "get_payment", "status": 503, "times": 5}
        )
        assert fault.status_code in (200, 201), fault.text
        async with httpx.AsyncClient(timeout=10) as c:
            assert (
                await c.post(checkout["checkout_url"], data={"action": "paid"})
            ).status_code == 303
        await shop.order_status(buyer, order["id"], "PAID")
        tr = checkout["provider_payment_id"]
        codes = [a.get("status_code") for w in await shop.webhooks(tr) for a in w["attempts"]]
        assert codes[0] == 503 and codes[-1] == 200, codes
        assert len(await wait_until(lambda: shop.order_mails("ml-buyer-8@example.test"))) == 1


async def test_a_lost_webhook_is_made_up_for_by_asking_mollie(shop: MollieShop) -> None:
    """The buyer pays but Mollie's webhook never arrives: payments asks Mollie about the open
    attempt on its own and the order is paid, announced and mailed all the same."""
    async with shop.client("ml-buyer-9") as buyer:
        order = await shop.order(buyer, 1, currency="EUR")
        checkout = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        ).json()
        tr = checkout["provider_payment_id"]
        paid = await shop.control(f"/sandbox/payments/{tr}/pay", {"webhook": False})
        assert paid.status_code == 200 and paid.json()["status"] == "paid"
        body = await shop.order_status(buyer, order["id"], "PAID")
        assert body["transaction_id"] == tr
        assert await shop.webhooks(tr) == []
        assert len(await wait_until(lambda: shop.order_mails("ml-buyer-9@example.test"))) == 1


async def test_a_webhook_flood_is_one_fetch_at_a_time_and_loses_no_news(
    shop: MollieShop,
) -> None:
    """Anyone who knows a tr_ id can post it. While payments' fetch of the payment is in flight
    (it read the payment open from Mollie, then the buyer paid), 50 more webhooks at once start
    no fetch of their own: they share one more fetch after it, which sees the payment paid, and
    are answered once that is applied. Mollie is asked twice in all. An id payments does not
    know is never fetched."""
    dsn = f"postgresql://postgres@127.0.0.1:{shop.stack.port('POSTGRES_PORT')}/payments"
    async with (
        shop.client("ml-buyer-10") as buyer,
        httpx.AsyncClient(timeout=30) as poster,
    ):
        order = await shop.order(buyer, 1, currency="EUR")
        checkout = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "mollie"})
        ).json()
        tr = checkout["provider_payment_id"]

        async def webhook(mollie_id: str) -> int:
            answer = await poster.post(
                f"{shop.stack.gateway}/v1/webhooks/mollie",
                content=f"id={mollie_id}".encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            return answer.status_code

        before = await shop.gated_webhooks()

        async def gated(served: str) -> float:
            return (await shop.gated_webhooks()).get(served, 0.0) - before.get(served, 0.0)

        lock = await asyncpg.connect(dsn)
        try:
            # the reconciler (which asks about open attempts after 3 s in this stack) is kept
            # off this attempt: every call counted below is a webhook's
            await lock.execute(
                "UPDATE payments SET reconciled_at = now() + interval '1 hour'"
                " WHERE provider_payment_id = $1",
                tr,
            )
            # the attempt's row is held locked: a fetch reads Mollie, then waits to apply what
            # it read, so it stays in flight for as long as the test needs
            held = lock.transaction()
            await held.start()
            await lock.execute(
                "SELECT 1 FROM payments WHERE provider_payment_id = $1 FOR UPDATE", tr
            )
            first = asyncio.create_task(webhook(tr))
            await wait_until(
                lambda: shop.api_calls(tr, "get_payment"), timeout=30, message="the first fetch"
            )
            paid = await shop.control(f"/sandbox/payments/{tr}/pay", {"webhook": False})
            assert paid.status_code == 200, paid.text
            flood = [asyncio.create_task(webhook(tr)) for _ in range(50)]

            async def flood_arrived() -> bool:  # all 50 wait at the gate, or one got past it
                return await gated("coalesced") >= 49 or await shop.api_calls(tr) > 1

            await wait_until(flood_arrived, timeout=30, message="the flood at the payments API")
            # one fetch in flight, one queued for all 50: none started a fetch of its own
            assert await shop.api_calls(tr) == 1
            assert await gated("fetch") == 2
            await held.rollback()
        finally:
            await lock.close()
        assert await first == 200
        assert await asyncio.gather(*flood) == [200] * 50
        # answered only after the trailing fetch: the attempt is paid already, not eventually
        assert (await shop.mollie_payment(buyer, order["id"]))["status"] == "SUCCEEDED"
        assert await shop.api_calls(tr, "get_payment") == 2
        await shop.order_status(buyer, order["id"], "PAID")

        unknown = "tr_" + uuid.uuid4().hex[:12]
        assert await asyncio.gather(*(webhook(unknown) for _ in range(20))) == [200] * 20
        assert await shop.api_calls(unknown) == 0
