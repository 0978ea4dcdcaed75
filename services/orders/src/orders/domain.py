"""Orders domain: states, transitions and pure rules (prices, shares, cancellation policy). No I/O.

Order::

    PENDING ──pay──► PAID ──refund requested──► REFUND_PENDING ──settled──► PARTIALLY_REFUNDED
       │               │                          │    ▲  │                     │      │
       │               └──settled (no pending)────┼────┼──┴──► REFUNDED ◄──────────────┘
       │                                          └─failed/canceled─► PAID | PARTIALLY_REFUNDED
       └─expire / buyer cancel──► CANCELLED ──late payment, seats still there──► PAID

    REFUNDED: all the money came back, or every seat is void (``refunded_amount`` may then be
    below ``total_amount``: fees a cancellation policy kept). A later refund of those fees only
    raises ``refunded_amount``. PARTIALLY_REFUNDED: some money back and some seat still active.

Registration::

    PENDING_PAYMENT ──paid──► APPROVED | PENDING ──approve──► APPROVED
                                          └──reject──► REJECTED
    any active state ──cancel──► CANCELLED (cancelled_at, reason, note)
    CANCELLED (payment_abandoned | user, unpaid order) ──late payment revives──► APPROVED | PENDING

Invite::

    LOCKED ──order paid──► OPEN ──redeem──► REDEEMED
    LOCKED | OPEN ──refund / cancel──► VOID ──late payment revives──► OPEN
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from ticketing_shared.money import allocate

from .errors import (
    IllegalTransition,
    InvalidPolicy,
    QuantityNotAllowed,
    UnpaidLimitBelowLargestTier,
)


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    REFUND_PENDING = "REFUND_PENDING"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"


class RegistrationStatus(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class InviteStatus(StrEnum):
    LOCKED = "LOCKED"
    OPEN = "OPEN"
    REDEEMED = "REDEEMED"
    VOID = "VOID"


class CancellationReason(StrEnum):
    USER = "user"
    ADMIN = "admin"
    ORGANIZER = "organizer"
    PAYMENT_ABANDONED = "payment_abandoned"
    OTHER = "other"


O, R, I = OrderStatus, RegistrationStatus, InviteStatus  # noqa: E741 - short aliases for the tables

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    O.PENDING: frozenset({O.PAID, O.CANCELLED}),
    O.PAID: frozenset({O.REFUND_PENDING, O.PARTIALLY_REFUNDED, O.REFUNDED}),
    O.REFUND_PENDING: frozenset({O.PAID, O.PARTIALLY_REFUNDED, O.REFUNDED}),
    O.PARTIALLY_REFUNDED: frozenset({O.REFUND_PENDING, O.PARTIALLY_REFUNDED, O.REFUNDED}),
    O.REFUNDED: frozenset(),
    O.CANCELLED: frozenset({O.PAID}),
}

REGISTRATION_TRANSITIONS: dict[RegistrationStatus, frozenset[RegistrationStatus]] = {
    R.PENDING_PAYMENT: frozenset({R.APPROVED, R.PENDING, R.CANCELLED}),
    R.PENDING: frozenset({R.APPROVED, R.REJECTED, R.CANCELLED}),
    R.APPROVED: frozenset({R.CANCELLED}),
    R.REJECTED: frozenset(),
    R.CANCELLED: frozenset({R.APPROVED, R.PENDING}),
}

INVITE_TRANSITIONS: dict[InviteStatus, frozenset[InviteStatus]] = {
    I.LOCKED: frozenset({I.OPEN, I.VOID}),
    I.OPEN: frozenset({I.REDEEMED, I.VOID}),
    I.REDEEMED: frozenset(),
    I.VOID: frozenset({I.OPEN}),
}

ACTIVE_ORDER_STATUSES = frozenset({O.PENDING, O.PAID, O.REFUND_PENDING, O.PARTIALLY_REFUNDED})
REFUNDABLE_ORDER_STATUSES = frozenset({O.PAID, O.PARTIALLY_REFUNDED})
#: an order whose refunds' news (settled, fell through) still applies: paid, with money or
#: seats left to give back, a refund possibly under way
REFUND_NEWS_APPLIES = frozenset({O.PAID, O.REFUND_PENDING, O.PARTIALLY_REFUNDED})
ACTIVE_REGISTRATION_STATUSES = frozenset({R.PENDING_PAYMENT, R.PENDING, R.APPROVED})


def paid_seat_blocked(order_status: str) -> tuple[str, bool] | None:
    """Why no seat of an order in ``order_status`` may be cancelled (or given back) now, and
    whether its refund quote still means something; None when the order allows it."""
    if order_status == O.PENDING:
        return "order_not_paid", False
    if order_status == O.REFUND_PENDING:
        return "refund_in_progress", True
    if order_status not in REFUNDABLE_ORDER_STATUSES:
        return "order_not_refundable", False
    return None


def _transition(
    entity: str, table: dict[Any, frozenset[Any]], current: StrEnum, target: StrEnum
) -> StrEnum:
    """The one guard of every state machine: return ``target`` or raise ``IllegalTransition``."""
    if target not in table[current]:
        raise IllegalTransition(entity, current.value, target.value)
    return target


def order_transition(current: OrderStatus, target: OrderStatus) -> OrderStatus:
    return OrderStatus(_transition("order", ORDER_TRANSITIONS, current, target))


def registration_transition(
    current: RegistrationStatus, target: RegistrationStatus
) -> RegistrationStatus:
    return RegistrationStatus(
        _transition("registration", REGISTRATION_TRANSITIONS, current, target)
    )


def invite_transition(current: InviteStatus, target: InviteStatus) -> InviteStatus:
    return InviteStatus(_transition("invite", INVITE_TRANSITIONS, current, target))


# How many seats of a ticket type one buyer may hold unpaid, unless the ticket type says more.
DEFAULT_UNPAID_LIMIT = 10


def unpaid_limit(requested: int | None, tier_quantities: list[int], *, current: int | None) -> int:
    """A ticket type's unpaid-seats limit: as requested, which must let one order of its largest
    tier through (else 422); otherwise what it was (10 for a new one), raised to the largest tier."""
    largest = max(tier_quantities, default=1)
    if requested is not None:
        if requested < largest:
            raise UnpaidLimitBelowLargestTier(
                f"max_unpaid_per_buyer must be at least {largest}, the largest tier's quantity:"
                " one order of it must be possible"
            )
        return requested
    return max(current if current is not None else DEFAULT_UNPAID_LIMIT, largest)


# ------------------------------------------------------------------------------------------ prices
def tier_price(price_tiers: dict[int, int], quantity: int) -> int:
    """The total price of ``quantity`` seats: the tier's price, never unit × quantity."""
    if quantity < 1 or quantity not in price_tiers:
        allowed = ", ".join(str(q) for q in sorted(price_tiers)) or "none"
        raise QuantityNotAllowed(f"quantity {quantity} has no price tier (allowed: {allowed})")
    return price_tiers[quantity]


