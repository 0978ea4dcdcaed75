"""The catalog copy a purchase is priced from: used while current, never once the catalog moved."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import pytest

from orders.schemas import RegistrationCreate, TicketTypeUpdate
from orders.service import catalog, purchase
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.auth import Principal
from ticketing_shared.invite_links import InviteLinks

from .conftest import seed_ticket_type

LINKS = InviteLinks(secrets.token_bytes(32))  # a key made at run time

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TENANT = "t-kept"


async def test_a_kept_copy_prices_purchases_only_while_its_catalog_version_is_current(
    infra: Infra,
) -> None:
    dsn = await infra.fresh_database(
        "orders_kept_catalog", db.shared_migrations() + db.dir_migrations("orders", MIGRATIONS)
    )
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    admin = Principal(sub="admin", roles={TENANT: "admin"})
    try:
        event, tt = await seed_ticket_type(pool, TENANT, max_quantity=10, tiers={1: 1500})
        kept = purchase.PurchaseCatalog()

        async def buy(buyer: str) -> int:
            async with pool.acquire() as conn:
                _, body, _ = await purchase.register(
                    conn,
                    Principal(sub=buyer),
                    event["id"],
                    RegistrationCreate(ticket_type_id=tt["id"], quantity=1),
                    catalog=kept,
                    links=LINKS,
                    order_ttl=timedelta(minutes=5),
                    max_quantity_per_order=10,
                )
            return int(body["order"]["total_amount"])

        assert await buy("b1") == 1500
        # The copy is what prices the next purchase, as long as the catalog has not moved: a
        # doctored copy (same version, another price) shows it was used, with no read.
        copy = dict(kept.kept(tt["id"]) or {})
        kept._kept[tt["id"]] = {**copy, "price_tiers": [{"quantity": 1, "total_amount": 1234}]}  # type: ignore[assignment]
        assert await buy("b2") == 1234
        # Any catalog change moves the version: the statement refuses the copy (TK002, nothing
        # written) and the purchase is priced again from a fresh read.
        async with db.transaction(pool, tenant_id=TENANT) as conn:
            await catalog.update_ticket_type(conn, admin, tt["id"], TicketTypeUpdate(name="t2"))
        assert await buy("b3") == 1500
        fresh = kept.kept(tt["id"])
        assert fresh is not None and fresh["catalog_version"] == copy["catalog_version"] + 1
        async with pool.acquire() as conn:
            sold = await conn.fetchval(
                "SELECT current_quantity FROM ticket_types WHERE id = $1", tt["id"]
            )
            # one definition of each (functions.sql), taking one structured argument
            arities = await conn.fetch(
                "SELECT proname, pronargs FROM pg_proc WHERE proname IN"
                " ('purchase_seats', 'register_free_seat') ORDER BY 1, 2"
            )
        assert sold == 3
        assert [(r["proname"], r["pronargs"]) for r in arities] == [
            ("purchase_seats", 1),
            ("register_free_seat", 1),
        ]
    finally:
        await pool.close()
