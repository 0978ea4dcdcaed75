"""E-mail templates in English, Simplified Chinese and Dutch, chosen by the buyer's locale."""

from __future__ import annotations

import pytest

from notifications.templates import normalize_locale, render

PAID = {
    "order_id": "o-1",
    "transaction_id": "4200000001",
    "quantity": 3,
    "total_amount": 26700,
    "currency": "CNY",
    "event_title": "Demo concert",
    "invite_links": ["http://x/invites/aaa", "http://x/invites/bbb"],
}


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en", "en"), ("zh-CN", "zh"), ("zh_Hans", "zh"), ("nl-NL", "nl"), ("fr", "en"), (None, "en")],
)
def test_locale_falls_back_to_english(locale: str | None, expected: str) -> None:
    assert normalize_locale(locale) == expected


@pytest.mark.parametrize(
    ("locale", "words"), [("en", "confirmed"), ("zh", "已确认"), ("nl", "bevestigd")]
)
def test_payment_success_lists_every_invite_link_in_each_language(locale: str, words: str) -> None:
    mail = render("order_paid", locale, PAID)
    assert words in mail.subject and "Demo concert" in mail.subject
    assert "CNY 267.00" in mail.text
    for link in PAID["invite_links"]:
        assert link in mail.text


def test_single_seat_has_no_invite_section() -> None:
    mail = render("order_paid", "en", {**PAID, "quantity": 1, "invite_links": []})
    assert "invite" not in mail.text.lower()


@pytest.mark.parametrize("locale", ["en", "zh", "nl"])
def test_expired_order_mail(locale: str) -> None:
    mail = render("order_expired", locale, {"order_id": "o-9", "event_title": "Gala"})
    assert "o-9" in mail.subject and "Gala" in mail.text
