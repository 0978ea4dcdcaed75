"""Mollie amounts: minor units ↔ the value strings Mollie requires (exact, never floats)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.providers.mollie import from_value, to_value


@pytest.mark.parametrize(
    ("amount", "currency", "value"),
    [
        (1050, "EUR", "10.50"),
        (5, "EUR", "0.05"),
        (0, "EUR", "0.00"),
        (100000, "GBP", "1000.00"),
        (1000, "JPY", "1000"),
        (-250, "EUR", "-2.50"),
    ],
)
def test_value_strings_carry_the_currency_decimals(amount: int, currency: str, value: str) -> None:
    assert to_value(amount, currency) == value
    assert from_value(value, currency) == amount


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(["EUR", "USD", "JPY", "ISK"]))
def test_round_trip(amount: int, currency: str) -> None:
    assert from_value(to_value(amount, currency), currency) == amount


@pytest.mark.parametrize("value", ["10.555", "abc", "1.5e-3"])
def test_inexact_or_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        from_value(value, "EUR")
