"""All SQL of the payments service. What providers told us is kept redacted (``domain.redact``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.db import set_clause
from ticketing_shared.outbox import OUTBOX_COLUMNS

from .domain import redact


async def insert_orders(conn: asyncpg.Connection, orders: list[dict[str, Any]]) -> None:
    """Add orders (``order.created`` payloads as JSON) to the read model in one statement, taking
    the columns it keeps; one already there is left as it is."""
    await conn.execute(
        """
        INSERT INTO orders_view (order_id, tenant_id, buyer_id, buyer_email, buyer_locale, total_amount,
                                 currency, expires_at, event_title, status)
        SELECT o.order_id, o.tenant_id, o.buyer_id, o.buyer_email, o.buyer_locale, o.total_amount,
               o.currency, o.expires_at, o.event_title, 'PENDING'
        FROM jsonb_to_recordset($1::jsonb) AS o(order_id uuid, tenant_id text, buyer_id text,
             buyer_email text, buyer_locale text, total_amount bigint, currency text,
             expires_at timestamptz, event_title text)
        ON CONFLICT (order_id) DO NOTHING
        """,
        orders,
    )


async def set_order_status(conn: asyncpg.Connection, order_id: UUID, status: str) -> None:
    await conn.execute(
        "UPDATE orders_view SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        status,
    )


async def scope_to_order(conn: asyncpg.Connection, order_id: UUID) -> str | None:
    """Scope the transaction to the tenant of an order of the read model (migration 0006): a
    request on one order sees that tenant's rows only. None when there is no such order."""
    tenant: str | None = await conn.fetchval("SELECT scope_to_order($1)", order_id)
    return tenant


