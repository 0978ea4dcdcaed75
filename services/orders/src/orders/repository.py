"""All SQL of the orders service. ``$n`` parameters only; rows come back as records/dicts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.db import set_clause
from ticketing_shared.outbox import OUTBOX_COLUMNS

from .errors import UnpaidLimitReached

# an audit row's columns, in the order of the tuples audit_many() and friends take
_AUDIT_COLUMNS = (
    "tenant_id, order_id, entity, entity_id, actor, action, from_status, to_status, details"
)

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


# ------------------------------------------------------------------------------------- purchase


def _audit_arrays(audit: list[tuple[str, str, str, str | None, dict[str, Any]]]) -> list[Any]:
    """(entity, entity_id, action, to_status, details) rows → the column arrays ``unnest`` takes."""
    return [[a[i] for a in audit] for i in range(5)]


# SQLSTATEs raised by purchase_seats()/register_free_seat() (migration 0005), nothing written
SOLD_OUT = "TK001"  # the seats ran out
CATALOG_MOVED = "TK002"  # the catalog_version passed is no longer the ticket type's
UNPAID_LIMIT = "TK003"  # the buyer would hold more unpaid seats than the ticket type allows


class CatalogMoved(Exception):
    """The purchase was priced from a catalog read that is no longer current: read it again."""


async def _sold_out_is_false(call: Any) -> bool:
    try:
        await call
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == SOLD_OUT:
            return False
        if exc.sqlstate == CATALOG_MOVED:
            raise CatalogMoved(str(exc)) from exc
        if exc.sqlstate == UNPAID_LIMIT:
            raise UnpaidLimitReached(f"{exc}: pay or cancel an unpaid order first") from exc
        raise
    return True


async def create_paid_order(
    conn: asyncpg.Connection,
    *,
    order: dict[str, Any],
    seat_ids: list[UUID],
    registration: dict[str, Any],
    invites: list[tuple[UUID, UUID, str]],
    outbox_row: tuple[Any, ...],
    actor: str,
    audit: list[tuple[str, str, str, str | None, dict[str, Any]]],
    idempotency: tuple[str, str, str, int, Any] | None,
    catalog_version: int,
) -> bool:
    """Write everything a purchase writes and take its seats: ``purchase_seats()``, one statement
    that is its own transaction (see migrations 0002 and 0005). False (nothing written) when sold
    out; ``CatalogMoved`` when ``catalog_version`` is no longer current; a reused
    Idempotency-Key raises ``UniqueViolationError`` on ``idempotency_keys_pkey``."""
    idem = idempotency or (None, None, None, None, None)
    return await _sold_out_is_false(
        conn.execute(
            "SELECT purchase_seats($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
            "$17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, "
            "$35, $36, $37, $38, $39, $40, $41, $42)",
            order["id"],
            order["tenant_id"],
            order["event_id"],
            order["ticket_type_id"],
            order["quantity"],
            order["buyer_id"],
            order["buyer_email"],
            order["buyer_locale"],
            order["total_amount"],
            order["currency"],
            order["expires_at"],
            order["created_at"],
            seat_ids,
            registration["id"],
            registration["cancellation_policy"],
            registration["policy_source"],
            [i[0] for i in invites],
            [i[1] for i in invites],
            [i[2] for i in invites],
            *outbox_row,
            actor,
            *_audit_arrays(audit),
            *idem,
            catalog_version,
            registration["name"],
        )
    )


async def create_free_registration(
    conn: asyncpg.Connection,
    *,
    registration: dict[str, Any],
    actor: str,
    audit: list[tuple[str, str, str, str | None, dict[str, Any]]],
    idempotency: tuple[str, str, str, int, Any] | None,
    catalog_version: int,
) -> bool:
    """Take one seat and write the registration, its audit and idempotency key:
    ``register_free_seat()``, one self-committing statement. False when sold out;
    ``CatalogMoved`` as for ``create_paid_order``;
    ``UniqueViolationError`` for a second live free registration of the same person
    (``registrations_one_free_per_user``) or a reused key (``idempotency_keys_pkey``)."""
    idem = idempotency or (None, None, None, None, None)
    return await _sold_out_is_false(
        conn.execute(
            "SELECT register_free_seat($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
            "$16, $17, $18, $19, $20, $21, $22, $23, $24)",
            registration["id"],
            registration["tenant_id"],
            registration["event_id"],
            registration["ticket_type_id"],
            registration["user_id"],
            registration["email"],
            registration["locale"],
            registration["status"],
            registration["cancellation_policy"],
            registration["policy_source"],
            registration["created_at"],
            actor,
            *_audit_arrays(audit),
            *idem,
            catalog_version,
            registration["name"],
        )
    )


# ---------------------------------------------------------------------------------------- orders


async def get_order(
    conn: asyncpg.Connection, order_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM orders WHERE id = $1{lock}", order_id)


async def order_details(
    conn: asyncpg.Connection, order_id: UUID
) -> dict[str, list[asyncpg.Record]]:
    seats = await conn.fetch(
        "SELECT id, status, position FROM seats WHERE order_id = $1 ORDER BY position", order_id
    )
    regs = await conn.fetch(
        "SELECT id, status, user_id, seat_id FROM registrations WHERE order_id = $1 ORDER BY created_at, id",
        order_id,
    )
    invites = await conn.fetch(
        """
        SELECT i.id, i.status, i.seat_id, i.redeemed_by, i.return_requested_at
        FROM invites i JOIN seats s ON s.id = i.seat_id
        WHERE i.order_id = $1 ORDER BY s.position
        """,
        order_id,
    )
    return {"seats": seats, "registrations": regs, "invites": invites}


async def list_buyer_orders(
    conn: asyncpg.Connection,
    buyer_id: str,
    event_id: UUID | None,
    *,
    limit: int,
    before: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """A page of the buyer's orders, newest first (``limit + 1`` rows)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM orders WHERE buyer_id = $1 AND ($2::uuid IS NULL OR event_id = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
        ORDER BY created_at DESC, id DESC LIMIT $5
        """,
        buyer_id,
        event_id,
        before[0] if before else None,
        before[1] if before else None,
        limit + 1,
    )
    return found


async def set_order_status(
    conn: asyncpg.Connection,
    order_id: UUID,
    *,
    expected: str,
    status: str,
    extra: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    """Guarded transition: None when the order is no longer in ``expected`` (handle explicitly)."""
    assignments, values = set_clause(extra or {}, first=4)
    return await conn.fetchrow(
        f"""
        UPDATE orders SET {assignments}status = $3, updated_at = now()
        WHERE id = $1 AND status = $2 RETURNING *
        """,
        order_id,
        expected,
        status,
        *values,
    )


async def set_order_status_audited(
    conn: asyncpg.Connection,
    order_id: UUID,
    *,
    expected: str,
    status: str,
    extra: dict[str, Any] | None = None,
    audit: list[tuple[Any, ...]],
    outbox_row: tuple[Any, ...],
) -> bool:
    """``set_order_status()``, its audit rows (as for ``audit_many()``) and the event announcing it
    (``outbox_values()``), in ONE statement: one round trip, not three. Nothing is written unless
    the order was still in ``expected``; False then."""
    assignments, values = set_clause(extra or {}, first=23)
    cols = list(zip(*audit, strict=True)) if audit else [()] * 9
    return bool(
        await conn.fetchval(
            f"""
            WITH o AS (
                UPDATE orders SET {assignments}status = $3, updated_at = now()
                WHERE id = $1 AND status = $2 RETURNING id
            ), a AS (
                INSERT INTO audit_log ({_AUDIT_COLUMNS})
                SELECT t.tenant_id, t.order_id, t.entity, t.entity_id, t.actor, t.action,
                       t.from_status, t.to_status, t.details::jsonb
                FROM unnest($4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[],
                            $9::text[], $10::text[], $11::text[], $12::text[])
                     AS t(tenant_id, order_id, entity, entity_id, actor, action, from_status,
                          to_status, details)
                WHERE EXISTS (SELECT 1 FROM o)
            ), e AS (
                INSERT INTO outbox ({OUTBOX_COLUMNS})
                SELECT $13, $14, $15, $16, $17, $18, $19, $20, $21, $22
                WHERE EXISTS (SELECT 1 FROM o)
            )
            SELECT EXISTS (SELECT 1 FROM o)
            """,
            order_id,
            expected,
            status,
            *[list(c) for c in cols[:8]],
            [json.dumps(d) for d in cols[8]],
            *outbox_row,
            *values,
        )
    )


async def due_expired_orders(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Lock PENDING orders past their expiry; other workers skip them (``SKIP LOCKED``)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM orders WHERE status = 'PENDING' AND expires_at <= now()
        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return found


# ----------------------------------------------------------------------------- seats & invites


async def void_order_seats(
    conn: asyncpg.Connection,
    order_id: UUID,
    ticket_type_id: UUID,
    *,
    seat_ids: list[UUID] | None,
    reason: str,
    note: str | None = None,
    refund_id: UUID | None = None,
    buyer_id: str | None = None,
) -> tuple[list[UUID], list[UUID], list[UUID], int, list[dict[str, str]]]:
    """Void the order's active seats (all, or those listed), and in the same statement cancel
    their registrations (naming the refund that cancelled them), void their invites and release
    them: one round trip, not four.

    Returns the ids of the seats voided, registrations cancelled and invites voided, how many
    of the order's seats are still active, and the guests (registrants other than ``buyer_id``)
    whose registrations were cancelled: ``{id, user_id, email, locale}``."""
    row = await conn.fetchrow(
        """
        WITH v AS (
            UPDATE seats SET status = 'VOID', voided_at = now()
            WHERE order_id = $1 AND status = 'ACTIVE'
              AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))
            RETURNING id
        ), r AS (
            UPDATE registrations
            SET status = 'CANCELLED', cancelled_at = now(), cancellation_reason = $3,
                cancellation_reason_note = $4, refund_id = $6, cancellation_requested_at = NULL,
                updated_at = now()
            WHERE order_id = $1 AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED')
              AND ($2::uuid[] IS NULL OR seat_id IN (SELECT id FROM v))
            RETURNING id, user_id, email, locale
        ), i AS (
            UPDATE invites SET status = 'VOID', updated_at = now()
            WHERE order_id = $1 AND status IN ('LOCKED', 'OPEN')
              AND ($2::uuid[] IS NULL OR seat_id IN (SELECT id FROM v))
            RETURNING id
        ), t AS (
            UPDATE ticket_types
            SET current_quantity = current_quantity - (SELECT count(*) FROM v), updated_at = now()
            WHERE id = $5 AND EXISTS (SELECT 1 FROM v)
        )
        SELECT ARRAY(SELECT id FROM v) AS seats, ARRAY(SELECT id FROM r) AS registrations,
               ARRAY(SELECT id FROM i) AS invites,
               (SELECT count(*) FROM seats WHERE order_id = $1 AND status = 'ACTIVE')
                 - (SELECT count(*) FROM v) AS remaining,
               (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'user_id', user_id,
                                                             'email', email, 'locale', locale)),
                                '[]'::jsonb)
                FROM r WHERE user_id <> $7) AS guests
        """,
        order_id,
        seat_ids,
        reason,
        note,
        ticket_type_id,
        refund_id,
        buyer_id,
    )
    assert row is not None
    return (
        list(row["seats"]),
        list(row["registrations"]),
        list(row["invites"]),
        int(row["remaining"]),
        list(row["guests"]),
    )


async def buyer_terms(conn: asyncpg.Connection, order: asyncpg.Record) -> asyncpg.Record:
    """What a buyer's cancellations of the order's seats go by: the policy their own
    registration was sold under, and the event's start and title."""
    row = await conn.fetchrow(
        """
        SELECT r.cancellation_policy, e.starts_at, e.title
        FROM events e
        LEFT JOIN LATERAL (SELECT cancellation_policy FROM registrations
                           WHERE order_id = $1 AND user_id = $3 ORDER BY created_at LIMIT 1) r ON true
        WHERE e.id = $2
        """,
        order["id"],
        order["event_id"],
        order["buyer_id"],
    )
    assert row is not None and row["cancellation_policy"] is not None
    return row


