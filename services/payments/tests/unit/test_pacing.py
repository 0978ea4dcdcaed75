"""The timing rule of provider retries: Retry-After read (seconds or an HTTP date) and capped,
backoff jittered within its bounds, and the transport giving up at once when the provider asks
for a longer wait than the call's budget (httpx.MockTransport; the waits themselves are shown
against the sandboxes in the integration tests)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from payments.pacing import (
    MAX_RETRY_AFTER_S,
    RETRY_AFTER_SPREAD,
    backoff,
    equal_jitter,
    parse_retry_after,
    retry_delay,
)
from payments.providers.mollie import MollieClient, MollieConfig, MollieError

NOW = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
DRAWS = 2000


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 01 May 2030 12:00:30 GMT", 30.0),
        ("Wed, 01 May 2030 11:59:00 GMT", 0.0),  # a date already past: no wait
        ("Wed, 01 May 2030 12:00:30", 30.0),  # no zone: GMT, as HTTP dates are
        ("86400", MAX_RETRY_AFTER_S),  # a day: capped
        ("Fri, 01 May 2043 12:00:00 GMT", MAX_RETRY_AFTER_S),
        (None, None),
        ("", None),
        ("soon", None),
        ("-1", None),
        ("1.5", None),
        ("99999999999", MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_is_read_and_capped(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_cap_is_a_parameter() -> None:
    assert parse_retry_after("30", cap_s=10) == 10.0


def test_equal_jitter_stays_within_half_and_full_and_spreads() -> None:
    draws = [equal_jitter(4.0) for _ in range(DRAWS)]
    assert all(2.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 2.5 and max(draws) > 3.5  # spread over the range, not one value
    assert equal_jitter(0.0) == 0.0


@pytest.mark.parametrize(("attempt", "full"), [(1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0)])
def test_backoff_doubles_with_jitter_up_to_its_cap(attempt: int, full: float) -> None:
    draws = [backoff(attempt, base_s=0.2, cap_s=5.0) for _ in range(DRAWS)]
    assert all(full / 2 <= d <= full for d in draws)
    assert len(set(draws)) > DRAWS / 2


def test_a_retry_after_is_never_shortened_and_is_spread_after() -> None:
    draws = [retry_delay(1, 1.0, base_s=0.2, cap_s=5.0) for _ in range(DRAWS)]
    assert all(1.0 <= d <= 1.0 + RETRY_AFTER_SPREAD for d in draws)
    assert max(draws) - min(draws) > RETRY_AFTER_SPREAD / 2
    # a Retry-After shorter than the backoff does not shorten the backoff
    assert all(retry_delay(4, 0.1, base_s=0.2, cap_s=5.0) >= 0.4 for _ in range(DRAWS))
    # "Retry-After: 0": the plain jittered backoff
    assert all(0.1 <= retry_delay(1, 0.0, base_s=0.2, cap_s=5.0) <= 0.2 for _ in range(DRAWS))


def _client(handler: httpx.MockTransport, **kw: Any) -> MollieClient:
    config = MollieConfig(
        base_url="https://mollie.test",
        api_key="test_" + "k" * 30,
        webhook_url="https://shop.test/v1/webhooks/mollie",
        redirect_url="https://shop.test/orders/{order_id}",
    )
    return MollieClient(config, httpx.AsyncClient(transport=handler), **kw)


def _limited(retry_after: str | None, status: int = 429) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(status, json={"status": status, "detail": "slow down"}, headers=headers)


async def test_a_retry_after_beyond_the_budget_gives_up_at_once() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _limited("30")

    started = time.monotonic()
    with pytest.raises(MollieError) as caught:
        await _client(httpx.MockTransport(handler), budget_s=2.0).get_payment("tr_Abcd1234")
    assert time.monotonic() - started < 1.0  # no wait for a pause it could not finish
    assert calls == 1
    assert caught.value.retryable and caught.value.status == 429
    assert caught.value.retry_after_s == 30.0  # for the caller's own retry


async def test_retry_after_zero_and_a_503_date_are_retried() -> None:
    answers = [_limited("0"), _limited("Wed, 01 Jan 2020 00:00:00 GMT", 503)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(200, json={"id": "tr_Abcd1234"})

    client = _client(httpx.MockTransport(handler), backoff_s=0.001)
    assert (await client.get_payment("tr_Abcd1234"))["id"] == "tr_Abcd1234"
    assert answers == []


async def test_retry_after_is_read_only_on_429_and_503() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _limited("60", 500)

    with pytest.raises(MollieError) as caught:
        await _client(httpx.MockTransport(handler), backoff_s=0.001).get_payment("tr_Abcd1234")
    assert caught.value.status == 500 and caught.value.retry_after_s is None
