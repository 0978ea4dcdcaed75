"""What is past its retention is pruned, every tenant's, by the role the worker runs as; what
is not stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.retention import Rule, prune, standard_rules
from ticketing_shared.settings import ServiceSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_old_inbox_claims_and_idempotency_keys_go_recent_ones_stay(infra: Infra) -> None:
    dsn = await infra.fresh_database("retention", db.shared_migrations())
    now = datetime.now(UTC)
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        for n, (age, tenant) in enumerate(
            [(timedelta(days=40), "t1"), (timedelta(days=31), "t2"), (timedelta(days=2), "t1")]
        ):
            await admin.execute(
                "INSERT INTO inbox (consumer, event_id, ce_type, ce_subject, topic, partition,"
                " \"offset\", processed_at, tenant_id) VALUES ('c', $1, 't', 's', 'x', 0, $2, $3, $4)",
                uuid.uuid4(),
                n,
                now - age,
                tenant,
            )
        for key, age in (("old", timedelta(hours=50)), ("new", timedelta(hours=1))):
            await admin.execute(
                "INSERT INTO idempotency_keys (scope, key, request_hash, created_at, tenant_id)"
                " VALUES ('u', $1, 'h', $2, 't1')",
                key,
                now - age,
            )
        settings = ServiceSettings(inbox_retention_days=30, idempotency_key_retention_hours=48)
        pool = await db.create_pool(dsn, min_size=1, max_size=2, all_tenants=True)
        try:
            done = await prune(pool, standard_rules(settings), batch=1)  # one row per delete
        finally:
            await pool.close()
        assert done == {"inbox": 2, "idempotency_keys": 1}
        assert await admin.fetchval("SELECT count(*) FROM inbox") == 1
        assert await admin.fetchval("SELECT key FROM idempotency_keys") == "new"
    finally:
        await admin.close()


async def test_without_the_all_tenants_scope_nothing_is_pruned(infra: Infra) -> None:
    dsn = await infra.fresh_database("retention_scoped", db.shared_migrations())
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        await admin.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at, tenant_id)"
            " VALUES ('u', 'k', 'h', now() - interval '9 days', 't1')"
        )
        pool = await db.create_pool(dsn, min_size=1, max_size=1)
        try:
            rule = Rule("idempotency_keys", "created_at", timedelta(days=1))
            assert await prune(pool, [rule]) == {"idempotency_keys": 0}
        finally:
            await pool.close()
    finally:
        await admin.close()


async def test_rules_refuse_what_is_not_a_plain_name_or_a_positive_age() -> None:
    with pytest.raises(ValueError):
        Rule("inbox; DROP TABLE inbox", "processed_at", timedelta(days=1))
    with pytest.raises(ValueError):
        Rule("inbox", "processed_at", timedelta(0))
