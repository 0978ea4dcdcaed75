"""Several workers expiring at once never expire an order twice nor release its seats twice."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

import pytest

from orders import repository as repo
from orders.schemas import RegistrationCreate
from orders.service import lifecycle, purchase
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.auth import Principal
from ticketing_shared.invite_links import InviteLinks

from .conftest import seed_ticket_type

LINKS = InviteLinks(secrets.token_bytes(32))  # a key made at run time

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TENANT = "t-expiry"


async def test_four_concurrent_expiry_runs_release_each_order_once(infra: Infra) -> None:
    dsn = await infra.fresh_database(
        "orders_expiry", db.shared_migrations() + db.dir_migrations("orders", MIGRATIONS)
    )
    pool = await db.create_pool(dsn, min_size=4, max_size=8)
    peek = await db.create_pool(infra.admin_dsn(dsn), min_size=1, max_size=2)
    try:
        event, tt = await seed_ticket_type(pool, TENANT, max_quantity=300, tiers={2: 100})
        kept = purchase.PurchaseCatalog()
        for i in range(120):
            async with pool.acquire() as conn:
                await purchase.register(
                    conn,
                    Principal(sub=f"b{i}"),
                    event["id"],
                    RegistrationCreate(ticket_type_id=tt["id"], quantity=2),
                    catalog=kept,
                    links=LINKS,
                    order_ttl=timedelta(minutes=5),
                    max_quantity_per_order=10,
                )
        await peek.execute("UPDATE orders SET expires_at = now() - interval '1 second'")

        async def expire_until_done() -> int:
            total = 0
            while True:
                async with db.transaction(pool, tenant_id=db.ALL_TENANTS) as conn:
                    n = await lifecycle.expire_due_orders(conn, limit=7)
                if n == 0:
                    return total
                total += n

        counts = await asyncio.gather(*(expire_until_done() for _ in range(4)))
        assert sum(counts) == 120
        assert sum(1 for c in counts if c > 0) >= 2  # the work really was shared
        assert (
            await peek.fetchval("SELECT count(*) FROM outbox WHERE ce_type = 'order.expired'")
            == 120
        )
        assert (
            await peek.fetchval("SELECT current_quantity FROM ticket_types WHERE id = $1", tt["id"])
            == 0
        )
        async with peek.acquire() as conn:
            for row in await repo.inventory_report(conn):
                assert row["current_quantity"] == row["expected"]
        per_order = await peek.fetch(
            "SELECT ce_subject, count(*) FROM outbox WHERE ce_type = 'order.expired' GROUP BY 1 HAVING count(*) > 1"
        )
        assert per_order == []
    finally:
        await pool.close()
        await peek.close()
