"""Free and paid registration, idempotency, order reads and buyer cancel, through HTTP."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _setup(svc: OrdersService, **tt_kwargs):
    async with svc.client("admin1", "admin") as admin:
        event = await svc.event(admin, require_approval=tt_kwargs.pop("require_approval", False))
        tt = await svc.ticket_type(admin, event["id"], **tt_kwargs)
    return event, tt


async def test_paid_purchase_creates_pending_order_registration_and_locked_invites(
    orders_service: OrdersService,
) -> None:
    event, tt = await _setup(orders_service, max_quantity=10, tiers={1: 1500, 3: 4000})
    async with orders_service.client("alice") as alice:
        resp = await alice.post(
            f"/v1/events/{event['id']}/registrations",
            json={"ticket_type_id": tt["id"], "quantity": 3},
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        order, reg = body["order"], body["registration"]
        assert (order["status"], order["quantity"], order["total_amount"], order["currency"]) == (
            "PENDING",
            3,
            4000,
            "EUR",
        )
        assert reg["status"] == "PENDING_PAYMENT" and reg["seat_id"] == order["seats"][0]["id"]
        assert [i["status"] for i in order["invites"]] == ["LOCKED", "LOCKED"]
        assert (
            reg["policy_source"] == "tenant"
            and reg["cancellation_policy"]["allow_cancellation"] is False
        )
        expires = datetime.fromisoformat(order["expires_at"]) - datetime.fromisoformat(
            order["created_at"]
        )
        assert 1790 <= expires.total_seconds() <= 1810
        stored = (await alice.get(f"/v1/orders/{order['id']}")).json()
        assert stored["status"] == "PENDING" and len(stored["seats"]) == 3
        mine = (await alice.get("/v1/me/orders", params={"event_id": event["id"]})).json()["items"]
        assert [o["id"] for o in mine] == [order["id"]]
    created = await orders_service.outbox("order.created", order["id"])
    assert len(created) == 1
    assert (created[0]["buyer_email"], created[0]["total_amount"], len(created[0]["seats"])) == (
        "alice@example.test",
        4000,
        3,
    )
    async with orders_service.client("admin1", "admin") as admin:
        got = (await admin.get(f"/v1/events/{event['id']}")).json()
        assert got["ticket_types"][0]["current_quantity"] == 3


async def test_quantity_without_tier_and_too_few_seats(orders_service: OrdersService) -> None:
    event, tt = await _setup(orders_service, max_quantity=2, tiers={1: 1500, 3: 4000})
    async with orders_service.client("bob") as bob:
        url = f"/v1/events/{event['id']}/registrations"
        resp = await bob.post(url, json={"ticket_type_id": tt["id"], "quantity": 2})
        assert (resp.status_code, resp.json()["code"]) == (422, "quantity_not_allowed")
        resp = await bob.post(url, json={"ticket_type_id": tt["id"], "quantity": 3})
        assert (resp.status_code, resp.json()["code"]) == (409, "inventory_exhausted")
        resp = await bob.post(
            url, json={"ticket_type_id": "00000000-0000-0000-0000-000000000000", "quantity": 1}
        )
        assert resp.status_code == 404


async def test_a_quantity_must_be_a_json_integer(orders_service: OrdersService) -> None:
    """``true`` once bought one seat, ``"5"`` five and ``1.0`` one: each is now refused, and no
    seat is taken."""
    event, tt = await _setup(orders_service, max_quantity=10, tiers={1: 1500, 5: 6000})
    async with orders_service.client("quentin") as buyer:
        url = f"/v1/events/{event['id']}/registrations"
        for quantity in (True, "5", 1.0, 5.0, "1"):
            resp = await buyer.post(url, json={"ticket_type_id": tt["id"], "quantity": quantity})
            assert resp.status_code == 422, (quantity, resp.text)
            assert resp.json()["errors"][0]["loc"] == ["body", "quantity"]
        assert (await buyer.get("/v1/me/orders")).json()["items"] == []
    async with orders_service.client("admin1", "admin") as admin:
        got = (await admin.get(f"/v1/events/{event['id']}")).json()
        assert got["ticket_types"][0]["current_quantity"] == 0


async def test_free_registration_approved_or_pending_and_inventory_taken(
    orders_service: OrdersService,
) -> None:
    for approval, expected in ((False, "APPROVED"), (True, "PENDING")):
        event, tt = await _setup(
            orders_service, max_quantity=1, tiers={1: 0}, require_approval=approval
        )
        async with orders_service.client(f"free-{approval}") as c:
            url = f"/v1/events/{event['id']}/registrations"
            resp = await c.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
            assert resp.status_code == 201, resp.text
            assert (
                resp.json()["order"] is None and resp.json()["registration"]["status"] == expected
            )
            again = await c.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
            assert again.json()["code"] in ("already_registered", "inventory_exhausted")
        async with orders_service.client("late-free") as other:
            resp = await other.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
            assert (resp.status_code, resp.json()["code"]) == (409, "inventory_exhausted")
    await orders_service.check_inventory_invariant()


async def test_idempotency_key_replays_and_refuses_another_body(
    orders_service: OrdersService,
) -> None:
    event, tt = await _setup(orders_service, max_quantity=10)
    async with orders_service.client("carol") as carol:
        url = f"/v1/events/{event['id']}/registrations"
        body = {"ticket_type_id": tt["id"], "quantity": 2}
        first, second = await asyncio.gather(
            carol.post(url, json=body, headers={"Idempotency-Key": "k-1"}),
            carol.post(url, json=body, headers={"Idempotency-Key": "k-1"}),
        )
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert "true" in (
            first.headers.get("idempotent-replayed"),
            second.headers.get("idempotent-replayed"),
        )
        third = await carol.post(
            url, json={**body, "quantity": 1}, headers={"Idempotency-Key": "k-1"}
        )
        assert (third.status_code, third.json()["code"]) == (422, "idempotency_key_reused")
        assert len((await carol.get("/v1/me/orders")).json()["items"]) == 1
    async with orders_service.client("admin1", "admin") as admin:
        assert (await admin.get(f"/v1/events/{event['id']}")).json()["ticket_types"][0][
            "current_quantity"
        ] == 2


async def test_a_malformed_idempotency_key_buys_nothing(orders_service: OrdersService) -> None:
    event, tt = await _setup(orders_service, max_quantity=10)
    async with orders_service.client("ivan") as buyer:
        url = f"/v1/events/{event['id']}/registrations"
        body = {"ticket_type_id": tt["id"], "quantity": 1}
        for headers, code in (
            ([("Idempotency-Key", "")], "bad_idempotency_key"),
            ([("Idempotency-Key", "k" * 256)], "bad_idempotency_key"),
            ([("Idempotency-Key", "k\tk")], "bad_idempotency_key"),
            ([("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")], "idempotency_key_repeated"),
            ([("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-1")], "idempotency_key_repeated"),
        ):
            resp = await buyer.post(url, json=body, headers=headers)
            assert resp.status_code == 400, (headers, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["code"] == code
        assert (await buyer.get("/v1/me/orders")).json()["items"] == []
        ok = await buyer.post(url, json=body, headers={"Idempotency-Key": "k" * 255})
        assert ok.status_code == 201, ok.text
    async with orders_service.client("admin1", "admin") as admin:
        got = (await admin.get(f"/v1/events/{event['id']}")).json()
        assert got["ticket_types"][0]["current_quantity"] == 1


async def test_a_retried_purchase_replays_even_after_the_seats_ran_out(
    orders_service: OrdersService,
) -> None:
    """The buyer who took the last seat and retries (a lost response) gets their 201 again, not
    the sold-out answer meant for others; so does the taker of the last free seat."""
    for tiers in ({1: 1500}, {1: 0}):
        event, tt = await _setup(orders_service, max_quantity=1, tiers=tiers)
        async with orders_service.client(f"last-{tiers[1]}") as buyer:
            url = f"/v1/events/{event['id']}/registrations"
            body = {"ticket_type_id": tt["id"], "quantity": 1}
            first = await buyer.post(url, json=body, headers={"Idempotency-Key": "last"})
            assert first.status_code == 201, first.text
            again = await buyer.post(url, json=body, headers={"Idempotency-Key": "last"})
            assert (again.status_code, again.json()) == (201, first.json())
            assert again.headers["idempotent-replayed"] == "true"
            other = await buyer.post(url, json=body, headers={"Idempotency-Key": "other"})
            assert other.status_code == 409
    await orders_service.check_inventory_invariant()


async def test_a_purchase_is_priced_from_the_catalog_as_it_stands_when_its_seats_are_taken(
    orders_service: OrdersService,
) -> None:
    """The API keeps each ticket type's catalog read between purchases; a change of the ticket
    type, of its event or of its tenant's policies reaches the very next purchase all the same."""
    event, tt = await _setup(orders_service, max_quantity=20, tiers={1: 1500, 2: 2800})
    url = f"/v1/events/{event['id']}/registrations"
    policies_url = f"/v1/tenants/{orders_service.tenant}/cancellation-policies"
    policy = {
        "allow_cancellation": True,
        "include_transaction_fees": False,
        "include_app_fees": False,
        "cutoff_days": 2,
        "cutoff_hours": 12,
    }
    async with (
        orders_service.client("admin1", "admin") as admin,
        orders_service.client("dora") as dora,
    ):

        async def buy(quantity: int) -> dict:
            resp = await dora.post(url, json={"ticket_type_id": tt["id"], "quantity": quantity})
            assert resp.status_code == 201, resp.text
            return resp.json()

        assert (await buy(2))["order"]["total_amount"] == 2800
        resp = await admin.patch(
            f"/v1/ticket-types/{tt['id']}",
            json={"price_tiers": [{"quantity": 1, "total_amount": 1700}]},
        )
        assert resp.status_code == 200, resp.text
        assert (await buy(1))["order"]["total_amount"] == 1700
        resp = await dora.post(url, json={"ticket_type_id": tt["id"], "quantity": 2})
        assert (resp.status_code, resp.json()["code"]) == (422, "quantity_not_allowed")

        resp = await admin.patch(f"/v1/events/{event['id']}", json={"title": "Gala, moved"})
        assert resp.status_code == 200, resp.text
        order = (await buy(1))["order"]
        created = await orders_service.outbox("order.created", order["id"])
        assert created[0]["event_title"] == "Gala, moved"

        before = (await admin.get(policies_url)).json()
        assert (await buy(1))["registration"]["cancellation_policy"] != policy
        try:
            resp = await admin.put(policies_url, json={**before, "paid-regular": policy})
            assert resp.status_code == 200, resp.text
            reg = (await buy(1))["registration"]
            assert (reg["policy_source"], reg["cancellation_policy"]) == ("tenant", policy)
        finally:
            await admin.put(policies_url, json=before)
    await orders_service.check_inventory_invariant()


