"""The services run as a role that owns nothing: the owner role migrates and grants; the runtime
role gets only what the grants files list, so row-level security binds it and it cannot switch
the policies off; and a service refuses to start as any role that could."""

from __future__ import annotations

import asyncpg
import pytest

from ticketing_local.testing.plugin import Infra
from ticketing_shared import db

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def runtime_dsn(infra: Infra) -> str:
    return await infra.fresh_database("roles", db.shared_migrations())


async def _refusal(dsn: str) -> str | None:
    pool = await db.create_pool(dsn, min_size=1, max_size=1)
    try:
        await db.check_runtime_role(pool)
    except db.PrivilegedRole as exc:
        return str(exc)
    finally:
        await pool.close()
    return None


async def test_the_runtime_role_is_accepted(runtime_dsn: str) -> None:
    assert await _refusal(runtime_dsn) is None


async def test_the_owner_a_superuser_and_a_bypassrls_role_are_refused(
    infra: Infra, runtime_dsn: str
) -> None:
    assert "owns the database" in (await _refusal(infra.owner_dsn(runtime_dsn)) or "")
    assert "superuser" in (await _refusal(infra.admin_dsn(runtime_dsn)) or "")
    role = db.user_of(runtime_dsn)
    admin = await asyncpg.connect(infra.admin_dsn(runtime_dsn))
    try:
        await admin.execute(f'ALTER ROLE "{role}" BYPASSRLS')
        assert "bypasses row-level security" in (await _refusal(runtime_dsn) or "")
        await admin.execute(f'ALTER ROLE "{role}" NOBYPASSRLS')
        # a member of the owner role may act as the owner: refused as well
        await admin.execute(f'GRANT "{db.owner_role(role)}" TO "{role}"')
        refusal = await _refusal(runtime_dsn) or ""
        assert "owns tables (" in refusal and "outbox" in refusal
    finally:
        await admin.execute(f'REVOKE "{db.owner_role(role)}" FROM "{role}"')
        await admin.execute(f'ALTER ROLE "{role}" NOBYPASSRLS')
        await admin.close()


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE outbox NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE outbox DISABLE ROW LEVEL SECURITY",
        "DROP TABLE inbox",
        "TRUNCATE outbox",
        "DELETE FROM dead_letters",
        "UPDATE dead_letters SET error = ''",
        "CREATE TABLE mine (x int)",
        "CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT * FROM schema_migrations",
        "ANALYZE outbox",  # only a warning for a non-owner: see below
    ],
)
async def test_the_runtime_role_cannot_change_what_binds_it(
    runtime_dsn: str, statement: str
) -> None:
    conn = await asyncpg.connect(runtime_dsn)
    warnings: list[str] = []
    conn.add_log_listener(lambda _c, msg: warnings.append(str(msg)))
    try:
        if statement.startswith("ANALYZE"):
            await conn.execute(statement)
            assert any("only table or database owner" in w for w in warnings), warnings
            return
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_runtime_role_may_do_what_the_services_do(runtime_dsn: str) -> None:
    conn = await asyncpg.connect(runtime_dsn)
    try:
        # the relay refreshes the outbox's statistics through the owner's function
        await conn.execute("SELECT outbox_analyze()")
        async with conn.transaction():
            await db.set_tenant(conn, "t1")
            await conn.execute(
                'INSERT INTO dead_letters (consumer, topic, partition, "offset", error,'
                " attempts, tenant_id) VALUES ('c', 't', 0, 0, 'e', 1, 't1')"
            )
    finally:
        await conn.close()


async def test_another_databases_runtime_role_cannot_connect(
    infra: Infra, runtime_dsn: str
) -> None:
    other = await infra.fresh_database("roles_other", db.shared_migrations())
    database = runtime_dsn.rsplit("/", 1)[1]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(db.role_dsn(infra.pg_admin_dsn, database, db.user_of(other)))
