"""The purchase: one self-committing statement (``purchase_seats()``, ``register_free_seat()``). ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ..errors import UnpaidLimitReached

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
