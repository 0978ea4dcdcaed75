"""Payment attempts and what providers told us of them (kept redacted, ``domain.redact``)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import writes
from ticketing_shared.db import set_clause
from ticketing_shared.writes import OutboxEvent

from ..domain import redact


async def get_payment(
    conn: asyncpg.Connection,
    *,
    provider: str,
    out_trade_no: str | None = None,
    provider_payment_id: str | None = None,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """A payment by our order number, or by the provider's own id (Mollie's ``tr_…``)."""
    column = "out_trade_no" if provider_payment_id is None else "provider_payment_id"
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT * FROM payments WHERE provider = $1 AND {column} = $2{lock}",
        provider,
        out_trade_no if provider_payment_id is None else provider_payment_id,
    )


async def lock_payment(conn: asyncpg.Connection, payment_id: UUID) -> asyncpg.Record | None:
    """A payment by our id, locked until the end of the transaction."""
    return await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)


async def current_attempt(
    conn: asyncpg.Connection, order_id: UUID, provider: str
) -> asyncpg.Record | None:
    """The order's newest attempt with this provider that can still be paid."""
    return await conn.fetchrow(
        """
        SELECT * FROM payments WHERE order_id = $1 AND provider = $2 AND status = 'CREATED'
        ORDER BY created_at DESC LIMIT 1
        """,
        order_id,
        provider,
    )


async def insert_payment(conn: asyncpg.Connection, payment: dict[str, Any]) -> asyncpg.Record:
    """Insert an attempt, or return the one already there for this provider order number."""
    row = await conn.fetchrow(
        """
        INSERT INTO payments (id, order_id, provider, payment_method, out_trade_no, amount, currency,
                              tenant_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (provider, out_trade_no) DO NOTHING RETURNING *
        """,
        payment["id"],
        payment["order_id"],
        payment["provider"],
        payment["payment_method"],
        payment["out_trade_no"],
        payment["amount"],
        payment["currency"],
        payment["tenant_id"],
    )
    if row is None:
        row = await get_payment(
            conn, provider=payment["provider"], out_trade_no=payment["out_trade_no"]
        )
    assert row is not None
    return row


async def update_payment(
    conn: asyncpg.Connection,
    payment_id: UUID,
    fields: dict[str, Any],
    *,
    expected: list[str] | None = None,
) -> asyncpg.Record | None:
    assignments, values = set_clause(fields, first=3)
    return await conn.fetchrow(
        f"""
        UPDATE payments SET {assignments}updated_at = now()
        WHERE id = $1 AND ($2::text[] IS NULL OR status = ANY($2::text[])) RETURNING *
        """,
        payment_id,
        expected,
        *values,
    )


async def list_payments(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM payments WHERE order_id = $1 ORDER BY created_at", order_id
    )
    return found


async def open_payments(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM payments WHERE order_id = $1 AND status = 'CREATED'", order_id
    )
    return found


async def record_notification(
    conn: asyncpg.Connection,
    *,
    provider: str,
    notification_id: str,
    event_type: str,
    reference: str,
    payload: dict[str, Any],
    outcome: str,
    tenant_id: str | None,
) -> bool:
    """False when this notification id was recorded before (a redelivery). ``tenant_id``: of
    the payment or refund it is about (None when it is about nothing of ours)."""
    return bool(
        await conn.fetchval(
            """
            INSERT INTO provider_notifications (provider, notification_id, event_type, reference,
                                                payload, outcome, tenant_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true
            """,
            provider,
            notification_id,
            event_type,
            reference,
            redact(payload),
            outcome,
            tenant_id,
        )
    )


def noted(param: str, outcome: str) -> str:
    """A CTE (for ``writes.guarded``'s ``also``) recording the provider's notification in jsonb
    parameter ``param`` (keys: provider, notification_id, event_type, reference, payload,
    tenant_id) with SQL expression ``outcome``, unless that notification was recorded before."""
    return f""", noted AS (
        INSERT INTO provider_notifications (provider, notification_id, event_type, reference,
                                            payload, outcome, tenant_id)
        SELECT n.provider, n.notification_id, n.event_type, n.reference, n.payload, {outcome},
               n.tenant_id
        FROM jsonb_to_record({param}) AS n(provider text, notification_id text, event_type text,
             reference text, payload jsonb, tenant_id text)
        ON CONFLICT DO NOTHING
    )"""


def redacted(notification: dict[str, Any]) -> dict[str, Any]:
    return {**notification, "payload": redact(notification["payload"])}


async def mark_paid(
    conn: asyncpg.Connection,
    *,
    payment_id: UUID,
    expected: str,
    fields: dict[str, Any],
    event: OutboxEvent,
    notification: dict[str, Any],
) -> bool:
    """SUCCEEDED + the ``payment.succeeded`` outbox row + the notification record: ONE statement
    (``writes.guarded``), applied only if the payment is still in the ``expected`` state (False:
    someone else paid it first, and only the notification is recorded, as a duplicate)."""
    changed = await writes.guarded(
        conn,
        """
        UPDATE payments SET status = 'SUCCEEDED', transaction_id = $2, paid_at = $3,
                            transaction_fee = $4, app_fee = $5,
                            payment_method = COALESCE($6, payment_method), updated_at = now()
        WHERE id = $1 AND status = $7 RETURNING id
        """,
        payment_id,
        fields["transaction_id"],
        fields["paid_at"],
        fields["transaction_fee"],
        fields["app_fee"],
        fields.get("payment_method"),
        expected,
        redacted(notification),
        events=[event],
        also=noted(
            "$8::jsonb", "CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'paid' ELSE 'duplicate' END"
        ),
    )
    return bool(changed)


async def due_for_reconcile(
    conn: asyncpg.Connection, *, provider: str, after_s: float, every_s: float, limit: int
) -> list[str]:
    """Provider ids of attempts whose outcome we may have missed: still unpaid, or with a refund
    still open, older than ``after_s`` and not checked for ``every_s``; marked checked now."""
    rows = await conn.fetch(
        """
        WITH due AS (
            SELECT p.id FROM payments p
            WHERE p.provider = $1 AND p.provider_payment_id IS NOT NULL
              AND (p.status = 'CREATED' OR EXISTS (
                    SELECT 1 FROM provider_refunds r
                    WHERE r.payment_id = p.id AND r.status IN ('pending', 'queued', 'processing')
                      AND r.provider_refund_id IS NOT NULL AND r.updated_at < now() - make_interval(secs => $2)))
              AND p.created_at < now() - make_interval(secs => $2)
              AND (p.reconciled_at IS NULL OR p.reconciled_at < now() - make_interval(secs => $3))
            ORDER BY p.reconciled_at NULLS FIRST, p.created_at
            LIMIT $4 FOR UPDATE OF p SKIP LOCKED
        )
        UPDATE payments SET reconciled_at = now() FROM due WHERE payments.id = due.id
        RETURNING payments.provider_payment_id
        """,
        provider,
        after_s,
        every_s,
        limit,
    )
    return [r["provider_payment_id"] for r in rows]
