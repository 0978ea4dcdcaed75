"""Refunds through the HTTP API on real processes, real PostgreSQL and a real broker: who may
refund, what a request amounts to, the guards (also under concurrency), idempotency, the provider's
answers, buyer cancellations, late payments, and row-level security."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from ticketing_local.testing import wait_until
from ticketing_shared.contracts import (
    OrderPaymentRejected,
    PaymentRefundUpdated,
    RegistrationCancellationRequested,
)
from ticketing_shared.money import allocate

from .conftest import PaidOrder, RefundsService

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def refund(
    c: httpx.AsyncClient,
    order: PaidOrder,
    body: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response:
    return await c.post(
        f"/v1/orders/{order.id}/refunds",
        json={"reason": "organizer", **(body or {})},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


async def provider_says(
    svc: RefundsService, order: PaidOrder, refund_id: str, status: str, **extra: Any
) -> None:
    await svc.publish(
        PaymentRefundUpdated(
            refund_id=uuid.UUID(refund_id),
            order_id=order.id,
            tenant_id=order.tenant,
            provider="wechatpay",
            status=status,
            at=datetime.now(UTC),
            **extra,
        ),
        order.id,
    )


async def test_who_may_refund(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order()
    anonymous = httpx.AsyncClient(base_url=svc.api.url)
    async with (
        anonymous,
        svc.client("buyer", role=None) as buyer,
        svc.client("member", role="member") as member,
        svc.client("other-admin", role="admin", tenant="another-tenant") as other_admin,
        svc.client("admin", role="admin") as admin,
        svc.client("root", role=None, platform_admin=True) as platform,
    ):
        assert (await refund(anonymous, order)).status_code == 401
        assert (await refund(buyer, order)).status_code == 404
        assert (await refund(other_admin, order)).status_code == 404
        resp = await refund(member, order)
        assert resp.status_code == 403 and resp.json()["code"] == "forbidden"
        # the order's buyer reads its refunds (never the organizer's internal note)
        seen = await buyer.get(f"/v1/orders/{order.id}/refunds")
        assert seen.status_code == 200
        assert all(r["internal_note"] is None for r in seen.json())
        assert (await other_admin.get(f"/v1/orders/{order.id}/refunds")).status_code == 404
        assert (await member.get(f"/v1/orders/{order.id}/refunds")).status_code == 403

        first = await refund(admin, order, {"amount": 100})
        assert first.status_code == 201, first.text
        assert (await other_admin.get(f"/v1/refunds/{first.json()['id']}")).status_code == 404
        by_platform = await refund(platform, order, {"amount": 100, "reason": "admin"})
        assert by_platform.status_code == 201, by_platform.text
        listed = (await admin.get(f"/v1/orders/{order.id}/refunds")).json()
        assert [r["requested_by"] for r in listed] == ["admin", "root"]


async def test_idempotency_key_required_and_replayed(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order()
    async with svc.client() as c:
        resp = await c.post(f"/v1/orders/{order.id}/refunds", json={"reason": "organizer"})
        assert resp.status_code == 400 and resp.json()["code"] == "idempotency_key_required"
        body = {"amount": 500, "note": "Sorry"}
        first, again = await refund(c, order, body, "k1"), await refund(c, order, body, "k1")
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        concurrent = await asyncio.gather(*(refund(c, order, body, "k2") for _ in range(5)))
        assert {r.status_code for r in concurrent} == {201}
        assert len({r.json()["id"] for r in concurrent}) == 1
        other_body = await refund(c, order, {"amount": 600}, "k1")
        assert other_body.status_code == 422
        assert other_body.json()["code"] == "idempotency_key_reused"
        for headers, code in (
            ([("Idempotency-Key", "")], "bad_idempotency_key"),
            ([("Idempotency-Key", "k" * 256)], "bad_idempotency_key"),
            ([("Idempotency-Key", "k3"), ("Idempotency-Key", "k4")], "idempotency_key_repeated"),
        ):
            resp = await c.post(
                f"/v1/orders/{order.id}/refunds",
                json={"reason": "organizer", "amount": 100},
                headers=headers,
            )
            assert (resp.status_code, resp.json()["code"]) == (400, code), resp.text
    # one refund (so one provider call) per key
    assert len(await svc.outbox("refund.requested", order.id)) == 2


async def test_a_body_naming_a_key_twice_refunds_nothing(refunds_service: RefundsService) -> None:
    """``{"amount": 1, "amount": null}`` once meant "no amount": everything refunded."""
    svc = refunds_service
    order = await svc.paid_order()
    async with svc.client() as c:
        resp = await c.post(
            f"/v1/orders/{order.id}/refunds",
            content=b'{"reason": "organizer", "amount": 1, "amount": null}',
            headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
        )
        assert resp.status_code == 422, resp.text
        assert (resp.json()["code"], resp.json()["key"]) == ("duplicate_key", "amount")
        assert (await c.get(f"/v1/orders/{order.id}/refunds")).json() == []
    assert await svc.outbox("refund.requested", order.id) == []


async def test_notes_are_text_without_control_characters(refunds_service: RefundsService) -> None:
    """The buyer's note is one line (it goes to WeChat Pay and into e-mails); the staff's own
    note may span lines; neither takes any other control character."""
    svc = refunds_service
    order = await svc.paid_order()
    async with svc.client() as c:
        for body in (
            {"note": "Sorry\nfor that"},
            {"note": "Sorry\x1b[2J"},
            {"internal_note": "called\x00them"},
            {"internal_note": "called\x0bthem"},
        ):
            resp = await refund(c, order, {"amount": 100, **body})
            assert resp.status_code == 422, (body, resp.text)
        assert (await c.get(f"/v1/orders/{order.id}/refunds")).json() == []
        resp = await refund(
            c, order, {"amount": 100, "note": "Sorry", "internal_note": "called\r\n\tthem"}
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["internal_note"] == "called\r\n\tthem"
    assert len(await svc.outbox("refund.requested", order.id)) == 1


async def test_full_partial_and_amount_only(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(quantity=3, total=1000)
    shares = allocate(1000, 3)  # 334, 333, 333
    async with svc.client() as c:
        two = await refund(c, order, {"items": [{"seat_id": str(s)} for s in order.seats[:2]]})
        assert two.status_code == 201, two.text
        assert two.json()["amount"] == shares[0] + shares[1]
        assert two.json()["status"] == "pending"
        assert {i["seat_id"] for i in two.json()["items"]} == {str(s) for s in order.seats[:2]}
        again = await refund(c, order, {"items": [{"seat_id": str(order.seats[0])}]})
        assert again.status_code == 409 and again.json()["code"] == "seat_already_refunded"
        unknown = await refund(c, order, {"items": [{"seat_id": str(uuid.uuid4())}]})
        assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_seat"
        money_only = await refund(c, order, {"amount": 100})
        assert money_only.status_code == 201 and money_only.json()["items"] == []
        over = await refund(c, order, {"amount": 1000})
        assert over.status_code == 409 and over.json()["code"] == "over_refund"
        rest = await refund(c, order)  # everything that remains, with the last seat
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount"] == 1000 - (shares[0] + shares[1]) - 100
        assert [i["seat_id"] for i in rest.json()["items"]] == [str(order.seats[2])]
        done = await refund(c, order)
        assert done.status_code == 409 and done.json()["code"] == "order_not_refundable"
        for bad in ({"amount": 0}, {"amount": -5}, {"items": []}, {"reason": "user"}):
            assert (await refund(c, order, bad)).status_code == 422, bad


async def test_unpaid_order_is_not_refundable(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(paid=False)
    async with svc.client() as c:
        resp = await refund(c, order)
        assert resp.status_code == 409 and resp.json()["code"] == "order_not_refundable"


async def test_concurrent_partial_refunds_never_over_refund(
    refunds_service: RefundsService,
) -> None:
    svc = refunds_service
    order = await svc.paid_order(quantity=2, total=4000)
    async with svc.client() as c:
        answers = await asyncio.gather(*(refund(c, order, {"amount": 300}) for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 13 and codes.count(409) == 7, codes
    assert all(r.json()["code"] == "over_refund" for r in answers if r.status_code == 409)
    total = await svc.admin.fetchval(
        "SELECT sum(amount) FROM refunds WHERE order_id = $1", order.id
    )
    assert total == 3900 <= order.total


async def test_provider_answers_drive_the_refund(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(quantity=3, total=3000)
    async with svc.client() as c:
        partial = (await refund(c, order, {"items": [{"seat_id": str(order.seats[0])}]})).json()
        await provider_says(svc, order, partial["id"], "processing", provider_refund_id="50300")
        body = await svc.wait_refund(partial["id"], "processing")
        assert body["provider_refund_id"] == "50300"
        for _ in range(3):  # the settlement told three times
            await provider_says(svc, order, partial["id"], "refunded")
        body = await svc.wait_refund(partial["id"], "refunded")
        assert body["refunded_at"] is not None
        assert [a["action"] for a in body["audit"]] == [
            "refund.requested",
            "refund.processing",
            "refund.refunded",
        ]
        changed = await svc.outbox("refund.status_changed", order.id)
        assert [e["status"] for e in changed] == ["processing"]

        async def completed() -> list[dict[str, Any]]:
            return await svc.outbox("refund.completed", order.id)

        (event,) = await wait_until(completed, message="refund.completed")
        await asyncio.sleep(0.3)  # the redeliveries had time to (not) publish again
        assert len(await completed()) == 1
        assert event["voided_seat_ids"] == [str(order.seats[0])]
        assert event["fully_refunded"] is False and event["refunded_total"] == 1000
        assert event["buyer_email"] == "buyer@example.test" and event["buyer_locale"] == "nl"

        # the provider refuses the next one: failed, with the reason; the money is free again
        failing = (await refund(c, order)).json()
        assert failing["amount"] == 2000
        await provider_says(
            svc,
            order,
            failing["id"],
            "failed",
            failure_code="NOT_ENOUGH",
            failure_message="merchant balance too low; top up and refund again",
        )
        body = await svc.wait_refund(failing["id"], "failed")
        assert body["failure_code"] == "NOT_ENOUGH"
        assert "top up" in body["failure_message"]
        (told,) = [
            e
            for e in await svc.outbox("refund.status_changed", order.id)
            if e["refund_id"] == failing["id"]
        ]
        assert (told["status"], told["previous_status"], told["failure_code"]) == (
            "failed",
            "pending",
            "NOT_ENOUGH",
        )
        assert "top up" in told["failure_message"]
        retry = await refund(c, order)
        assert retry.status_code == 201 and retry.json()["amount"] == 2000
        await provider_says(svc, order, retry.json()["id"], "refunded")
        await svc.wait_refund(retry.json()["id"], "refunded")
        events = await wait_until(
            lambda: _at_least(svc.outbox("refund.completed", order.id), 2),
            message="second refund.completed",
        )
        assert events[-1]["fully_refunded"] is True and events[-1]["refunded_total"] == 3000


async def _at_least(rows: Any, n: int) -> list[dict[str, Any]] | None:
    got = await rows
    return got if len(got) >= n else None


async def test_cancel_only_while_pending_or_queued(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(quantity=1, total=2000)
    async with svc.client() as c:
        first = (await refund(c, order, {"amount": 500})).json()
        resp = await c.post(f"/v1/refunds/{first['id']}/cancel")
        assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
        assert len(await svc.outbox("refund.cancel_requested", order.id)) == 1
        await provider_says(svc, order, first["id"], "canceled")
        await svc.wait_refund(first["id"], "canceled")
        # a canceled refund no longer counts: the whole amount can be refunded
        second = (await refund(c, order, {"amount": 2000})).json()
        await provider_says(svc, order, second["id"], "processing")
        await svc.wait_refund(second["id"], "processing")
        late = await c.post(f"/v1/refunds/{second['id']}/cancel")
        assert late.status_code == 409 and late.json()["code"] == "refund_not_cancelable"


async def test_buyer_cancellation_becomes_a_refund(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(quantity=2, total=3000)
    ask = RegistrationCancellationRequested(
        registration_id=uuid.uuid4(),
        order_id=order.id,
        tenant_id=order.tenant,
        event_id=uuid.uuid4(),
        user_id="buyer",
        seat_id=order.seats[1],
        amount=1420,
        currency="EUR",
    )
    await svc.publish(ask, order.id)
    await svc.publish(ask, order.id)  # asked twice (a new event id): one refund
    async with svc.client() as c:

        async def listed() -> list[dict[str, Any]] | None:
            body = (await c.get(f"/v1/orders/{order.id}/refunds")).json()
            return body or None

        (made,) = await wait_until(listed, message="refund from the cancellation")
        await asyncio.sleep(0.3)
        assert len((await c.get(f"/v1/orders/{order.id}/refunds")).json()) == 1
    assert made["reason"] == "user" and made["amount"] == 1420
    assert made["items"] == [{"seat_id": str(order.seats[1]), "amount": 1420}]


async def test_late_payment_is_returned_once(refunds_service: RefundsService) -> None:
    svc = refunds_service
    order = await svc.paid_order(paid=False)
    rejected = OrderPaymentRejected(
        order_id=order.id,
        tenant_id=order.tenant,
        payment_id=uuid.uuid4(),
        transaction_id="tx-late",
        provider="wechatpay",
        amount=order.total,
        currency="EUR",
        reason="late_payment",
        note="late payment",
    )
    for _ in range(2):
        await svc.publish(rejected, order.id)
    requested = await wait_until(
        lambda: svc.outbox("refund.requested", order.id), message="late-payment refund"
    )
    await asyncio.sleep(0.3)
    assert len(await svc.outbox("refund.requested", order.id)) == 1
    (event,) = requested
    assert event["amount"] == order.total and event["reason"] == "other"
    assert event["note"] == "late payment" and event["payment_id"] == str(rejected.payment_id)

    # the provider cannot return it: nothing will retry, so the organizer is asked to act
    await provider_says(
        svc, order, event["refund_id"], "failed", failure_code="ABNORMAL", failure_message="closed"
    )
    async with svc.client() as c:

        async def flagged() -> list[dict[str, Any]]:
            resp = await c.get(
                f"/v1/events/{order.event_id}/refunds", params={"needs_action": True}
            )
            assert resp.status_code == 200, resp.text
            return list(resp.json()["items"])

        [row] = await wait_until(flagged, message="the failed late-payment refund flagged")
        assert row["kind"] == "rejected_payment" and row["needs_action"] is True
        assert row["buyer_email"] == "buyer@example.test"


async def test_row_level_security_hides_other_tenants(refunds_service: RefundsService) -> None:
    """Even a query that skipped the application's checks sees only its tenant's rows."""
    svc = refunds_service
    order = await svc.paid_order()
    async with svc.client() as c:
        assert (await refund(c, order, {"amount": 10})).status_code == 201
    conn = await asyncpg.connect(svc.app_dsn)  # the role the service connects as
    try:
        for table in ("refunds", "orders_view", "refund_items", "refund_audit"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', 'another-tenant', true)")
            assert await conn.fetchval("SELECT count(*) FROM refunds") == 0
            assert await conn.fetchval("SELECT count(*) FROM orders_view") == 0
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", order.tenant)
            assert (
                await conn.fetchval("SELECT count(*) FROM refunds WHERE order_id = $1", order.id)
                == 1
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', 'another-tenant', true)")
                await conn.execute(
                    "UPDATE orders_view SET tenant_id = 'another-tenant' WHERE true"
                )  # sees nothing: nothing to update, so try writing a foreign row instead
                await conn.execute(
                    """INSERT INTO orders_view (order_id, tenant_id, event_id, buyer_id, quantity,
                       total_amount, currency, seat_ids) VALUES ($1, $2, $1, 'x', 1, 1, 'EUR', '{}')""",
                    uuid.uuid4(),
                    order.tenant,
                )
    finally:
        await conn.close()