def is_free(price_tiers: dict[int, int]) -> bool:
    return all(amount == 0 for amount in price_tiers.values())


# --------------------------------------------------------------------------- cancellation policy
POLICY_VARIANTS = ("paid-regular", "paid-organizer", "free-regular", "free-organizer")


@dataclass(frozen=True)
class CancellationPolicy:
    allow_cancellation: bool = False
    include_transaction_fees: bool = False
    include_app_fees: bool = False
    cutoff_days: int = 0
    cutoff_hours: int = 0

    def __post_init__(self) -> None:
        if self.cutoff_days < 0:
            raise InvalidPolicy("cutoff_days must be >= 0")
        if not 0 <= self.cutoff_hours <= 23:
            raise InvalidPolicy("cutoff_hours must be between 0 and 23")

    @property
    def cutoff(self) -> timedelta:
        return timedelta(days=self.cutoff_days, hours=self.cutoff_hours)

    def as_dict(self) -> dict[str, Any]:
        return {
            "allow_cancellation": self.allow_cancellation,
            "include_transaction_fees": self.include_transaction_fees,
            "include_app_fees": self.include_app_fees,
            "cutoff_days": self.cutoff_days,
            "cutoff_hours": self.cutoff_hours,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CancellationPolicy:
        if not data:
            return NO_CANCELLATION
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


NO_CANCELLATION = CancellationPolicy(allow_cancellation=False)


def policy_variant(*, paid: bool, organizer: bool) -> str:
    return f"{'paid' if paid else 'free'}-{'organizer' if organizer else 'regular'}"


def effective_policy(
    *,
    tenant_policies: dict[str, dict[str, Any]],
    use_tenant_policy: bool,
    own_policy: dict[str, Any] | None,
    paid: bool,
    organizer: bool,
) -> tuple[CancellationPolicy, str]:
    """(policy, source): the option's own policy, or the tenant's variant ('tenant'|'option').

    A missing tenant variant (or a non-inheriting option without a policy) allows nothing.
    """
    if not use_tenant_policy:
        return CancellationPolicy.from_dict(own_policy), "option"
    variant = tenant_policies.get(policy_variant(paid=paid, organizer=organizer))
    return CancellationPolicy.from_dict(variant), "tenant"


@dataclass(frozen=True)
class CancelDecision:
    allowed: bool
    reason: str | None  # cancellation_not_allowed | cancellation_window_closed | … when not allowed


def cancel_decision(
    policy: CancellationPolicy, *, event_starts_at: datetime, now: datetime
) -> CancelDecision:
    """A buyer may cancel iff allowed and ``now <= starts_at - cutoff`` (the event's current start)."""
    if not policy.allow_cancellation:
        return CancelDecision(False, "cancellation_not_allowed")
    if now > event_starts_at - policy.cutoff:
        return CancelDecision(False, "cancellation_window_closed")
    return CancelDecision(True, None)


def seat_refund(
    *,
    policy: CancellationPolicy,
    total_amount: int,
    transaction_fee: int,
    app_fee: int,
    seats: int,
    seat_index: int,
    already_refunded: int = 0,
) -> int:
    """The refund of one seat under a policy.

    The seat's share of the amount paid, minus its share of the transaction (provider) fee unless
    the policy includes it, minus its share of the app fee unless included; shares by largest
    remainder over the order's seats. Never negative, never more than what is left to refund.
    """
    amount = allocate(total_amount, seats)[seat_index]
    if not policy.include_transaction_fees:
        amount -= allocate(transaction_fee, seats)[seat_index]
    if not policy.include_app_fees:
        amount -= allocate(app_fee, seats)[seat_index]
    return max(0, min(amount, total_amount - already_refunded))


@dataclass(frozen=True)
class AuditEntry:
    """One line of an order's audit trail: who (``actor``) did what (``action``) to which
    ``entity``, from and to which state, written in the transaction of the change itself."""

    tenant_id: str
    order_id: UUID | None
    entity: str
    entity_id: str
    actor: str
    action: str
    from_status: str | None = None
    to_status: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def about_order(
        cls,
        tenant_id: str,
        order_id: UUID,
        *,
        actor: str,
        action: str,
        from_status: str | None = None,
        to_status: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """An entry about the order itself."""
        return cls(
            tenant_id,
            order_id,
            "order",
            str(order_id),
            actor,
            action,
            from_status,
            to_status,
            details or {},
        )
