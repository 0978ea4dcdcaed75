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


REFUND = {
    "refund_id": "r-1",
    "order_id": "o-7",
    "tenant_id": "t-1",
    "amount": 12550,
    "currency": "CNY",
    "reason": "organizer",
    "note": None,
    "voided_seat_ids": [],
    "fully_refunded": True,
    "refunded_total": 12550,
    "refunded_at": "2025-01-01T00:00:00Z",
    "buyer_email": "b@example.test",
    "buyer_locale": "en",
    "event_title": "Demo concert",
}


@pytest.mark.parametrize(
    ("locale", "subject", "full"),
    [
        ("en", "refund", "fully refunded"),
        ("zh", "退款已完成", "全额退款"),
        ("nl", "terugbetaling", "volledig terugbetaald"),
    ],
)
def test_full_refund_mail_states_amount_order_and_event(
    locale: str, subject: str, full: str
) -> None:
    mail = render("refund_completed", locale, REFUND)
    assert mail.locale == locale
    assert subject in mail.subject and "o-7" in mail.subject
    assert "CNY 125.50" in mail.text and "o-7" in mail.text and "Demo concert" in mail.text
    assert full in mail.text


@pytest.mark.parametrize(
    ("locale", "partial", "seats", "note"),
    [
        ("en", "partially refunded", "2 seats were cancelled", "Note: Seat block closed"),
        ("zh", "部分退款", "已取消 2 个座位", "备注：Seat block closed"),
        (
            "nl",
            "gedeeltelijk terugbetaald",
            "Er zijn 2 plaatsen geannuleerd",
            "Opmerking: Seat block closed",
        ),
    ],
)
def test_partial_refund_mail_counts_cancelled_seats_and_shows_the_note(
    locale: str, partial: str, seats: str, note: str
) -> None:
    ctx = {
        **REFUND,
        "amount": 5000,
        "fully_refunded": False,
        "refunded_total": 5000,
        "voided_seat_ids": ["s-1", "s-2"],
        "note": "Seat block closed",
    }
    mail = render("refund_completed", locale, ctx)
    assert "CNY 50.00" in mail.text
    assert partial in mail.text and seats in mail.text and note in mail.text


@pytest.mark.parametrize("locale", ["en", "zh", "nl"])
def test_refund_mail_without_seats_note_or_title_leaves_them_out(locale: str) -> None:
    ctx = {**REFUND, "fully_refunded": False, "event_title": "", "currency": "JPY", "amount": 3000}
    mail = render("refund_completed", locale, ctx)
    assert "JPY 3,000" in mail.text
    for absent in ("seat", "座位", "plaats ", "plaatsen", "Note", "备注", "Opmerking", "None"):
        assert absent not in mail.text


def test_single_cancelled_seat_is_singular() -> None:
    ctx = {**REFUND, "voided_seat_ids": ["s-1"]}
    assert "1 seat was cancelled" in render("refund_completed", "en", ctx).text
    assert "Er is 1 plaats geannuleerd" in render("refund_completed", "nl", ctx).text
