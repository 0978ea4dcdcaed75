"""Provider tasks: calls decided in a transaction and made by the worker after it committed."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg


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