async def clear_seat_returns(
    conn: asyncpg.Connection, order_id: UUID, seat_ids: list[UUID]
) -> list[UUID]:
    """Release the invites held for a return of these seats (its refund failed); returns them."""
    rows = await conn.fetch(
        """
        UPDATE invites SET return_requested_at = NULL, updated_at = now()
        WHERE order_id = $1 AND seat_id = ANY($2::uuid[]) AND return_requested_at IS NOT NULL
        RETURNING id
        """,
        order_id,
        seat_ids,
    )
    return [r["id"] for r in rows]


async def clear_cancellation_requests(
    conn: asyncpg.Connection, order_id: UUID, seat_ids: list[UUID]
) -> list[UUID]:
    """Clear the pending cancellation requests of the order's active registrations on these
    seats; returns the registrations cleared."""
    rows = await conn.fetch(
        """
        UPDATE registrations SET cancellation_requested_at = NULL, updated_at = now()
        WHERE order_id = $1 AND seat_id = ANY($2::uuid[]) AND cancellation_requested_at IS NOT NULL
          AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED')
        RETURNING id
        """,
        order_id,
        seat_ids,
    )
    return [r["id"] for r in rows]


async def reactivate_seats(conn: asyncpg.Connection, order_id: UUID) -> int:
    result = await conn.execute(
        "UPDATE seats SET status = 'ACTIVE', voided_at = NULL WHERE order_id = $1 AND status = 'VOID'",
        order_id,
    )
    return int(result.split()[-1])


