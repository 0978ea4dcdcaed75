"""Every table of every service that holds a tenant's rows is bound by a forced row-level security
policy, and the role the service runs as can neither switch it off nor escape it.

Read from each database's own catalog after all migrations: a table added later with a
``tenant_id`` column and no forced policy fails here, whoever forgets it."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from ticketing_local.testing.plugin import Infra
from ticketing_shared import db

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("orders", "payments", "refunds", "notifications")

# What must be there, at least (the catalog query below finds every other table with a tenant)
EXPECTED = {
    "orders": {"orders", "seats", "registrations", "invites", "audit_log", "events"},
    "payments": {"orders_view", "payments", "provider_refunds", "provider_notifications"},
    "refunds": {"orders_view", "refunds", "refund_items", "refund_audit"},
    "notifications": {"deliveries"},
}
SHARED = {"outbox", "inbox", "idempotency_keys", "dead_letters"}


@pytest.fixture(scope="module", params=SERVICES)
async def service_db(request: pytest.FixtureRequest, infra: Infra) -> tuple[str, str]:
    svc = request.param
    dsn = await infra.fresh_database(
        f"rls_{svc}",
        db.shared_migrations() + db.dir_migrations(svc, ROOT / "services" / svc / "migrations"),
    )
    return svc, dsn


async def test_every_table_with_a_tenant_has_a_forced_policy(
    infra: Infra, service_db: tuple[str, str]
) -> None:
    svc, dsn = service_db
    conn = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        rows = await conn.fetch(
            """
            SELECT c.relname AS name, c.relrowsecurity AS enabled,
                   c.relforcerowsecurity AS forced,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                               AND NOT a.attisdropped
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            """
        )
    finally:
        await conn.close()
    tables = {r["name"]: r for r in rows}
    assert EXPECTED[svc] | SHARED <= set(tables), "tables that lost their tenant column"
    unbound = sorted(
        name
        for name, r in tables.items()
        if not (r["enabled"] and r["forced"] and r["policies"] > 0)
    )
    assert unbound == [], f"{svc}: tables with a tenant but no forced row-level security"


async def test_the_runtime_role_sees_no_row_without_a_scope(
    infra: Infra, service_db: tuple[str, str]
) -> None:
    """Rows of two tenants are there (written by the owner); the service's role sees none of them
    unscoped, one tenant's under that tenant's scope, and cannot write a row of another."""
    _, dsn = service_db
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        for tenant in ("t-a", "t-b"):
            await admin.execute(
                'INSERT INTO dead_letters (consumer, topic, partition, "offset", error, attempts,'
                " tenant_id) VALUES ('c', 'topic', 0, 0, 'e', 1, $1)",
                tenant,
            )
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
        async with conn.transaction():
            await db.set_tenant(conn, "t-a")
            assert await conn.fetch("SELECT tenant_id FROM dead_letters") == [("t-a",)]
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await conn.execute(
                    'INSERT INTO dead_letters (consumer, topic, partition, "offset", error,'
                    " attempts, tenant_id) VALUES ('c', 'topic', 0, 0, 'e', 1, 't-b')"
                )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE dead_letters NO FORCE ROW LEVEL SECURITY")
    finally:
        await conn.close()


async def test_the_service_refuses_to_run_as_anything_but_its_runtime_role(
    infra: Infra, service_db: tuple[str, str]
) -> None:
    _, dsn = service_db
    for refused in (infra.admin_dsn(dsn), infra.owner_dsn(dsn)):
        pool = await db.create_pool(refused, min_size=1, max_size=1)
        try:
            with pytest.raises(db.PrivilegedRole):
                await db.check_runtime_role(pool)
        finally:
            await pool.close()
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        await db.check_runtime_role(pool)
    finally:
        await pool.close()
