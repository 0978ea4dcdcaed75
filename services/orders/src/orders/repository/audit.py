"""The audit trail: appended in the transaction of each change. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.writes import Table

from ..domain import AuditEntry

# the audit trail's table: the columns an AuditEntry fills, by name
AUDIT = Table(
    "audit_log",
    {
        "tenant_id": "text",
        "order_id": "uuid",
        "entity": "text",
        "entity_id": "text",
        "actor": "text",
        "action": "text",
        "from_status": "text",
        "to_status": "text",
        "details": "jsonb",
    },
)

# ------------------------------------------------------------------------------------------ audit


async def audit(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    order_id: UUID | None,
    entity: str,
    entity_id: UUID | str,
    actor: str,
    action: str,
    from_status: str | None = None,
    to_status: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    entry = AuditEntry(
        tenant_id,
        order_id,
        entity,
        str(entity_id),
        actor,
        action,
        from_status,
        to_status,
        details or {},
    )
    await audit_many(conn, [entry])


async def audit_many(conn: asyncpg.Connection, entries: list[AuditEntry]) -> None:
    """Append ``entries`` to the audit trail, in one statement."""
    if entries:
        await conn.execute(AUDIT.insert("$1::jsonb"), entries)


async def order_audit(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM audit_log WHERE order_id = $1 ORDER BY id", order_id
    )
    return found
