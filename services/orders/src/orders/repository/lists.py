"""What organizers list and export: an event's registrations (filtered, paged, counted, copied
out as CSV), a tenant's events and templates, an event's catalog history. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class RegistrationFilter:
    """What an organizer narrows an event's registrations to; None is "any"."""

    status: str | None = None
    order_status: str | None = None
    ticket_type_id: UUID | None = None
    q: str | None = None  # e-mail address or name contains (case-insensitive)

    def where(self, event_id: UUID) -> tuple[str, list[Any]]:
        """``WHERE …`` over ``registrations r LEFT JOIN orders o``, and its arguments."""
        clauses, args = ["r.event_id = $1"], [event_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.status is not None:
            clauses.append(f"r.status = {arg(self.status)}")
        if self.order_status is not None:
            clauses.append(f"o.status = {arg(self.order_status)}")
        if self.ticket_type_id is not None:
            clauses.append(f"r.ticket_type_id = {arg(self.ticket_type_id)}")
        if self.q:
            pattern = "%" + _like_escape(self.q.lower()) + "%"
            clauses.append(f"lower(r.email || ' ' || r.name) LIKE {arg(pattern)}")
        return " AND ".join(clauses), args


async def plan_for_these_values(conn: asyncpg.Connection) -> None:
    """Plan this transaction's statements for the values they are given, never with a generic
    plan: whether a search pattern or a status is selective decides between the trigram index,
    a status index and a scan, and a statement prepared once must not fix that choice."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_REGISTRATION_ROW = """
    r.id, r.order_id, o.status AS order_status, r.status, r.user_id, r.email, r.name,
    r.ticket_type_id, r.cancellation_reason, r.cancellation_reason_note, r.cancelled_at,
    r.refund_id, r.created_at
"""


async def list_event_registrations(
    conn: asyncpg.Connection,
    event_id: UUID,
    filters: RegistrationFilter,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """One page (``limit + 1`` rows, to tell whether another follows) in (created_at, id) order."""
    where, args = filters.where(event_id)
    if after is not None:
        args += list(after)
        where += f" AND (r.created_at, r.id) > (${len(args) - 1}, ${len(args)})"
    args.append(limit + 1)
    found: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {_REGISTRATION_ROW}
        FROM registrations r LEFT JOIN orders o ON o.id = r.order_id
        WHERE {where} ORDER BY r.created_at, r.id LIMIT ${len(args)}
        """,
        *args,
    )
    return found


async def count_event_registrations(
    conn: asyncpg.Connection, event_id: UUID, filters: RegistrationFilter
) -> int:
    where, args = filters.where(event_id)
    join = "LEFT JOIN orders o ON o.id = r.order_id" if filters.order_status else ""
    return int(
        await conn.fetchval(f"SELECT count(*) FROM registrations r {join} WHERE {where}", *args)
    )


async def export_event_registrations(
    conn: asyncpg.Connection,
    event_id: UUID,
    filters: RegistrationFilter,
    output: Callable[[bytes], Awaitable[None]],
) -> None:
    """Every matching registration, in list order, as CSV with a header row: written by
    PostgreSQL itself (COPY), handed to ``output`` chunk by chunk. Times are ISO 8601; text
    cells are guarded against formulas (``csv_cell``, migration 0010)."""
    where, args = filters.where(event_id)
    await conn.copy_from_query(
        f"""
        SELECT r.id AS registration_id, r.status, r.order_id, o.status AS order_status,
               r.ticket_type_id, csv_cell(t.name) AS ticket_type, csv_cell(r.user_id) AS user_id,
               csv_cell(r.email) AS email, csv_cell(r.name) AS name,
               to_json(r.created_at) #>> '{{}}' AS created_at,
               to_json(r.cancelled_at) #>> '{{}}' AS cancelled_at, r.cancellation_reason,
               csv_cell(r.cancellation_reason_note) AS cancellation_reason_note, r.refund_id
        FROM registrations r LEFT JOIN orders o ON o.id = r.order_id
             JOIN ticket_types t ON t.id = r.ticket_type_id
        WHERE {where} ORDER BY r.created_at, r.id
        """,
        *args,
        output=output,
        format="csv",
        header=True,
    )


async def list_tenant_events(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    status: str | None,
    starts_from: datetime | None,
    starts_to: datetime | None,
    limit: int,
    after: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """A page of the tenant's events by start (``limit + 1`` rows)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM events
        WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR starts_at >= $3)
          AND ($4::timestamptz IS NULL OR starts_at < $4)
          AND ($5::timestamptz IS NULL OR (starts_at, id) > ($5, $6::uuid))
        ORDER BY starts_at, id LIMIT $7
        """,
        tenant_id,
        status,
        starts_from,
        starts_to,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return found


async def list_tenant_templates(
    conn: asyncpg.Connection, tenant_id: str, *, limit: int, after: tuple[datetime, UUID] | None
) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM event_templates
        WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
        ORDER BY created_at, id LIMIT $4
        """,
        tenant_id,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return found


async def event_audit(
    conn: asyncpg.Connection,
    event: asyncpg.Record,
    *,
    limit: int,
    after: int | None,
) -> list[asyncpg.Record]:
    """The event's catalog history: the event, its ticket types, its tenant's policies; oldest
    first, ``limit + 1`` rows after audit id ``after``."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, at, actor, action, entity, entity_id, from_status, to_status, details
        FROM audit_log
        WHERE tenant_id = $1 AND entity IN ('event', 'ticket_type', 'tenant')
          AND ((entity = 'event' AND entity_id = $2)
               OR (entity = 'ticket_type' AND entity_id IN (
                     SELECT id::text FROM ticket_types WHERE event_id = $3))
               OR (entity = 'tenant' AND entity_id = $1))
          AND id > $4
        ORDER BY id LIMIT $5
        """,
        event["tenant_id"],
        str(event["id"]),
        event["id"],
        after or 0,
        limit + 1,
    )
    return found
