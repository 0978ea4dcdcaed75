"""Pure rules of the orders domain: prices, shares, fees, cutoffs, policy inheritance, transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders.domain import (
    CancellationPolicy,
    OrderStatus,
    RegistrationStatus,
    cancel_decision,
    effective_policy,
    order_transition,
    registration_transition,
    seat_refund,
    tier_price,
)
from orders.errors import IllegalTransition, QuantityNotAllowed
from ticketing_shared.errors import Unprocessable
from ticketing_shared.money import allocate

TIERS = {1: 1500, 2: 2800, 4: 5000}


def test_total_is_the_tier_price_not_unit_times_quantity() -> None:
    assert tier_price(TIERS, 2) == 2800
    assert tier_price(TIERS, 4) == 5000


@pytest.mark.parametrize("quantity", [0, 3, 5, -1])
def test_quantity_without_a_tier_is_refused(quantity: int) -> None:
    with pytest.raises(QuantityNotAllowed) as exc:
        tier_price(TIERS, quantity)
    assert exc.value.code == "quantity_not_allowed" and exc.value.status == 422


def test_largest_remainder_gives_the_extra_cents_to_the_first_seats() -> None:
    assert allocate(1000, 3) == [334, 333, 333]
    assert allocate(5, 3) == [2, 2, 1]
    assert allocate(0, 4) == [0, 0, 0, 0]


@given(total=st.integers(0, 10**9), parts=st.integers(1, 200))
def test_shares_always_sum_exactly_and_differ_by_at_most_one(total: int, parts: int) -> None:
    shares = allocate(total, parts)
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_seat_refund_deducts_fee_shares_unless_the_policy_includes_them() -> None:
    # 3 seats for 1000; transaction fee 10 (4/3/3), app fee 5 (2/2/1)
    excl = CancellationPolicy(allow_cancellation=True)
    kw = {"total_amount": 1000, "transaction_fee": 10, "app_fee": 5, "seats": 3}
    assert [seat_refund(policy=excl, seat_index=i, **kw) for i in range(3)] == [
        334 - 4 - 2,
        333 - 3 - 2,
        333 - 3 - 1,
    ]
    incl_tx = CancellationPolicy(allow_cancellation=True, include_transaction_fees=True)
    assert seat_refund(policy=incl_tx, seat_index=0, **kw) == 334 - 2
    incl_all = CancellationPolicy(
        allow_cancellation=True, include_transaction_fees=True, include_app_fees=True
    )
    assert [seat_refund(policy=incl_all, seat_index=i, **kw) for i in range(3)] == [334, 333, 333]


def test_seat_refund_never_exceeds_what_is_left_nor_goes_negative() -> None:
    policy = CancellationPolicy(allow_cancellation=True)
    assert (
        seat_refund(
            policy=policy,
            total_amount=100,
            transaction_fee=0,
            app_fee=0,
            seats=1,
            seat_index=0,
            already_refunded=70,
        )
        == 30
    )
    assert (
        seat_refund(
            policy=policy, total_amount=10, transaction_fee=50, app_fee=0, seats=1, seat_index=0
        )
        == 0
    )


START = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
POLICY = CancellationPolicy(allow_cancellation=True, cutoff_days=2, cutoff_hours=6)
CUTOFF = START - timedelta(days=2, hours=6)


def test_cancel_allowed_exactly_at_the_cutoff() -> None:
    assert cancel_decision(POLICY, event_starts_at=START, now=CUTOFF).allowed


def test_cancel_refused_one_second_after_the_cutoff() -> None:
    decision = cancel_decision(POLICY, event_starts_at=START, now=CUTOFF + timedelta(seconds=1))
    assert (decision.allowed, decision.reason) == (False, "cancellation_window_closed")


def test_rescheduled_event_moves_the_window_with_it() -> None:
    at = CUTOFF + timedelta(hours=1)
    assert not cancel_decision(POLICY, event_starts_at=START, now=at).allowed
    assert cancel_decision(POLICY, event_starts_at=START + timedelta(days=1), now=at).allowed


def test_policy_that_disallows_cancellation() -> None:
    decision = cancel_decision(
        CancellationPolicy(allow_cancellation=False),
        event_starts_at=START,
        now=START - timedelta(days=30),
    )
    assert (decision.allowed, decision.reason) == (False, "cancellation_not_allowed")


@pytest.mark.parametrize(("days", "hours"), [(-1, 0), (0, 24), (0, -1)])
def test_policy_bounds(days: int, hours: int) -> None:
    with pytest.raises(Unprocessable):
        CancellationPolicy(allow_cancellation=True, cutoff_days=days, cutoff_hours=hours)


def test_effective_policy_inherits_the_tenant_variant_or_uses_the_options_own() -> None:
    tenant = {"paid-regular": {"allow_cancellation": True, "cutoff_days": 3}}
    p, src = effective_policy(
        tenant_policies=tenant, use_tenant_policy=True, own_policy=None, paid=True, organizer=False
    )
    assert (p.allow_cancellation, p.cutoff_days, src) == (True, 3, "tenant")
    # the organizer variant is missing: nothing is allowed
    p, src = effective_policy(
        tenant_policies=tenant, use_tenant_policy=True, own_policy=None, paid=True, organizer=True
    )
    assert (p.allow_cancellation, src) == (False, "tenant")
    own = {"allow_cancellation": True, "cutoff_hours": 5, "include_app_fees": True}
    p, src = effective_policy(
        tenant_policies=tenant, use_tenant_policy=False, own_policy=own, paid=False, organizer=False
    )
    assert (p.cutoff_hours, p.include_app_fees, src) == (5, True, "option")


def test_illegal_transitions_raise_with_from_and_to() -> None:
    assert order_transition(OrderStatus.PENDING, OrderStatus.PAID) is OrderStatus.PAID
    with pytest.raises(IllegalTransition) as exc:
        order_transition(OrderStatus.REFUNDED, OrderStatus.PAID)
    assert (exc.value.current, exc.value.target) == ("REFUNDED", "PAID")
    with pytest.raises(IllegalTransition):
        registration_transition(RegistrationStatus.REJECTED, RegistrationStatus.APPROVED)
    with pytest.raises(IllegalTransition):
        order_transition(OrderStatus.PENDING, OrderStatus.REFUNDED)


def test_the_unpaid_limit_always_lets_one_order_of_the_largest_tier_through() -> None:
    from orders.domain import unpaid_limit
    from ticketing_shared.errors import Unprocessable

    assert unpaid_limit(None, [1, 2, 3], current=None) == 10
    assert unpaid_limit(None, [1, 20], current=None) == 20
    assert unpaid_limit(None, [1, 50], current=30) == 50  # larger tiers raise it
    assert unpaid_limit(None, [1, 5], current=30) == 30  # smaller ones keep it
    assert unpaid_limit(25, [1, 20], current=10) == 25
    with pytest.raises(Unprocessable) as refused:
        unpaid_limit(5, [1, 20], current=10)
    assert refused.value.code == "unpaid_limit_below_largest_tier"
