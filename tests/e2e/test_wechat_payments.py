"""WeChat Pay end to end on the running stack: checkout, sandbox payment, webhook, e-mail.

Real processes throughout: gateway, orders, payments (adapter → WeChat Pay sandbox → signed,
encrypted notification → webhook), notifications (→ SMTP sink).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.wechat import signed_notification, wx_keys
from ticketing_local.testing import wait_until

from .conftest import Shop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT = "e2e-pay"


@pytest.fixture
async def shop(stack: Stack):
    s = Shop(stack, TENANT)
    yield s
    await s.admin.aclose()


async def test_concurrent_notifications_for_one_payment_pay_it_once(shop: Shop) -> None:
    """Twelve distinct notifications for one payment at the same instant (a retry storm): every
    one is acknowledged, the payment is announced once, the buyer gets one e-mail."""
    async with shop.client("wx-buyer-race") as buyer:
        order = await shop.order(buyer, quantity=1)
        pay = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
        ).json()
        notes = [signed_notification(shop.stack, pay["out_trade_no"]) for _ in range(12)]
        async with httpx.AsyncClient(base_url=shop.stack.gateway, timeout=10) as anon:
            answers = await asyncio.gather(
                *(anon.post("/v1/webhooks/wechatpay", content=b, headers=h) for b, h in notes)
            )
        assert [a.status_code for a in answers] == [204] * 12
        await shop.order_status(buyer, order["id"], "PAID")
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{shop.stack.port('POSTGRES_PORT')}/payments"
        )
        try:
            announced = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE ce_type = 'payment.succeeded' AND key = $1",
                order["id"],
            )
            outcomes = await conn.fetch(
                "SELECT outcome, count(*) FROM provider_notifications WHERE reference = $1"
                " GROUP BY outcome",
                pay["out_trade_no"],
            )
        finally:
            await conn.close()
        assert announced == 1
        assert {r["outcome"]: r["count"] for r in outcomes} == {"paid": 1, "duplicate": 11}
        await wait_until(lambda: shop.mails("wx-buyer-race@"), timeout=60, message="the e-mail")
        assert len(await shop.mails("wx-buyer-race@")) == 1


async def test_native_checkout_paid_in_sandbox_marks_order_paid_and_mails_invites(
    shop: Shop,
) -> None:
    async with shop.client("wx-buyer-1") as buyer:
        order = await shop.order(buyer)
        checkout = await buyer.post(
            f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"}
        )
        assert checkout.status_code == 201, checkout.text
        pay = checkout.json()
        assert pay["payment_method"] == "NATIVE" and pay["code_url"].startswith("weixin://")
        assert pay["out_trade_no"] == uuid.UUID(order["id"]).hex
        again = await buyer.post(
            f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"}
        )
        assert again.json()["code_url"] == pay["code_url"]  # idempotent: the same WeChat order
        async with httpx.AsyncClient(timeout=10) as c:
            assert (
                await c.post(f"{shop.sandbox()}/sandbox/pay/{pay['out_trade_no']}")
            ).status_code == 200
        paid = await shop.order_status(buyer, order["id"], "PAID")
        assert paid["registrations"][0]["status"] == "APPROVED"
        assert [i["status"] for i in paid["invites"]] == ["OPEN", "OPEN"]
        assert paid["payment_provider"] == "wechatpay" and paid["payment_method"] == "NATIVE"
        mails = await wait_until(
            lambda: shop.mails("wx-buyer-1@"), timeout=60, message="the payment e-mail"
        )
        tokens = [i["token"] for i in (await buyer.get(f"/v1/orders/{order['id']}/invites")).json()]
    assert len(mails) == 1
    assert all(t in mails[0]["text"] for t in tokens) and len(tokens) == 2
    # the links are in the mail sent, and nowhere at rest: not in the queued e-mail, not in any
    # event of the orders outbox (which names the invites by id)
    for database, sql in (
        ("notifications", "SELECT body_text, body_html FROM deliveries"),
        ("orders", "SELECT data FROM outbox"),
    ):
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{shop.stack.port('POSTGRES_PORT')}/{database}"
        )
        try:
            kept = "".join(str(r) for r in await conn.fetch(sql))
        finally:
            await conn.close()
        assert kept and not any(t in kept for t in tokens), database


async def test_redelivered_notification_sends_no_second_email(shop: Shop) -> None:
    async with shop.client("wx-buyer-2") as buyer:
        order = await shop.order(buyer, quantity=1)
        pay = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
        ).json()
        async with httpx.AsyncClient(timeout=10) as c:
            await c.post(f"{shop.sandbox()}/sandbox/pay/{pay['out_trade_no']}")
            await shop.order_status(buyer, order["id"], "PAID")
            notes = (await c.get(f"{shop.sandbox()}/sandbox/notifications")).json()
            note = next(n for n in notes if n.get("out_trade_no") == pay["out_trade_no"])
            assert (
                await c.post(
                    f"{shop.sandbox()}/sandbox/notifications/redeliver",
                    json={"id": note["id"], "times": 3},
                )
            ).status_code == 200

            async def delivered_four_times() -> bool:
                notes = (await c.get(f"{shop.sandbox()}/sandbox/notifications")).json()
                n = next(x for x in notes if x["id"] == note["id"])
                return sum(1 for a in n["attempts"] if a.get("delivered")) >= 4

            await wait_until(
                delivered_four_times, timeout=30, message="3 redeliveries acknowledged"
            )
        await wait_until(lambda: shop.mails("wx-buyer-2@"), timeout=60, message="the e-mail")
    assert len(await shop.mails("wx-buyer-2@")) == 1


async def test_tampered_signature_is_refused_and_changes_nothing(shop: Shop) -> None:
    async with shop.client("wx-buyer-3") as buyer:
        order = await shop.order(buyer, quantity=1)
        pay = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
        ).json()
        body, headers = signed_notification(shop.stack, pay["out_trade_no"])
        signature = headers["Wechatpay-Signature"]
        async with httpx.AsyncClient(base_url=shop.stack.gateway, timeout=10) as anon:
            tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESS ")
            resp = await anon.post("/v1/webhooks/wechatpay", content=tampered, headers=headers)
            assert resp.status_code == 401 and resp.json()["code"] == "FAIL"
            probe = await anon.post(
                "/v1/webhooks/wechatpay",
                content=body,
                headers={**headers, "Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + signature},
            )
            assert probe.status_code == 401
            stale = await anon.post(
                "/v1/webhooks/wechatpay",
                content=body,
                headers={**headers, "Wechatpay-Timestamp": str(int(time.time()) - 600)},
            )
            assert stale.status_code == 401
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PENDING"
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{shop.stack.port('POSTGRES_PORT')}/payments"
        )
        try:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM provider_notifications WHERE reference = $1",
                    pay["out_trade_no"],
                )
                == 0
            )
        finally:
            await conn.close()


async def test_tampered_amount_is_never_marked_paid(shop: Shop) -> None:
    async with shop.client("wx-buyer-4") as buyer:
        order = await shop.order(buyer, quantity=1)
        pay = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
        ).json()
        async with httpx.AsyncClient(timeout=10) as c:
            await c.post(
                f"{shop.sandbox()}/sandbox/pay/{pay['out_trade_no']}", json={"amount_total": 1}
            )

        async def rejected() -> bool:
            payments = (await buyer.get(f"/v1/orders/{order['id']}/payments")).json()
            return payments[0]["status"] == "REJECTED"

        await wait_until(rejected, timeout=30, message="the mismatched payment to be rejected")
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PENDING"
    async with httpx.AsyncClient(timeout=5) as c:
        metrics = (
            await c.get(f"http://127.0.0.1:{shop.stack.port('PAYMENTS_API_PORT')}/metrics")
        ).text
    assert any(
        line.startswith('payments_amount_mismatch_total{provider="wechatpay"} ')
        and not line.endswith(" 0.0")
        for line in metrics.splitlines()
    )


async def test_wechat_browser_gets_jsapi_parameters_signed_by_the_merchant_key(shop: Shop) -> None:
    _, _, merchant_pub, _ = wx_keys(shop.stack)
    async with shop.client("wx-buyer-5", wechat_openid="o-openid-5") as buyer:
        order = await shop.order(buyer, quantity=1)
        ua = {"User-Agent": "Mozilla/5.0 (iPhone) AppleWebKit MicroMessenger/8.0.50"}
        resp = await buyer.post(
            f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"}, headers=ua
        )
        assert resp.status_code == 201, resp.text
        pay = resp.json()
    j = pay["jsapi"]
    assert (
        pay["payment_method"] == "JSAPI"
        and j["signType"] == "RSA"
        and j["package"].startswith("prepay_id=")
    )
    message = f"{j['appId']}\n{j['timeStamp']}\n{j['nonceStr']}\n{j['package']}\n".encode()
    merchant_pub.verify(
        base64.b64decode(j["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )
    async with shop.client("wx-buyer-6") as no_openid:
        order2 = await shop.order(no_openid, quantity=1)
        resp = await no_openid.post(
            f"/v1/orders/{order2['id']}/payments", json={"provider": "wechatpay"}, headers=ua
        )
        assert (resp.status_code, resp.json()["code"]) == (422, "openid_required")


async def test_unpaid_order_expires_is_closed_at_the_provider_and_mailed(shop: Shop) -> None:
    async with shop.client("wx-buyer-7") as buyer:
        order = await shop.order(buyer, quantity=1)
        pay = (
            await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
        ).json()
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{shop.stack.port('POSTGRES_PORT')}/orders"
        )
        try:  # time passes: the order's hold runs out (the real expiry worker does the rest)
            await conn.execute(
                "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1",
                uuid.UUID(order["id"]),
            )
        finally:
            await conn.close()
        await shop.order_status(buyer, order["id"], "CANCELLED")

        async def closed() -> bool:
            payments = (await buyer.get(f"/v1/orders/{order['id']}/payments")).json()
            return payments[0]["status"] == "CLOSED"

        await wait_until(closed, timeout=60, message="the WeChat order closed")
    mails = await wait_until(
        lambda: shop.mails("wx-buyer-7@"), timeout=60, message="the expiry e-mail"
    )
    assert "expired" in mails[0]["subject"].lower()
    async with httpx.AsyncClient(timeout=10) as c:
        late = await c.post(f"{shop.sandbox()}/sandbox/pay/{pay['out_trade_no']}")
    assert late.status_code >= 400  # a closed order cannot be paid by a late scan
