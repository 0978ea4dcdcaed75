"""The providers' webhooks, attacked through the gateway: they take no token, so anyone can
post to them. Forged, tampered, stale and replayed WeChat Pay notifications and junk in every
header are refused without effect and without a 5xx (and the connection they came on keeps
working); junk posted to the Mollie webhook is refused and, like an unknown id, costs no call to
Mollie."""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import pytest

from tests.conftest import Shop, Stack
from tests.wechat import signed_notification

pytestmark = pytest.mark.asyncio(loop_scope="session")
WECHAT = "/v1/webhooks/wechatpay"
MOLLIE = "/v1/webhooks/mollie"


@pytest.fixture
async def shop(stack: Stack):
    s = Shop(stack, f"t-hooks-{uuid.uuid4().hex[:6]}")
    yield s
    await s.admin.aclose()


async def _wechat_attempt(shop: Shop, buyer: httpx.AsyncClient) -> tuple[dict, str]:
    order = await shop.order(buyer, quantity=1)
    pay = await buyer.post(f"/v1/orders/{order['id']}/payments", json={"provider": "wechatpay"})
    assert pay.status_code == 201, pay.text
    return order, pay.json()["out_trade_no"]


async def _payments_db(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{stack.port('POSTGRES_PORT')}/payments"
    )


JUNK_HEADERS: list[dict[str, str | bytes]] = [
    {"Wechatpay-Timestamp": b"\xb2"},  # '²': isdigit() says yes, int() says no
    {"Wechatpay-Timestamp": "１２３４５６７８９０".encode()},  # fullwidth digits
    {"Wechatpay-Timestamp": "9" * 300},
    {"Wechatpay-Timestamp": "-1"},
    {"Wechatpay-Timestamp": ""},
    {"Wechatpay-Nonce": "n" * 5000},
    {"Wechatpay-Nonce": b"\xff\xfe"},
    {"Wechatpay-Signature": "!!!not base64!!!"},
    {"Wechatpay-Signature": "QUJD" * 2000},
    {"Wechatpay-Signature": "WECHATPAY/SIGNTEST/abc"},
    {"Wechatpay-Serial": "PUB_KEY_ID_0000"},
    {"Wechatpay-Signature-Type": "HMAC-SHA256"},
]


async def test_junk_in_any_signature_header_is_refused_and_the_next_request_is_served(
    shop: Shop,
) -> None:
    async with shop.client("hooks-buyer-1") as buyer:
        order, out_trade_no = await _wechat_attempt(shop, buyer)
        body, headers = signed_notification(shop.stack, out_trade_no)
        async with httpx.AsyncClient(base_url=shop.stack.gateway, timeout=30) as anon:
            for junk in JUNK_HEADERS:
                resp = await anon.post(WECHAT, content=body, headers={**headers, **junk})
                assert resp.status_code == 401, (junk, resp.status_code, resp.text)
                assert resp.json()["code"] == "FAIL"
            for raw in (b"", b"\x00\x01", b"{", b'{"resource": 7}', b"[]"):
                resp = await anon.post(WECHAT, content=raw, headers=headers)
                assert resp.status_code == 401, (raw, resp.text)
            # the connections behind the gateway are intact: the genuine one is applied
            resp = await anon.post(WECHAT, content=body, headers=headers)
            assert resp.status_code == 204, resp.text
        await shop.order_status(buyer, order["id"], "PAID")


async def test_tampered_foreign_signed_and_stale_notifications_change_nothing(shop: Shop) -> None:
    async with shop.client("hooks-buyer-2") as buyer:
        order, out_trade_no = await _wechat_attempt(shop, buyer)
        body, headers = signed_notification(shop.stack, out_trade_no)
        _, other_headers = signed_notification(shop.stack, out_trade_no)
        stale_body, stale = signed_notification(
            shop.stack, out_trade_no, timestamp=int(time.time()) - 6 * 60
        )
        async with httpx.AsyncClient(base_url=shop.stack.gateway, timeout=30) as anon:
            tampered = body.replace(b'"summary"', b'"summary2"')
            assert (await anon.post(WECHAT, content=tampered, headers=headers)).status_code == 401
            # another notification's signature on this body
            swapped = {**headers, "Wechatpay-Signature": other_headers["Wechatpay-Signature"]}
            assert (await anon.post(WECHAT, content=body, headers=swapped)).status_code == 401
            # correctly signed, six minutes ago: outside the five-minute window
            assert (await anon.post(WECHAT, content=stale_body, headers=stale)).status_code == 401
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "PENDING"
    conn = await _payments_db(shop.stack)
    try:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM provider_notifications WHERE reference = $1", out_trade_no
        )
    finally:
        await conn.close()
    assert recorded == 0


async def test_a_replayed_notification_is_applied_once(shop: Shop) -> None:
    async with shop.client("hooks-buyer-3") as buyer:
        order, out_trade_no = await _wechat_attempt(shop, buyer)
        body, headers = signed_notification(shop.stack, out_trade_no)
        async with httpx.AsyncClient(base_url=shop.stack.gateway, timeout=30) as anon:
            for _ in range(5):
                assert (await anon.post(WECHAT, content=body, headers=headers)).status_code == 204
        await shop.order_status(buyer, order["id"], "PAID")
    conn = await _payments_db(shop.stack)
    try:
        announced = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE ce_type = 'payment.succeeded' AND key = $1",
            order["id"],
        )
        records = await conn.fetchval(
            "SELECT count(*) FROM provider_notifications WHERE reference = $1", out_trade_no
        )
    finally:
        await conn.close()
    assert (announced, records) == (1, 1)


async def test_junk_on_the_mollie_webhook_is_refused_without_asking_mollie(stack: Stack) -> None:
    """A body without one well-formed payment id is a 400 problem; an id nobody has is answered
    200 like any other (whether we know an id never leaks); neither costs a call to Mollie."""
    mollie = f"http://127.0.0.1:{stack.port('MOLLIE_SANDBOX_PORT')}"
    async with httpx.AsyncClient(timeout=30) as c:
        before = (await c.get(f"{mollie}/sandbox/requests")).json()
        bodies = [
            b"",
            b"id=",
            b"nothing=here",
            b"id=tr_" + b"x" * 5000,
            b"id=tr_%00abc",
            b"id=tr_abcd%0A",
            b"id=re_abcd1234",
            b"id=tr_unknown123&id=tr_unknown456",
            b"\xff\xfe\x00",
            b'{"id": "tr_json1234"}',
        ]
        for body in bodies:
            resp = await c.post(
                stack.gateway + MOLLIE,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert resp.status_code == 400, (body[:20], resp.status_code, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["code"] == "malformed_webhook"
        for unknown in (b"id=tr_unknown123", b"id=tr_Forged1234"):
            resp = await c.post(
                stack.gateway + MOLLIE,
                content=unknown,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert (resp.status_code, resp.content) == (200, b""), resp.text
        after = (await c.get(f"{mollie}/sandbox/requests")).json()
    assert after == before
