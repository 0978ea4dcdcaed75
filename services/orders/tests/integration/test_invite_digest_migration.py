"""Tokens stored in clear before invite tokens were derived are replaced by their digests when
migration 0006 runs, on every tenant's rows."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from pathlib import Path

import asyncpg
import pytest

from ticketing_local.testing.plugin import Infra
from ticketing_shared import db

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def test_migration_0006_keeps_only_digests_of_the_tokens_stored_before(infra: Infra) -> None:
    everything = db.shared_migrations() + db.dir_migrations("orders", MIGRATIONS)
    before = [m for m in everything if not (m.track == "orders" and m.version >= 6)]
    dsn = await infra.fresh_database("orders_digests", before)
    tokens = {f"t-{n}": secrets.token_urlsafe(24) for n in range(3)}
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        # just the invites (their orders and seats do not matter here)
        await admin.execute("SET session_replication_role = replica")
        for tenant, token in tokens.items():
            await admin.execute(
                "INSERT INTO invites (id, order_id, seat_id, tenant_id, token, status)"
                " VALUES ($1, $2, $3, $4, $5, 'OPEN')",
                uuid.uuid4(),
                uuid.uuid4(),
                uuid.uuid4(),
                tenant,
                token,
            )
        await db.migrate(infra.owner_dsn(dsn), everything, runtime_role=db.user_of(dsn))
        stored = dict(await admin.fetch("SELECT tenant_id, token FROM invites"))
    finally:
        await admin.close()
    assert stored == {t: hashlib.sha256(tok.encode()).hexdigest() for t, tok in tokens.items()}