async def active_seat_count(conn: asyncpg.Connection, order_id: UUID) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM seats WHERE order_id = $1 AND status = 'ACTIVE'", order_id
        )
    )


async def set_invites_status(
    conn: asyncpg.Connection,
    order_id: UUID,
    *,
    from_statuses: list[str],
    to: str,
    seat_ids: list[UUID] | None = None,
) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE invites SET status = $3, updated_at = now()
        WHERE order_id = $1 AND status = ANY($2::text[]) AND ($4::uuid[] IS NULL OR seat_id = ANY($4::uuid[]))
        RETURNING id, status, seat_id
        """,
        order_id,
        from_statuses,
        to,
        seat_ids,
    )
    return found


async def invite_ids(conn: asyncpg.Connection, order_id: UUID, *, status: str) -> list[UUID]:
    rows = await conn.fetch(
        """
        SELECT i.id FROM invites i JOIN seats s ON s.id = i.seat_id
        WHERE i.order_id = $1 AND i.status = $2 ORDER BY s.position
        """,
        order_id,
        status,
    )
    return [r["id"] for r in rows]


async def get_invite(
    conn: asyncpg.Connection,
    *,
    invite_id: UUID | None = None,
    digest: str | None = None,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """An invite by its id, or by its token's digest (tokens from before HMAC tokens)."""
    lock = " FOR UPDATE" if for_update else ""
    if invite_id is not None:
        return await conn.fetchrow(f"SELECT * FROM invites WHERE id = $1{lock}", invite_id)
    return await conn.fetchrow(f"SELECT * FROM invites WHERE token = $1{lock}", digest)


