"""Payment outcome, late payment, expiry, invites and refund settlement, on real processes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from ticketing_local.testing import wait_until
from ticketing_shared.contracts import PaymentSucceeded, RefundCompleted

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _buy(
    svc: OrdersService,
    buyer: str,
    *,
    quantity: int = 3,
    max_quantity: int = 10,
    require_approval: bool = False,
    tiers: dict[int, int] | None = None,
) -> tuple[dict, dict]:
    async with svc.client("admin1", "admin") as admin:
        event = await svc.event(admin, require_approval=require_approval)
        tt = await svc.ticket_type(
            admin, event["id"], max_quantity=max_quantity, tiers=tiers or {1: 1500, 3: 4000}
        )
    async with svc.client(buyer) as c:
        resp = await c.post(
            f"/v1/events/{event['id']}/registrations",
            json={"ticket_type_id": tt["id"], "quantity": quantity},
        )
        assert resp.status_code == 201, resp.text
    return event, resp.json()["order"]


def _payment(
    svc: OrdersService, order: dict[str, Any], tx: str = "tx-1", **kw: Any
) -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id=order["id"],
        tenant_id=svc.tenant,
        payment_id=uuid.uuid4(),
        provider="wechatpay",
        payment_method="NATIVE",
        transaction_id=tx,
        amount=kw.pop("amount", order["total_amount"]),
        currency=order["currency"],
        paid_at=datetime.now(UTC),
        transaction_fee=24,
        app_fee=40,
        **kw,
    )


async def _current(svc: OrdersService, event_id: str) -> int:
    async with svc.client("admin1", "admin") as admin:
        return (await admin.get(f"/v1/events/{event_id}")).json()["ticket_types"][0][
            "current_quantity"
        ]


async def test_payment_marks_paid_opens_invites_and_a_duplicate_changes_nothing(
    orders_service: OrdersService,
) -> None:
    _, order = await _buy(orders_service, "pay-1")
    payment = _payment(orders_service, order)
    await orders_service.publish(payment, order["id"])
    async with orders_service.client("pay-1") as buyer:
        paid = await orders_service.wait_order_status(buyer, order["id"], "PAID")
        assert (
            paid["transaction_id"] == "tx-1"
            and paid["payment_method"] == "NATIVE"
            and paid["paid_at"]
        )
        assert paid["registrations"][0]["status"] == "APPROVED"
        assert [i["status"] for i in paid["invites"]] == ["OPEN", "OPEN"]
        invites = (await buyer.get(f"/v1/orders/{order['id']}/invites")).json()
        assert len(invites) == 2 and all(len(i["token"]) >= 22 for i in invites)
    await orders_service.publish(payment, order["id"])  # the same payment told again (new event id)

    async def consumed_twice() -> bool:
        return (
            await orders_service.pool.fetchval(
                "SELECT count(*) FROM inbox WHERE ce_subject = $1 AND ce_type = 'payment.succeeded'",
                order["id"],
            )
            == 2
        )

    await wait_until(consumed_twice, timeout=30, message="second payment event consumed")
    paid_events = await orders_service.outbox("order.paid", order["id"])
    assert len(paid_events) == 1
    # the event names the open invites by id (the e-mail derives their links); no token is
    # written anywhere: the database keeps their digests
    tokens = [i["token"] for i in invites]
    assert paid_events[0]["invite_tokens"] == []
    ids = [
        str(r["id"])
        for r in await orders_service.pool.fetch(
            "SELECT i.id FROM invites i JOIN seats s ON s.id = i.seat_id"
            " WHERE i.order_id = $1 ORDER BY s.position",
            uuid.UUID(order["id"]),
        )
    ]
    assert paid_events[0]["invite_ids"] == ids
    everything = "".join(str(r) for r in await orders_service.pool.fetch("SELECT data FROM outbox"))
    assert not any(t in everything for t in tokens)
    stored = await orders_service.pool.fetch(
        "SELECT token FROM invites WHERE order_id = $1", uuid.UUID(order["id"])
    )
    assert sorted(r["token"] for r in stored) == sorted(
        hashlib.sha256(t.encode()).hexdigest() for t in tokens
    )
    dump = "".join(
        str(r) for r in await orders_service.pool.fetch("SELECT * FROM invites")
    ) + "".join(str(r) for r in await orders_service.pool.fetch("SELECT * FROM audit_log"))
    assert not any(t in dump for t in tokens)


async def test_payment_with_approval_leaves_registration_pending(
    orders_service: OrdersService,
) -> None:
    _, order = await _buy(orders_service, "pay-2", quantity=1, require_approval=True)
    await orders_service.publish(_payment(orders_service, order), order["id"])
    async with orders_service.client("pay-2") as buyer:
        paid = await orders_service.wait_order_status(buyer, order["id"], "PAID")
    assert paid["registrations"][0]["status"] == "PENDING"


async def test_unpaid_order_expires_and_releases_its_seats(orders_service: OrdersService) -> None:
    event, order = await _buy(orders_service, "slow")
    assert await _current(orders_service, event["id"]) == 3
    await orders_service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(order["id"]),
    )
    async with orders_service.client("slow") as buyer:
        expired = await orders_service.wait_order_status(buyer, order["id"], "CANCELLED")
    assert {i["status"] for i in expired["invites"]} == {"VOID"}
    assert await _current(orders_service, event["id"]) == 0
    async with orders_service.client("admin1", "admin") as admin:
        regs = (await admin.get(f"/v1/events/{event['id']}/registrations")).json()["items"]
    assert regs[0]["cancellation_reason"] == "payment_abandoned"
    assert len(await orders_service.outbox("order.expired", order["id"])) == 1
    await orders_service.check_inventory_invariant()


async def test_late_payment_revives_the_order_when_seats_remain(
    orders_service: OrdersService,
) -> None:
    event, order = await _buy(orders_service, "late-1")
    async with orders_service.client("late-1") as buyer:
        await buyer.post(f"/v1/orders/{order['id']}/cancel")
        assert await _current(orders_service, event["id"]) == 0
        await orders_service.publish(_payment(orders_service, order, "tx-late"), order["id"])
        revived = await orders_service.wait_order_status(buyer, order["id"], "PAID")
    assert revived["registrations"][0]["status"] == "APPROVED"
    assert {s["status"] for s in revived["seats"]} == {"ACTIVE"}
    assert {i["status"] for i in revived["invites"]} == {"OPEN"}
    assert await _current(orders_service, event["id"]) == 3
    # the buyer's confirmation says the order came back after its expiry
    [paid] = await orders_service.outbox("order.paid", order["id"])
    assert paid["revived"] is True
    await orders_service.check_inventory_invariant()


async def test_late_payment_without_seats_keeps_order_cancelled_and_asks_for_a_refund(
    orders_service: OrdersService,
) -> None:
    event, order = await _buy(orders_service, "late-2", quantity=3, max_quantity=3)
    async with orders_service.client("late-2") as buyer:
        await buyer.post(f"/v1/orders/{order['id']}/cancel")
    async with orders_service.client("grabber") as grabber:
        tt_id = order["ticket_type_id"]
        resp = await grabber.post(
            f"/v1/events/{event['id']}/registrations", json={"ticket_type_id": tt_id, "quantity": 1}
        )
        assert resp.status_code == 201
    await orders_service.publish(_payment(orders_service, order, "tx-too-late"), order["id"])
    rejected = await wait_until(
        lambda: orders_service.outbox("order.payment_rejected", order["id"]),
        timeout=30,
        message="refund request for the late payment",
    )
    assert (rejected[0]["reason"], rejected[0]["note"], rejected[0]["amount"]) == (
        "late_payment",
        "late payment",
        4000,
    )
    assert rejected[0]["event_title"] == event["title"]  # the buyer's e-mail names the event
    async with orders_service.client("late-2") as buyer:
        assert (await buyer.get(f"/v1/orders/{order['id']}")).json()["status"] == "CANCELLED"
    assert await _current(orders_service, event["id"]) == 1
    await orders_service.check_inventory_invariant()


async def test_invites_open_on_payment_and_redeem_exactly_once(
    orders_service: OrdersService,
) -> None:
    _, order = await _buy(orders_service, "giver")
    async with orders_service.client("giver") as giver:
        locked = (await giver.get(f"/v1/orders/{order['id']}/invites")).json()
        async with orders_service.client("early-guest") as guest:
            resp = await guest.post(f"/v1/invites/{locked[0]['token']}/redeem")
            assert (resp.status_code, resp.json()["code"]) == (409, "invite_not_open")
        await orders_service.publish(_payment(orders_service, order, "tx-inv"), order["id"])
        await orders_service.wait_order_status(giver, order["id"], "PAID")
        tokens = [i["token"] for i in (await giver.get(f"/v1/orders/{order['id']}/invites")).json()]
        own = await giver.post(f"/v1/invites/{tokens[0]}/redeem")
        assert (own.status_code, own.json()["code"]) == (409, "own_invite")
    async with orders_service.client("guest-1") as g1, orders_service.client("guest-2") as g2:
        first = await g1.post(f"/v1/invites/{tokens[0]}/redeem")
        assert first.status_code == 201, first.text
        reg = first.json()["registration"]
        assert (reg["status"], reg["user_id"], reg["order_id"]) == (
            "APPROVED",
            "guest-1",
            order["id"],
        )
        second = await g2.post(f"/v1/invites/{tokens[0]}/redeem")
        assert (second.status_code, second.json()["code"]) == (409, "invite_already_redeemed")
        same_user_again = await g1.post(f"/v1/invites/{tokens[1]}/redeem")
        assert (same_user_again.status_code, same_user_again.json()["code"]) == (
            409,
            "already_registered",
        )
        assert (await g2.post("/v1/invites/not-a-token/redeem")).status_code == 404
        # a token whose tag is not the secret's is not found (and costs no database look-up)
        forged = tokens[1][:-2] + ("AA" if tokens[1][-2:] != "AA" else "BA")
        assert (await g2.post(f"/v1/invites/{forged}/redeem")).status_code == 404
    assert len(await orders_service.outbox("invite.redeemed", order["id"])) == 1


async def test_a_link_sent_before_tokens_were_derived_still_redeems(
    orders_service: OrdersService,
) -> None:
    """Invites of before kept their random token, now stored as its digest only (migration
    0006): the link in the e-mail sent then still works."""
    _, order = await _buy(orders_service, "legacy-giver")
    await orders_service.publish(_payment(orders_service, order, "tx-legacy"), order["id"])
    async with orders_service.client("legacy-giver") as giver:
        await orders_service.wait_order_status(giver, order["id"], "PAID")
    legacy = secrets.token_urlsafe(24)
    await orders_service.pool.execute(
        """
        UPDATE invites SET token = $2
        WHERE id = (SELECT id FROM invites WHERE order_id = $1 ORDER BY id LIMIT 1)
        """,
        uuid.UUID(order["id"]),
        hashlib.sha256(legacy.encode()).hexdigest(),
    )
    async with orders_service.client("legacy-guest") as guest:
        redeemed = await guest.post(f"/v1/invites/{legacy}/redeem")
        assert redeemed.status_code == 201, redeemed.text
        again = await guest.post(f"/v1/invites/{secrets.token_urlsafe(24)}/redeem")
        assert again.status_code == 404


async def test_refund_settlement_voids_seats_cancels_registrations_and_releases_once(
    orders_service: OrdersService,
) -> None:
    event, order = await _buy(orders_service, "refund-buyer")
    await orders_service.publish(_payment(orders_service, order, "tx-r"), order["id"])
    async with orders_service.client("refund-buyer") as buyer:
        await orders_service.wait_order_status(buyer, order["id"], "PAID")
        seats = [s["id"] for s in (await buyer.get(f"/v1/orders/{order['id']}")).json()["seats"]]
    partial = RefundCompleted(
        refund_id=uuid.uuid4(),
        order_id=order["id"],
        tenant_id=orders_service.tenant,
        amount=2666,
        currency="EUR",
        reason="organizer",
        voided_seat_ids=seats[1:],
        fully_refunded=False,
        refunded_at=datetime.now(UTC),
    )
    await orders_service.publish(partial, order["id"])
    await orders_service.publish(partial, order["id"])  # told twice (new event id): applied once
    async with orders_service.client("refund-buyer") as buyer:
        part = await orders_service.wait_order_status(buyer, order["id"], "PARTIALLY_REFUNDED")
        assert part["refunded_amount"] == 2666
        assert [s["status"] for s in part["seats"]] == ["ACTIVE", "VOID", "VOID"]
        assert {i["status"] for i in part["invites"]} == {"VOID"}
        assert await _current(orders_service, event["id"]) == 1
        rest = RefundCompleted(
            refund_id=uuid.uuid4(),
            order_id=order["id"],
            tenant_id=orders_service.tenant,
            amount=1334,
            currency="EUR",
            reason="organizer",
            voided_seat_ids=[seats[0]],
            fully_refunded=True,
            refunded_at=datetime.now(UTC),
        )
        await orders_service.publish(rest, order["id"])
        done = await orders_service.wait_order_status(buyer, order["id"], "REFUNDED")
    assert done["refunded_amount"] == 4000 and {s["status"] for s in done["seats"]} == {"VOID"}
    assert done["registrations"][0]["status"] == "CANCELLED"
    assert await _current(orders_service, event["id"]) == 0
    await orders_service.check_inventory_invariant()
    # each settlement is announced once, with what it voided and released…
    applied = await orders_service.outbox("order.refund_applied", order["id"])
    assert [
        (a["refund_id"], a["status"], a["refunded_amount"], sorted(a["voided_seat_ids"]))
        for a in applied
    ] == [
        (str(partial.refund_id), "PARTIALLY_REFUNDED", 2666, sorted(seats[1:])),
        (str(rest.refund_id), "REFUNDED", 4000, [seats[0]]),
    ]
    assert [a["released"] for a in applied] == [2, 1]
    # …and audited: the order's moves, the registration cancelled and the invites voided
    audit = await orders_service.pool.fetch(
        "SELECT entity, actor, action, from_status, to_status, details FROM audit_log"
        " WHERE order_id = $1 AND actor LIKE 'refund:%' ORDER BY id",
        uuid.UUID(order["id"]),
    )
    moves = [a for a in audit if a["action"] == "order.refund_settled"]
    assert [(m["actor"], m["from_status"], m["to_status"]) for m in moves] == [
        (f"refund:{partial.refund_id}", "PAID", "PARTIALLY_REFUNDED"),
        (f"refund:{rest.refund_id}", "PARTIALLY_REFUNDED", "REFUNDED"),
    ]
    assert moves[1]["details"]["voided_seats"] == [seats[0]]
    assert moves[1]["details"]["refunded_amount"] == 4000
    cancelled = [a for a in audit if a["action"] == "registration.cancelled"]
    assert [(c["actor"], c["details"]) for c in cancelled] == [
        (f"refund:{rest.refund_id}", {"reason": "organizer"})
    ]
    assert sum(a["action"] == "invite.voided" for a in audit) == 2


async def test_staff_cannot_cancel_or_reject_a_paid_registration(
    orders_service: OrdersService,
) -> None:
    _, order = await _buy(orders_service, "paid-reg", quantity=1, require_approval=True)
    await orders_service.publish(_payment(orders_service, order, "tx-p"), order["id"])
    async with orders_service.client("paid-reg") as buyer:
        paid = await orders_service.wait_order_status(buyer, order["id"], "PAID")
    reg_id = paid["registrations"][0]["id"]
    async with orders_service.client("admin1", "admin") as admin:
        for action in ("cancel", "reject"):
            resp = await admin.post(f"/v1/registrations/{reg_id}/{action}")
            assert (resp.status_code, resp.json()["code"]) == (409, "refund_required"), action
        approved = await admin.post(f"/v1/registrations/{reg_id}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "APPROVED"
    async with orders_service.client("m", "member") as member:
        assert (await member.post(f"/v1/registrations/{reg_id}/approve")).status_code == 403
