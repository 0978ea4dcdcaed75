"""Tenants, their policies, event templates, events, ticket types and the inventory. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.db import set_clause

# --------------------------------------------------------------------------------------- tenants


async def ensure_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Tenants come from the identity provider: create our row on first use."""
    await conn.execute(
        "INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", tenant_id
    )


async def get_policies(conn: asyncpg.Connection, tenant_id: str) -> dict[str, Any]:
    value = await conn.fetchval(
        "SELECT cancellation_policies FROM tenants WHERE id = $1", tenant_id
    )
    return dict(value or {})


async def set_policies(conn: asyncpg.Connection, tenant_id: str, policies: dict[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO tenants (id, cancellation_policies) VALUES ($1, $2)
        ON CONFLICT (id) DO UPDATE SET cancellation_policies = EXCLUDED.cancellation_policies, updated_at = now()
        """,
        tenant_id,
        policies,
    )


# ---------------------------------------------------------------------------- templates & events


async def insert_template(
    conn: asyncpg.Connection,
    *,
    template_id: UUID,
    tenant_id: str,
    title: str,
    require_approval: bool,
    currency: str,
    ticket_types: list[dict[str, Any]],
) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO event_templates (id, tenant_id, title, require_approval, currency, ticket_types)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
        """,
        template_id,
        tenant_id,
        title,
        require_approval,
        currency,
        ticket_types,
    )


async def get_template(conn: asyncpg.Connection, template_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM event_templates WHERE id = $1", template_id)


async def insert_event(
    conn: asyncpg.Connection,
    *,
    event_id: UUID,
    tenant_id: str,
    title: str,
    starts_at: datetime,
    require_approval: bool,
    currency: str,
    template_id: UUID | None = None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO events (id, tenant_id, template_id, title, starts_at, require_approval, currency)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
        """,
        event_id,
        tenant_id,
        template_id,
        title,
        starts_at,
        require_approval,
        currency,
    )


async def get_event(
    conn: asyncpg.Connection, event_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM events WHERE id = $1{lock}", event_id)


async def update_event(
    conn: asyncpg.Connection, event_id: UUID, fields: dict[str, Any]
) -> asyncpg.Record:
    assignments, values = set_clause(fields, first=2)
    return await conn.fetchrow(
        f"UPDATE events SET {assignments}updated_at = now() WHERE id = $1 RETURNING *",
        event_id,
        *values,
    )


async def event_holders(conn: asyncpg.Connection, event_id: UUID) -> list[asyncpg.Record]:
    """One active registration per distinct e-mail address of the event: whom to tell of a
    change to it."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT DISTINCT ON (lower(email)) id, order_id, user_id, email, locale
        FROM registrations
        WHERE event_id = $1 AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED') AND email <> ''
        ORDER BY lower(email), created_at
        """,
        event_id,
    )
    return found


async def insert_ticket_type(
    conn: asyncpg.Connection,
    *,
    ticket_type_id: UUID,
    event_id: UUID,
    tenant_id: str,
    name: str,
    max_quantity: int,
    max_unpaid_per_buyer: int,
    price_tiers: list[dict[str, int]],
    organizer_registration: bool,
    use_tenant_cancellation_policy: bool,
    cancellation_policy: dict[str, Any] | None,
) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO ticket_types (id, event_id, tenant_id, name, max_quantity, price_tiers,
                                  organizer_registration, use_tenant_cancellation_policy,
                                  cancellation_policy, max_unpaid_per_buyer)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *
        """,
        ticket_type_id,
        event_id,
        tenant_id,
        name,
        max_quantity,
        price_tiers,
        organizer_registration,
        use_tenant_cancellation_policy,
        cancellation_policy,
        max_unpaid_per_buyer,
    )


async def list_ticket_types(conn: asyncpg.Connection, event_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM ticket_types WHERE event_id = $1 ORDER BY created_at, id", event_id
    )
    return found


async def get_ticket_type(
    conn: asyncpg.Connection, ticket_type_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM ticket_types WHERE id = $1{lock}", ticket_type_id)


async def update_ticket_type(
    conn: asyncpg.Connection, ticket_type_id: UUID, fields: dict[str, Any]
) -> asyncpg.Record | None:
    """Update fields; ``max_quantity`` never below what is sold (None when it would be)."""
    assignments, values = set_clause(fields, first=2)
    guard = (
        f" AND current_quantity <= ${list(fields).index('max_quantity') + 2}"
        if "max_quantity" in fields
        else ""
    )
    return await conn.fetchrow(
        f"UPDATE ticket_types SET {assignments}updated_at = now() WHERE id = $1{guard} RETURNING *",
        ticket_type_id,
        *values,
    )


async def purchase_context(conn: asyncpg.Connection, ticket_type_id: UUID) -> asyncpg.Record | None:
    """Everything a purchase needs to know, read without locks before its one statement; with
    the ticket type's ``catalog_version``, which that statement requires to be still current."""
    return await conn.fetchrow(
        """
        SELECT tt.id, tt.catalog_version, tt.event_id, tt.tenant_id, tt.name, tt.max_quantity,
               tt.current_quantity,
               tt.price_tiers, tt.organizer_registration, tt.use_tenant_cancellation_policy,
               tt.cancellation_policy, e.title AS event_title, e.starts_at, e.require_approval,
               e.currency, e.status AS event_status, coalesce(t.cancellation_policies, '{}'::jsonb) AS tenant_policies
        FROM ticket_types tt
        JOIN events e ON e.id = tt.event_id
        LEFT JOIN tenants t ON t.id = tt.tenant_id
        WHERE tt.id = $1
        """,
        ticket_type_id,
    )


# ------------------------------------------------------------------------------------ inventory


async def release_inventory(conn: asyncpg.Connection, ticket_type_id: UUID, quantity: int) -> None:
    if quantity <= 0:
        return
    await conn.execute(
        "UPDATE ticket_types SET current_quantity = current_quantity - $2, updated_at = now() WHERE id = $1",
        ticket_type_id,
        quantity,
    )


async def take_inventory(conn: asyncpg.Connection, ticket_type_id: UUID, quantity: int) -> bool:
    """One conditional UPDATE: never read-then-write, never oversell."""
    return bool(
        await conn.fetchval(
            """
            UPDATE ticket_types SET current_quantity = current_quantity + $2, updated_at = now()
            WHERE id = $1 AND current_quantity + $2 <= max_quantity RETURNING true
            """,
            ticket_type_id,
            quantity,
        )
    )


async def event_title(conn: asyncpg.Connection, event_id: UUID) -> str:
    """An event's title ("" for none)."""
    return str(await conn.fetchval("SELECT title FROM events WHERE id = $1", event_id) or "")


async def scope_to(conn: asyncpg.Connection, kind: str, resource_id: str) -> None:
    """Narrow the transaction's tenant scope to the tenant of one resource (row-level
    security), found by the database function of the same name."""
    await conn.fetchval("SELECT scope_to($1, $2)", kind, resource_id)


async def scope_to_user(conn: asyncpg.Connection, user: str) -> None:
    """Narrow the transaction's tenant scope to the tenants of one user's own rows."""
    await conn.fetchval("SELECT scope_to_user($1)", user)
