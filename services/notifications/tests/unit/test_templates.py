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
    "revived": False,
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
    assert {"en": "CN¥267.00", "zh": "¥267.00", "nl": "CN¥\xa0267,00"}[locale] in mail.text
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
    "kind": "order",
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
    assert {"en": "CN¥125.50", "zh": "¥125.50", "nl": "CN¥\xa0125,50"}[locale] in mail.text
    assert "o-7" in mail.text and "Demo concert" in mail.text
    assert full in mail.text


@pytest.mark.parametrize(
    ("locale", "partial", "seats", "note"),
    [
        ("en", "refunded in total", "2 seats were cancelled", "Note: Seat block closed"),
        ("zh", "累计已退款", "已取消 2 个座位", "备注：Seat block closed"),
        ("nl", "in totaal", "Er zijn 2 plaatsen geannuleerd", "Opmerking: Seat block closed"),
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
    assert {"en": "CN¥50.00", "zh": "¥50.00", "nl": "CN¥\xa050,00"}[locale] in mail.text
    assert partial in mail.text and seats in mail.text and note in mail.text


@pytest.mark.parametrize("locale", ["en", "zh", "nl"])
def test_refund_mail_without_seats_note_or_title_leaves_them_out(locale: str) -> None:
    ctx = {**REFUND, "fully_refunded": False, "event_title": "", "currency": "JPY", "amount": 3000}
    mail = render("refund_completed", locale, ctx)
    assert {"en": "¥3,000", "zh": "JP¥3,000", "nl": "JP¥\xa03.000"}[locale] in mail.text
    for absent in ("seat", "座位", "plaats ", "plaatsen", "Note", "备注", "Opmerking", "None"):
        assert absent not in mail.text


def test_single_cancelled_seat_is_singular() -> None:
    ctx = {**REFUND, "voided_seat_ids": ["s-1"]}
    assert "1 seat was cancelled" in render("refund_completed", "en", ctx).text
    assert "Er is 1 plaats geannuleerd" in render("refund_completed", "nl", ctx).text


# Every template, in every locale, with the context its event gives it.
CONTEXTS = {
    "order_paid": {**PAID, "revived": False},
    "order_expired": {"order_id": "o-9", "event_title": "Gala"},
    "payment_rejected": {
        "order_id": "o-3",
        "amount": 9900,
        "currency": "EUR",
        "reason": "late_payment",
        "event_title": "Gala",
    },
    "refund_completed": REFUND,
    "refund_failed": {**REFUND, "kind": "order", "reason": "user", "status": "failed"},
    "registration_approved": {"event_title": "Gala"},
    "registration_rejected": {"event_title": "Gala"},
    "cancellation_requested": {"event_title": "Gala", "amount": 9742, "currency": "EUR"},
    "registration_cancelled": {
        "event_title": "Gala",
        "reason": "organizer",
        "note": None,
        "refund_id": None,
    },
    "invite_redeemed": {"event_title": "Gala", "order_id": "o-5", "redeemer_email": "g@x.test"},
    "seat_return_requested": {
        "event_title": "Gala",
        "order_id": "o-6",
        "amount": 4950,
        "currency": "CNY",
    },
    "event_rescheduled": {
        "event_title": "Gala",
        "starts_at": "2027-01-05T19:30:00+00:00",
        "previous_starts_at": "2026-12-20T18:00:00+00:00",
    },
}


@pytest.mark.parametrize("locale", ["en", "zh", "nl"])
@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_every_mail_is_plain_text_and_html_in_every_locale(name: str, locale: str) -> None:
    mail = render(name, locale, CONTEXTS[name])
    assert mail.locale == locale and mail.subject and mail.text.strip()
    assert mail.html is not None and f'<html lang="{locale}">' in mail.html
    assert "None" not in mail.text and "\n\n\n" not in mail.text
    # the HTML part says what the text part says
    first_words = mail.text.split()[0].rstrip(",，")
    assert first_words in mail.html


def test_html_part_escapes_what_people_typed_and_links_urls() -> None:
    mail = render(
        "order_paid", "en", {**PAID, "event_title": "<script>x</script>", "revived": False}
    )
    assert mail.html is not None
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert '<a href="http://x/invites/aaa">http://x/invites/aaa</a>' in mail.html


@pytest.mark.parametrize(
    ("locale", "words"),
    [("en", "after your order had expired"), ("zh", "订单过期后"), ("nl", "nadat je bestelling")],
)
def test_a_revived_order_says_so_after_the_expiry_mail(locale: str, words: str) -> None:
    assert words in render("order_paid", locale, {**PAID, "revived": True}).text
    expired = render("order_expired", locale, {"order_id": "o-9", "event_title": "Gala"}).text
    # the expiry mail does not promise that nothing was charged, whatever comes next
    assert {"en": "If you did not pay", "zh": "如果您没有付款", "nl": "Als je niet hebt"}[
        locale
    ] in expired


@pytest.mark.parametrize(
    ("ctx", "words"),
    [
        ({"reason": "user", "kind": "order"}, "cancel again"),
        ({"reason": "other", "kind": "rejected_payment"}, "will return it to you"),
        ({"reason": "organizer", "kind": "order"}, "stay as they were"),
    ],
)
def test_a_failed_refund_says_what_happens_next(ctx: dict[str, str], words: str) -> None:
    assert words in render("refund_failed", "en", {**REFUND, **ctx}).text


def test_a_guest_whose_seat_was_refunded_is_told_why() -> None:
    ctx = {**CONTEXTS["registration_cancelled"], "refund_id": "r-1", "reason": "organizer"}
    assert (
        "the order it belonged to was refunded" in render("registration_cancelled", "en", ctx).text
    )
