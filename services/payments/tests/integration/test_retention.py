"""Payments prunes the provider notifications it recorded once past their retention."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from payments.settings import Settings
from payments.worker import retention_rules
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.retention import prune

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def test_notifications_older_than_their_retention_are_pruned(infra: Infra) -> None:
    dsn = await infra.fresh_database(
        "payments_retention", db.shared_migrations() + db.dir_migrations("payments", MIGRATIONS)
    )
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        for nid, days in (("old", 91), ("kept", 10)):
            await admin.execute(
                "INSERT INTO provider_notifications (provider, notification_id, event_type,"
                " reference, payload, outcome, received_at, tenant_id)"
                " VALUES ('wechatpay', $1, 'e', 'r', '{}', 'o', now() - make_interval(days => $2), 't1')",
                nid,
                days,
            )
        pool = await db.create_pool(dsn, min_size=1, max_size=1, all_tenants=True)
        try:
            rules = retention_rules(Settings(notification_retention_days=90))
            assert await prune(pool, rules) == {"provider_notifications": 1}
        finally:
            await pool.close()
        assert await admin.fetchval("SELECT notification_id FROM provider_notifications") == "kept"
    finally:
        await admin.close()
