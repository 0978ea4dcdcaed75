"""The purchase: one self-committing statement (``purchase_seats()``, ``register_free_seat()``)
whose one argument names everything it writes (``Purchase``, ``FreeSeat``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.idempotency import KeyedResponse
from ticketing_shared.writes import OutboxEvent

from ..domain import AuditEntry
from ..errors import UnpaidLimitReached

# ------------------------------------------------------------------------------------- purchase


@dataclass(frozen=True)
class NewOrder:
    """A paid purchase's order, written PENDING."""

    id: UUID
    tenant_id: str
    event_id: UUID
    ticket_type_id: UUID
    buyer_id: str
    buyer_email: str | None
    buyer_locale: str
    quantity: int
    total_amount: int
    currency: str
    expires_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class BuyerRegistration:
    """The buyer's own registration, on the order's first seat (PENDING_PAYMENT)."""

    id: UUID
    name: str
    cancellation_policy: Mapping[str, Any]
    policy_source: str


@dataclass(frozen=True)
class NewInvite:
    """A gift invite for one of the order's other seats, LOCKED until the order is paid;
    ``token``: the digest of its token, never the token."""

    id: UUID
    seat_id: UUID
    token: str


@dataclass(frozen=True)
class Purchase:
    """Everything ``purchase_seats()`` writes, by name: its one argument."""

    order: NewOrder
    seat_ids: list[UUID]
    registration: BuyerRegistration
    invites: list[NewInvite]
    events: list[OutboxEvent]
    audit: list[AuditEntry]
    idempotency: KeyedResponse | None
    catalog_version: int


@dataclass(frozen=True)
class FreeRegistration:
    """A free registration (PENDING when the event requires approval, else APPROVED)."""

    id: UUID
    tenant_id: str
    event_id: UUID
    ticket_type_id: UUID
    user_id: str
    email: str | None
    name: str
    locale: str
    status: str
    cancellation_policy: Mapping[str, Any]
    policy_source: str
    created_at: datetime


@dataclass(frozen=True)
class FreeSeat:
    """Everything ``register_free_seat()`` writes, by name: its one argument."""

    registration: FreeRegistration
    audit: list[AuditEntry]
    idempotency: KeyedResponse | None
    catalog_version: int


# SQLSTATEs raised by purchase_seats()/register_free_seat() (functions.sql), nothing written
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


async def create_paid_order(conn: asyncpg.Connection, purchase: Purchase) -> bool:
    """Write everything a purchase writes and take its seats: ``purchase_seats()``, one statement
    that is its own transaction (migrations/functions.sql). False (nothing written) when sold
    out; ``CatalogMoved`` when its ``catalog_version`` is no longer current; a reused
    Idempotency-Key raises ``UniqueViolationError`` on ``idempotency_keys_pkey``."""
    return await _sold_out_is_false(conn.execute("SELECT purchase_seats($1::jsonb)", purchase))


async def create_free_registration(conn: asyncpg.Connection, seat: FreeSeat) -> bool:
    """Take one seat and write the registration, its audit and idempotency key:
    ``register_free_seat()``, one self-committing statement. False when sold out;
    ``CatalogMoved`` as for ``create_paid_order``;
    ``UniqueViolationError`` for a second live free registration of the same person
    (``registrations_one_free_per_user``) or a reused key (``idempotency_keys_pkey``)."""
    return await _sold_out_is_false(conn.execute("SELECT register_free_seat($1::jsonb)", seat))