async def test_a_free_ticket_made_paid_sells_its_holder_an_order_whatever_the_kept_catalog(
    orders_service: OrdersService,
) -> None:
    """A holder of a free registration may buy once the ticket type costs money: the API's kept
    copy of the catalog (still free) must not answer "already registered"."""
    event, tt = await _setup(orders_service, max_quantity=10, tiers={1: 0})
    url = f"/v1/events/{event['id']}/registrations"
    body = {"ticket_type_id": tt["id"], "quantity": 1}
    async with (
        orders_service.client("admin1", "admin") as admin,
        orders_service.client("erin") as erin,
    ):
        first = await erin.post(url, json=body)
        assert first.status_code == 201 and first.json()["order"] is None, first.text
        again = await erin.post(url, json=body)
        assert (again.status_code, again.json()["code"]) == (409, "already_registered")
        resp = await admin.patch(
            f"/v1/ticket-types/{tt['id']}",
            json={"price_tiers": [{"quantity": 1, "total_amount": 900}]},
        )
        assert resp.status_code == 200, resp.text
        paid = await erin.post(url, json=body)
        assert paid.status_code == 201, paid.text
        assert (paid.json()["order"]["status"], paid.json()["order"]["total_amount"]) == (
            "PENDING",
            900,
        )
    await orders_service.check_inventory_invariant()


