"""Row-level security on the orders database: a transaction sees and writes only the rows of the
tenants it is scoped to, whatever the application code checked (or forgot to check)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from orders import repository as repo
from orders.dependencies import Database
from ticketing_shared import db
from ticketing_shared.auth import Principal

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")

TABLES = (
    "orders",
    "seats",
    "registrations",
    "invites",
    "audit_log",
    "event_templates",
    "refunds_in_flight",
    "applied_refunds",
)


async def _order(svc: OrdersService, tenant: str, buyer: str) -> dict:
    async with svc.client("owner-" + tenant, "owner", tenant=tenant) as owner:
        resp = await owner.post(
            f"/v1/tenants/{tenant}/event-templates",
            json={"title": "T", "currency": "EUR", "ticket_types": []},
        )
        assert resp.status_code == 201, resp.text
        resp = await owner.post(
            f"/v1/tenants/{tenant}/events",
            json={"title": "Gala", "starts_at": "2030-01-01T18:00:00Z", "currency": "EUR"},
        )
        assert resp.status_code == 201, resp.text
        event = resp.json()
        tt = await svc.ticket_type(owner, event["id"])
    async with svc.client(buyer) as c:
        resp = await c.post(
            f"/v1/events/{event['id']}/registrations",
            json={"ticket_type_id": tt["id"], "quantity": 2},
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["order"]


async def test_a_transaction_sees_only_its_tenants_rows(orders_service: OrdersService) -> None:
    svc = orders_service
    a, b = f"rls-a-{uuid.uuid4().hex[:6]}", f"rls-b-{uuid.uuid4().hex[:6]}"
    order_a = await _order(svc, a, "buyer-a")
    order_b = await _order(svc, b, "buyer-b")
    order_id = uuid.UUID(order_a["id"])

    conn = await asyncpg.connect(svc.role_dsn)  # the role the service connects as
    try:
        # no scope at all: nothing tenant-scoped is visible
        for table in TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # another tenant's scope: tenant A's order, seats, registrations, audit trail are not there
        async with conn.transaction():
            await db.set_tenant(conn, b)
            assert await repo.get_order(conn, order_id) is None
            assert (
                await conn.fetchval("SELECT count(*) FROM seats WHERE order_id = $1", order_id) == 0
            )
            assert (
                await conn.fetchval("SELECT count(*) FROM audit_log WHERE order_id = $1", order_id)
                == 0
            )
            event_a = uuid.UUID(order_a["event_id"])
            # the organizer list, had the route forgotten its staff check
            everything = repo.RegistrationFilter()
            assert (
                await repo.list_event_registrations(
                    conn, event_a, everything, limit=100, after=None
                )
                == []
            )
            assert await repo.count_event_registrations(conn, event_a, everything) == 0
            # writes cannot reach tenant A's rows either
            assert (
                await conn.execute("UPDATE orders SET status = 'CANCELLED' WHERE id = $1", order_id)
                == "UPDATE 0"
            )
            assert (
                await conn.execute(
                    "UPDATE ticket_types SET current_quantity = 0 WHERE event_id = $1", event_a
                )
                == "UPDATE 0"
            )
            # tenant B still sees its own
            assert await repo.get_order(conn, uuid.UUID(order_b["id"])) is not None
        # nor can a transaction scoped to B write a row claiming tenant A
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await db.set_tenant(conn, b)
                await conn.execute(
                    "INSERT INTO audit_log (tenant_id, entity, entity_id, actor, action) "
                    "VALUES ($1, 'order', 'x', 'test', 'forged')",
                    a,
                )
        # tenant A's scope sees the order; '*' (the expiry job) sees both tenants
        async with conn.transaction():
            await db.set_tenant(conn, a)
            assert (await repo.get_order(conn, order_id))["tenant_id"] == a
        async with conn.transaction():
            await db.set_tenant(conn, db.ALL_TENANTS)
            n = await conn.fetchval(
                "SELECT count(DISTINCT tenant_id) FROM orders WHERE tenant_id IN ($1, $2)", a, b
            )
            assert n == 2
    finally:
        await conn.close()


async def test_request_scopes_follow_the_caller_and_the_resource(
    orders_service: OrdersService,
) -> None:
    """The scopes the API opens: a staff transaction sees the caller's tenants only; a buyer's
    transaction on one order sees that order's tenant only; "my orders" sees where they bought."""
    svc = orders_service
    a, b = f"rls-a-{uuid.uuid4().hex[:6]}", f"rls-b-{uuid.uuid4().hex[:6]}"
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    order_a = await _order(svc, a, buyer)
    order_b = await _order(svc, b, buyer)
    pool = await db.create_pool(svc.role_dsn, min_size=1, max_size=2)
    database = Database(pool)
    try:
        staff_of_b = Principal(sub="admin-b", roles={b: "admin"})
        async with database.read(tenants=staff_of_b.tenant_scope()) as conn:
            assert await repo.get_order(conn, uuid.UUID(order_a["id"])) is None
            assert await repo.get_order(conn, uuid.UUID(order_b["id"])) is not None
        async with database.read(of=("order", uuid.UUID(order_a["id"]))) as conn:
            assert await repo.get_order(conn, uuid.UUID(order_a["id"])) is not None
            assert await repo.get_order(conn, uuid.UUID(order_b["id"])) is None
        async with database.read(of=("order", uuid.uuid4())) as conn:  # no such order
            assert await conn.fetchval("SELECT count(*) FROM orders") == 0
        async with database.read(user=buyer) as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT tenant_id FROM orders WHERE buyer_id = $1", buyer
            )
            assert {r["tenant_id"] for r in rows} == {a, b}
        async with database.read(user="nobody") as conn:
            assert await conn.fetchval("SELECT count(*) FROM orders") == 0
        with pytest.raises(TypeError):
            async with database.read():
                pass
    finally:
        await pool.close()
