"""Refunds domain: states, reasons, and what a refund request amounts to. No I/O.

Refund (provider-neutral; the same vocabulary as Mollie's)::

    pending ──provider accepted──► processing ──settled──► refunded
       │  └──low balance──► queued ──► processing            │
       │                       │                              └──► failed (ABNORMAL, CLOSED)
       ├──provider refused──► failed
       └──withdrawn (pending or queued only)──► canceled
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from ticketing_shared.money import allocate

from .errors import (
    DuplicateSeat,
    InvalidAmount,
    NoItems,
    OrderNotRefundable,
    OverRefund,
    SeatAlreadyRefunded,
    UnknownSeat,
)


class RefundStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELED = "canceled"


S = RefundStatus
TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.PROCESSING, S.REFUNDED, S.FAILED, S.CANCELED}),
    # Mollie: a queued refund becomes pending when the balance allows it
    S.QUEUED: frozenset({S.PENDING, S.PROCESSING, S.REFUNDED, S.FAILED, S.CANCELED}),
    S.PROCESSING: frozenset({S.REFUNDED, S.FAILED}),
    S.REFUNDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}
# refunds whose money is (or may still be) on its way back: they count against what is left
ACTIVE = frozenset({S.PENDING, S.QUEUED, S.PROCESSING, S.REFUNDED})
CANCELABLE = frozenset({S.PENDING, S.QUEUED})


def can_move(current: RefundStatus, target: RefundStatus) -> bool:
    return target in TRANSITIONS[current]


class RefundReason(StrEnum):
    """Who asked, in the vocabulary of registration cancellations."""

    ORGANIZER = "organizer"
    ADMIN = "admin"
    USER = "user"
    OTHER = "other"


@dataclass(frozen=True)
class OrderMoney:
    """What a refund request is checked against: the payment and the refunds so far."""

    paid_amount: int
    seat_ids: Sequence[UUID]  # seat order: seat i's share is allocate(paid_amount, n)[i]
    refunded_or_pending: int  # sum of ACTIVE refunds of the order's payment
    seats_taken: frozenset[UUID]  # seats in ACTIVE refunds

    @property
    def remaining(self) -> int:
        return self.paid_amount - self.refunded_or_pending


@dataclass(frozen=True)
class RefundPlan:
    amount: int
    items: list[tuple[UUID, int]]  # (seat_id, its share)


def plan_refund(
    money: OrderMoney, *, amount: int | None, seat_ids: Iterable[UUID] | None
) -> RefundPlan:
    """Turn ``{amount?, items?}`` into the money and seats of a refund, or refuse it.

    Neither: everything that remains, with every seat not refunded yet. ``items``: those seats,
    for their shares (or for ``amount`` when given too). ``amount`` alone: money, no seats.
    """
    if money.remaining <= 0:
        raise OrderNotRefundable("this order has been refunded in full already")
    shares = dict(
        zip(money.seat_ids, allocate(money.paid_amount, len(money.seat_ids)), strict=True)
    )
    if seat_ids is None:
        if amount is None:  # full refund of what remains
            items = [(s, shares[s]) for s in money.seat_ids if s not in money.seats_taken]
            return RefundPlan(money.remaining, items)
        items = []
    else:
        wanted = list(seat_ids)
        if not wanted:
            raise NoItems("items must name at least one seat")
        if len(set(wanted)) != len(wanted):
            raise DuplicateSeat("a seat is listed twice")
        unknown = [s for s in wanted if s not in shares]
        if unknown:
            raise UnknownSeat(f"seat {unknown[0]} does not belong to this order")
        taken = [s for s in wanted if s in money.seats_taken]
        if taken:
            raise SeatAlreadyRefunded(f"seat {taken[0]} is already in another refund")
        items = [(s, shares[s]) for s in wanted]
        if amount is None:
            amount = sum(share for _, share in items)
    if amount <= 0:
        raise InvalidAmount("the refund amount must be greater than 0")
    if amount > money.remaining:
        raise OverRefund(
            f"{amount} exceeds the {money.remaining} left to refund "
            f"(paid {money.paid_amount}, refunded or in progress {money.refunded_or_pending})"
        )
    return RefundPlan(amount, items)


@dataclass(frozen=True)
class AuditEntry:
    """One line of a refund's audit trail: who (``actor``) did what (``action``), from and to
    which status, written in the transaction of the change itself."""

    refund_id: UUID
    order_id: UUID
    tenant_id: str
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        refund: Mapping[str, Any],
        *,
        actor: str,
        action: str,
        from_status: str | None,
        to_status: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """An entry about ``refund`` (a refund row)."""
        return cls(
            refund["id"],
            refund["order_id"],
            refund["tenant_id"],
            actor,
            action,
            from_status,
            to_status,
            details or {},
        )
