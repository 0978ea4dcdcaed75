"""Seats and invites: voiding, releasing, reviving, holding for a return. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

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


async def order_seat(
    conn: asyncpg.Connection, order_id: UUID, seat_id: UUID
) -> asyncpg.Record | None:
    """One seat of an order."""
    return await conn.fetchrow(
        "SELECT id, status, position FROM seats WHERE id = $1 AND order_id = $2", seat_id, order_id
    )


async def lock_seat_invite(conn: asyncpg.Connection, seat_id: UUID) -> asyncpg.Record | None:
    """The invite of a seat, locked until the end of the transaction."""
    return await conn.fetchrow(
        "SELECT id, status, return_requested_at FROM invites WHERE seat_id = $1 FOR UPDATE",
        seat_id,
    )


async def mark_return_requested(conn: asyncpg.Connection, invite_id: UUID) -> None:
    """A gift seat's return was asked for: its invite is held until the refund settles."""
    await conn.execute(
        "UPDATE invites SET return_requested_at = now(), updated_at = now() WHERE id = $1",
        invite_id,
    )