async def get_order(
    conn: asyncpg.Connection, order_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM orders_view WHERE order_id = $1{lock}", order_id)


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


async def order_paid(conn: asyncpg.Connection, order_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM payments WHERE order_id = $1 AND status = 'SUCCEEDED' LIMIT 1",
            order_id,
        )
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


async def mark_paid(
    conn: asyncpg.Connection,
    *,
    payment_id: UUID,
    expected: str,
    fields: dict[str, Any],
    outbox_row: tuple[Any, ...],
    notification: dict[str, Any],
) -> bool:
    """SUCCEEDED + the ``payment.succeeded`` outbox row + the notification record: ONE statement,
    applied only if the payment is still in the ``expected`` state (False: someone else paid it
    first, and only the notification is recorded, as a duplicate)."""
    return bool(
        await conn.fetchval(
            f"""
            WITH p AS (
                UPDATE payments SET status = 'SUCCEEDED', transaction_id = $2, paid_at = $3,
                                    transaction_fee = $4, app_fee = $5,
                                    payment_method = COALESCE($21, payment_method), updated_at = now()
                WHERE id = $1 AND status = $22 RETURNING id
            ), ob AS (
                INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM p
            ), n AS (
                INSERT INTO provider_notifications (provider, notification_id, event_type, reference, payload,
                                                    outcome, tenant_id)
                SELECT $16, $17, $18, $19, $20,
                       CASE WHEN EXISTS (SELECT 1 FROM p) THEN 'paid' ELSE 'duplicate' END, $23
                ON CONFLICT DO NOTHING
            )
            SELECT EXISTS (SELECT 1 FROM p)
            """,
            payment_id,
            fields["transaction_id"],
            fields["paid_at"],
            fields["transaction_fee"],
            fields["app_fee"],
            *outbox_row,
            notification["provider"],
            notification["notification_id"],
            notification["event_type"],
            notification["reference"],
            redact(notification["payload"]),
            fields.get("payment_method"),
            expected,
            notification["tenant_id"],
        )
    )


async def add_task(
    conn: asyncpg.Connection,
    *,
    task_id: UUID,
    kind: str,
    provider: str,
    reference: str,
    payload: dict[str, Any],
    tenant_id: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO provider_tasks (id, kind, provider, reference, payload, tenant_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (kind, provider, reference) DO NOTHING
        """,
        task_id,
        kind,
        provider,
        reference,
        payload,
        tenant_id,
    )


async def claim_tasks(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM provider_tasks WHERE status = 'PENDING' AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return found


async def finish_task(
    conn: asyncpg.Connection,
    task_id: UUID,
    *,
    status: str,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE provider_tasks SET attempts = attempts + 1, last_error = $3,
            status = CASE WHEN $2 = 'RETRY' THEN 'PENDING' ELSE $2 END,
            next_attempt_at = COALESCE($4, next_attempt_at),
            done_at = CASE WHEN $2 = 'RETRY' THEN NULL ELSE now() END
        WHERE id = $1
        """,
        task_id,
        status,
        error,
        retry_at,
    )


# --------------------------------------------------------------------------------------- refunds
async def refundable_payment(
    conn: asyncpg.Connection, order_id: UUID, payment_id: UUID | None
) -> asyncpg.Record | None:
    """The payment a refund returns money from: the one named, else the order's paid one."""
    if payment_id is not None:
        return await conn.fetchrow(
            "SELECT * FROM payments WHERE id = $1 AND status IN ('SUCCEEDED', 'REJECTED')",
            payment_id,
        )
    return await conn.fetchrow(
        """
        SELECT * FROM payments WHERE order_id = $1 AND status = 'SUCCEEDED'
        ORDER BY paid_at LIMIT 1
        """,
        order_id,
    )


async def insert_refund(conn: asyncpg.Connection, refund: dict[str, Any]) -> bool:
    """False when this refund is known already (a redelivered request)."""
    return bool(
        await conn.fetchval(
            """
            INSERT INTO provider_refunds (refund_id, order_id, tenant_id, payment_id, provider,
                                          out_refund_no, amount, currency, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT DO NOTHING RETURNING true
            """,
            refund["refund_id"],
            refund["order_id"],
            refund["tenant_id"],
            refund["payment_id"],
            refund["provider"],
            refund["out_refund_no"],
            refund["amount"],
            refund["currency"],
            refund["note"],
        )
    )


async def get_refund(
    conn: asyncpg.Connection,
    *,
    refund_id: UUID | None = None,
    provider: str | None = None,
    out_refund_no: str | None = None,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """A refund by our id, or by the provider's reference; with its payment's numbers."""
    lock = " FOR UPDATE OF r" if for_update else ""
    return await conn.fetchrow(
        f"""
        SELECT r.*, p.out_trade_no, p.amount AS payment_amount, p.transaction_id,
               p.provider_payment_id
        FROM provider_refunds r JOIN payments p ON p.id = r.payment_id
        WHERE ($1::uuid IS NULL OR r.refund_id = $1)
          AND ($2::text IS NULL OR (r.provider = $2 AND r.out_refund_no = $3)){lock}
        """,
        refund_id,
        provider,
        out_refund_no,
    )


async def update_refund(
    conn: asyncpg.Connection, refund_id: UUID, fields: dict[str, Any], *, expected: list[str]
) -> asyncpg.Record | None:
    """Move a refund on, only from one of the ``expected`` states (None when it was not there)."""
    assignments, values = set_clause(fields, first=3)
    return await conn.fetchrow(
        f"""
        UPDATE provider_refunds SET {assignments}updated_at = now()
        WHERE refund_id = $1 AND status = ANY($2::text[]) RETURNING *
        """,
        refund_id,
        expected,
        *values,
    )


async def settle_refund_once(
    conn: asyncpg.Connection,
    *,
    refund_id: UUID,
    expected: list[str],
    fields: dict[str, Any],
    outbox_row: tuple[Any, ...],
    notification: dict[str, Any],
    outcome: str,
) -> bool:
    """A provider's refund news: the refund moved on (only from an ``expected`` state), its
    ``payment.refund_updated`` outbox row and the notification record, in ONE statement (False:
    nothing to apply, and only the notification is recorded)."""
    assignments, values = set_clause(fields, first=20)
    return bool(
        await conn.fetchval(
            f"""
            WITH r AS (
                UPDATE provider_refunds SET {assignments}updated_at = now()
                WHERE refund_id = $1 AND status = ANY($2::text[]) RETURNING refund_id
            ), ob AS (
                INSERT INTO outbox ({OUTBOX_COLUMNS})
                SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM r
            ), n AS (
                INSERT INTO provider_notifications (provider, notification_id, event_type, reference,
                                                    payload, outcome, tenant_id)
                SELECT $13, $14, $15, $16, $17,
                       CASE WHEN EXISTS (SELECT 1 FROM r) THEN $18 ELSE 'duplicate' END, $19
                ON CONFLICT DO NOTHING
            )
            SELECT EXISTS (SELECT 1 FROM r)
            """,
            refund_id,
            expected,
            *outbox_row,
            notification["provider"],
            notification["notification_id"],
            notification["event_type"],
            notification["reference"],
            redact(notification["payload"]),
            outcome,
            notification["tenant_id"],
            *values,
        )
    )


async def cancel_task(
    conn: asyncpg.Connection, *, kind: str, provider: str, reference: str
) -> bool:
    """Withdraw a task not yet done (and not being executed right now)."""
    return bool(
        await conn.fetchval(
            """
            UPDATE provider_tasks SET status = 'CANCELLED', done_at = now()
            WHERE id = (SELECT id FROM provider_tasks WHERE kind = $1 AND provider = $2 AND reference = $3
                        AND status = 'PENDING' FOR UPDATE SKIP LOCKED)
            RETURNING true
            """,
            kind,
            provider,
            reference,
        )
    )


async def open_refunds(
    conn: asyncpg.Connection, payment_id: UUID, *, lock: bool = True
) -> list[asyncpg.Record]:
    """A payment's refunds the provider may still move on (locked unless ``lock`` is False),
    with the payment's numbers."""
    found: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT r.*, p.out_trade_no, p.amount AS payment_amount, p.transaction_id,
               p.provider_payment_id
        FROM provider_refunds r JOIN payments p ON p.id = r.payment_id
        WHERE r.payment_id = $1 AND r.status IN ('pending', 'queued', 'processing')
        ORDER BY r.created_at{" FOR UPDATE OF r" if lock else ""}
        """,
        payment_id,
    )
    return found


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