async def test_order_visibility_buyer_staff_and_strangers(orders_service: OrdersService) -> None:
    event, tt = await _setup(orders_service)
    async with orders_service.client("dave") as dave:
        order = (
            await dave.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 1},
            )
        ).json()["order"]
    async with orders_service.client("admin1", "admin") as admin:
        assert (await admin.get(f"/v1/orders/{order['id']}")).status_code == 200
    async with orders_service.client("eve") as eve:
        assert (await eve.get(f"/v1/orders/{order['id']}")).status_code == 404
        assert (await eve.post(f"/v1/orders/{order['id']}/cancel")).status_code == 404
    async with orders_service.client("m", "member") as member:
        assert (await member.get(f"/v1/orders/{order['id']}")).status_code == 404


async def test_buyer_cancels_pending_order_and_seats_come_back(
    orders_service: OrdersService,
) -> None:
    event, tt = await _setup(orders_service, max_quantity=3)
    async with orders_service.client("frank") as frank:
        order = (
            await frank.post(
                f"/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 3},
            )
        ).json()["order"]
        resp = await frank.post(f"/v1/orders/{order['id']}/cancel")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "CANCELLED"
        assert {r["status"] for r in body["registrations"]} == {"CANCELLED"}
        assert {i["status"] for i in body["invites"]} == {"VOID"}
        again = await frank.post(f"/v1/orders/{order['id']}/cancel")
        assert (again.status_code, again.json()["code"]) == (409, "order_not_pending")
    async with orders_service.client("admin1", "admin") as admin:
        assert (await admin.get(f"/v1/events/{event['id']}")).json()["ticket_types"][0][
            "current_quantity"
        ] == 0
        audit = (await admin.get(f"/v1/orders/{order['id']}/audit")).json()
        actions = [a["action"] for a in audit]
        assert actions[0] == "order.created" and "order.cancelled" in actions
        cancelled = next(a for a in audit if a["action"] == "order.cancelled")
        assert (cancelled["actor"], cancelled["from_status"], cancelled["to_status"]) == (
            "user:frank",
            "PENDING",
            "CANCELLED",
        )
        regs = (await admin.get(f"/v1/events/{event['id']}/registrations")).json()["items"]
        assert regs[0]["order_status"] == "CANCELLED" and regs[0]["cancellation_reason"] == "user"
    await orders_service.check_inventory_invariant()


