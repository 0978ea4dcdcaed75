"""The audit trail: appended in the transaction of each change. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ..domain import AuditEntry

# an audit row's columns: AuditEntry's fields, in the statements' order
AUDIT_FIELDS = (
    "tenant_id",
    "order_id",
    "entity",
    "entity_id",
    "actor",
    "action",
    "from_status",
    "to_status",
    "details",
)
AUDIT_COLUMNS = ", ".join(AUDIT_FIELDS)


def audit_values(entry: AuditEntry) -> tuple[Any, ...]:
    """An entry's values in ``AUDIT_COLUMNS`` order (the only place that order is spelled)."""
    return tuple(getattr(entry, name) for name in AUDIT_FIELDS)


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
    await conn.execute(
        f"""
        INSERT INTO audit_log ({AUDIT_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
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


async def audit_many(conn: asyncpg.Connection, entries: list[AuditEntry]) -> None:
    """Append ``entries`` to the audit trail, in one round trip."""
    rows = [audit_values(e) for e in entries]
    if rows:
        await conn.executemany(
            f"""
            INSERT INTO audit_log ({AUDIT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            rows,
        )


async def order_audit(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM audit_log WHERE order_id = $1 ORDER BY id", order_id
    )
    return found