async def redeem_invite(
    conn: asyncpg.Connection, invite_id: UUID, *, user_id: str, registration_id: UUID
) -> bool:
    return bool(
        await conn.fetchval(
            """
            UPDATE invites SET status = 'REDEEMED', redeemed_by = $2, redeemed_at = now(),
                               registration_id = $3, updated_at = now()
            WHERE id = $1 AND status = 'OPEN' AND return_requested_at IS NULL RETURNING true
            """,
            invite_id,
            user_id,
            registration_id,
        )
    )


# --------------------------------------------------------------------------------- registrations


async def get_registration(
    conn: asyncpg.Connection, registration_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF r" if for_update else ""
    return await conn.fetchrow(
        f"""
        SELECT r.*, e.starts_at AS event_starts_at, e.title AS event_title, e.require_approval,
               o.status AS order_status, o.total_amount, o.refunded_amount, o.transaction_fee, o.app_fee,
               o.quantity AS order_quantity, o.currency AS order_currency, o.buyer_id, s.position AS seat_position
        FROM registrations r
        JOIN events e ON e.id = r.event_id
        LEFT JOIN orders o ON o.id = r.order_id
        LEFT JOIN seats s ON s.id = r.seat_id
        WHERE r.id = $1{lock}
        """,
        registration_id,
    )


async def insert_registration(conn: asyncpg.Connection, reg: dict[str, Any]) -> None:
    cols = list(reg)
    await conn.execute(
        f"INSERT INTO registrations ({', '.join(cols)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))})",
        *(reg[c] for c in cols),
    )


async def set_registration_status(
    conn: asyncpg.Connection,
    registration_id: UUID,
    *,
    expected: list[str],
    status: str,
    extra: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    assignments, values = set_clause(extra or {}, first=4)
    return await conn.fetchrow(
        f"""
        UPDATE registrations SET {assignments}status = $3, updated_at = now()
        WHERE id = $1 AND status = ANY($2::text[]) RETURNING *
        """,
        registration_id,
        expected,
        status,
        *values,
    )


async def revive_buyer_registration(
    conn: asyncpg.Connection, order_id: UUID, *, status: str
) -> asyncpg.Record | None:
    """Late payment: the buyer's registration, cancelled with the unpaid order, comes back."""
    return await conn.fetchrow(
        """
        UPDATE registrations r
        SET status = $2, cancelled_at = NULL, cancellation_reason = NULL, cancellation_reason_note = NULL,
            updated_at = now()
        FROM orders o, seats s
        WHERE r.order_id = $1 AND o.id = r.order_id AND s.id = r.seat_id AND s.position = 1
          AND r.user_id = o.buyer_id AND r.status = 'CANCELLED'
        RETURNING r.*
        """,
        order_id,
        status,
    )


async def promote_buyer_registration(
    conn: asyncpg.Connection, order_id: UUID, *, status: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE registrations SET status = $2, updated_at = now()
        WHERE order_id = $1 AND status = 'PENDING_PAYMENT' RETURNING *
        """,
        order_id,
        status,
    )


async def user_has_registration_on_order(
    conn: asyncpg.Connection, order_id: UUID, user_id: str
) -> bool:
    return bool(
        await conn.fetchval(
            """
            SELECT true FROM registrations WHERE order_id = $1 AND user_id = $2
              AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED') LIMIT 1
            """,
            order_id,
            user_id,
        )
    )


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
        INSERT INTO audit_log ({_AUDIT_COLUMNS})
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


async def audit_many(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Rows of (tenant_id, order_id, entity, entity_id, actor, action, from, to, details)."""
    if rows:
        await conn.executemany(
            f"""
            INSERT INTO audit_log ({_AUDIT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            rows,
        )


async def order_audit(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM audit_log WHERE order_id = $1 ORDER BY id", order_id
    )
    return found


# ------------------------------------------------------------------------------------- invariant


async def inventory_report(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per ticket type: the stored inventory and what the seats and registrations say it must be."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT tt.id, tt.current_quantity, tt.max_quantity,
               (SELECT count(*) FROM seats s JOIN orders o ON o.id = s.order_id
                 WHERE s.ticket_type_id = tt.id AND s.status = 'ACTIVE'
                   AND o.status IN ('PENDING', 'PAID', 'REFUND_PENDING', 'PARTIALLY_REFUNDED'))
             + (SELECT count(*) FROM registrations r
                 WHERE r.ticket_type_id = tt.id AND r.order_id IS NULL
                   AND r.status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED')) AS expected
        FROM ticket_types tt ORDER BY tt.id
        """
    )
    return found


# ------------------------------------------------------------------------------ refunds in flight
async def refund_applied(conn: asyncpg.Connection, refund_id: UUID) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM applied_refunds WHERE refund_id = $1", refund_id)
    )


async def refund_in_flight(
    conn: asyncpg.Connection,
    refund_id: UUID,
    *,
    order_id: UUID,
    tenant_id: str,
    status: str,
    amount: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO refunds_in_flight (refund_id, order_id, tenant_id, status, amount)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (refund_id) DO UPDATE SET status = excluded.status
        """,
        refund_id,
        order_id,
        tenant_id,
        status,
        amount,
    )


async def land_applied_refund(
    conn: asyncpg.Connection, refund_id: UUID, *, order_id: UUID, tenant_id: str, amount: int
) -> int | None:
    """Record a settled refund as applied and no longer in flight, in one statement; returns
    how many of the order's other refunds are still in flight, or None when this refund was
    applied before (under any event id)."""
    row = await conn.fetchrow(
        """
        WITH ins AS (
            INSERT INTO applied_refunds (refund_id, order_id, tenant_id, amount)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (refund_id) DO NOTHING RETURNING refund_id
        ), landed AS (
            DELETE FROM refunds_in_flight WHERE refund_id IN (SELECT refund_id FROM ins)
        )
        SELECT EXISTS (SELECT 1 FROM ins) AS fresh,
               (SELECT count(*) FROM refunds_in_flight
                 WHERE order_id = $2 AND refund_id <> $1) AS others_in_flight
        """,
        refund_id,
        order_id,
        tenant_id,
        amount,
    )
    assert row is not None
    return int(row["others_in_flight"]) if row["fresh"] else None


async def refund_landed(conn: asyncpg.Connection, refund_id: UUID) -> None:
    """The refund settled, failed or was canceled: no longer in flight."""
    await conn.execute("DELETE FROM refunds_in_flight WHERE refund_id = $1", refund_id)


async def refunds_in_flight(conn: asyncpg.Connection, order_id: UUID) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM refunds_in_flight WHERE order_id = $1", order_id)
    )