async def test_one_buyer_cannot_hold_more_unpaid_seats_than_the_ticket_type_allows(
    orders_service: OrdersService,
) -> None:
    """The default limit (10) by sequential orders; a cancelled order frees its share; another
    buyer is not concerned; the limit is the ticket type's own setting."""
    event, tt = await _setup(orders_service, max_quantity=100, tiers={1: 1000, 5: 4500})
    assert tt["max_unpaid_per_buyer"] == 10
    url = f"/v1/events/{event['id']}/registrations"
    async with orders_service.client("hoarder") as hoarder, orders_service.client("other") as other:
        orders = []
        for _ in range(2):
            resp = await hoarder.post(url, json={"ticket_type_id": tt["id"], "quantity": 5})
            assert resp.status_code == 201, resp.text
            orders.append(resp.json()["order"])
        refused = await hoarder.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
        assert (refused.status_code, refused.json()["code"]) == (409, "unpaid_limit_reached")
        assert "10" in refused.json()["detail"]
        assert (
            await other.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
        ).status_code == 201
        # nothing of the refused purchase stayed: 11 seats taken, not 12
        async with orders_service.client("admin1", "admin") as admin:
            got = (await admin.get(f"/v1/events/{event['id']}")).json()
            assert got["ticket_types"][0]["current_quantity"] == 11
            changed = await admin.patch(
                f"/v1/ticket-types/{tt['id']}", json={"max_unpaid_per_buyer": 11}
            )
            assert changed.status_code == 200 and changed.json()["max_unpaid_per_buyer"] == 11
        assert (
            await hoarder.post(url, json={"ticket_type_id": tt["id"], "quantity": 1})
        ).status_code == 201
        cancelled = await hoarder.post(f"/v1/orders/{orders[0]['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert (
            await hoarder.post(url, json={"ticket_type_id": tt["id"], "quantity": 5})
        ).status_code == 201


async def test_concurrent_purchases_of_one_buyer_never_pass_the_unpaid_limit(
    orders_service: OrdersService,
) -> None:
    """Twenty purchases of one seat by one buyer at once against a limit of 4: exactly 4 are
    taken, the rest refused, and the inventory counts exactly those."""
    event, tt = await _setup(
        orders_service, max_quantity=100, tiers={1: 1000}, max_unpaid_per_buyer=4
    )
    url = f"/v1/events/{event['id']}/registrations"
    async with orders_service.client("racer") as racer:
        answers = await asyncio.gather(
            *(racer.post(url, json={"ticket_type_id": tt["id"], "quantity": 1}) for _ in range(20))
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 4 + [409] * 16, [a.text for a in answers if a.status_code >= 500]
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"unpaid_limit_reached"}
    async with orders_service.client("admin1", "admin") as admin:
        got = (await admin.get(f"/v1/events/{event['id']}")).json()
    assert got["ticket_types"][0]["current_quantity"] == 4
    await orders_service.check_inventory_invariant()
    # the count the limit takes is an index look-up (built concurrently by migration 0008)
    assert await orders_service.pool.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = 'orders_unpaid_by_buyer'"
    )


async def test_a_group_order_of_the_largest_tier_is_never_held_back_by_the_unpaid_limit(
    orders_service: OrdersService,
) -> None:
    event, tt = await _setup(orders_service, max_quantity=100, tiers={1: 1000, 20: 18000})
    assert tt["max_unpaid_per_buyer"] == 20  # raised to the largest tier
    async with orders_service.client("group-leader") as leader:
        resp = await leader.post(
            f"/v1/events/{event['id']}/registrations",
            json={"ticket_type_id": tt["id"], "quantity": 20},
        )
        assert resp.status_code == 201, resp.text
    async with orders_service.client("admin1", "admin") as admin:
        too_low = await admin.patch(
            f"/v1/ticket-types/{tt['id']}", json={"max_unpaid_per_buyer": 5}
        )
        assert (too_low.status_code, too_low.json()["code"]) == (
            422,
            "unpaid_limit_below_largest_tier",
        )
        bigger = await admin.patch(
            f"/v1/ticket-types/{tt['id']}",
            json={
                "price_tiers": [
                    {"quantity": 1, "total_amount": 1000},
                    {"quantity": 30, "total_amount": 25000},
                ]
            },
        )
        assert bigger.status_code == 200 and bigger.json()["max_unpaid_per_buyer"] == 30
