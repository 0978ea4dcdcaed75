"""Payments rules: payment method by browser, provider order numbers, fees, attempt states."""

from __future__ import annotations

import uuid

import pytest

from payments.domain import (
    IllegalPaymentTransition,
    PaymentMethod,
    PaymentStatus,
    fee,
    out_trade_no,
    transition,
    wechat_method,
)


@pytest.mark.parametrize(
    ("ua", "method"),
    [
        ("Mozilla/5.0 (iPhone) MicroMessenger/8.0.50", PaymentMethod.JSAPI),
        ("Mozilla/5.0 Chrome/126", PaymentMethod.NATIVE),
        (None, PaymentMethod.NATIVE),
    ],
)
def test_wechat_browser_gets_jsapi_everyone_else_native(
    ua: str | None, method: PaymentMethod
) -> None:
    assert wechat_method(ua) is method


def test_out_trade_no_is_the_order_id_as_32_hex_digits() -> None:
    order_id = uuid.uuid4()
    assert out_trade_no(order_id) == order_id.hex and len(out_trade_no(order_id)) == 32


@pytest.mark.parametrize(
    ("amount", "bps", "expected"),
    [(26700, 60, 160), (9900, 100, 99), (1, 60, 0), (83, 60, 0), (84, 60, 1)],
)
def test_fees_round_half_up_in_minor_units(amount: int, bps: int, expected: int) -> None:
    assert fee(amount, bps) == expected


def test_a_rejected_payment_can_never_become_paid() -> None:
    assert transition(PaymentStatus.CREATED, PaymentStatus.SUCCEEDED) is PaymentStatus.SUCCEEDED
    assert transition(PaymentStatus.CLOSED, PaymentStatus.SUCCEEDED) is PaymentStatus.SUCCEEDED
    with pytest.raises(IllegalPaymentTransition):
        transition(PaymentStatus.REJECTED, PaymentStatus.SUCCEEDED)
