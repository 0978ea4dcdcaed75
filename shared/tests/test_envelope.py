"""CloudEvents binary-mode envelope: what crosses Kafka must round-trip and refuse garbage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ticketing_shared.contracts import EVENT_TYPES, OrderPaid
from ticketing_shared.envelope import CloudEvent, EnvelopeError, decode


def _event() -> CloudEvent:
    return CloudEvent(
        id=uuid.uuid4(),
        type="order.paid",
        source="orders",
        subject="o-1",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        data={"a": 1, "name": "订单"},
        dataschema="urn:ticketing:order.paid:v1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_round_trip_keeps_every_attribute() -> None:
    ev = _event()
    back = decode(ev.headers(), ev.value())
    assert back == ev
    names = [k for k, _ in ev.headers()]
    for required in (
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_time",
        "ce_subject",
        "traceparent",
    ):
        assert required in names
    assert ev.key() == b"o-1"


@pytest.mark.parametrize("drop", ["ce_id", "ce_type", "ce_source", "ce_specversion"])
def test_missing_required_header_is_refused(drop: str) -> None:
    ev = _event()
    headers = [(k, v) for k, v in ev.headers() if k != drop]
    with pytest.raises(EnvelopeError, match=drop):
        decode(headers, ev.value())


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("ce_id", b"not-a-uuid", "UUID"),
        ("ce_specversion", b"0.3", "specversion"),
        ("ce_time", b"yesterday", "RFC 3339"),
    ],
)
def test_malformed_header_is_refused(header: str, value: bytes, message: str) -> None:
    ev = _event()
    headers = [(k, value if k == header else v) for k, v in ev.headers()]
    with pytest.raises(EnvelopeError, match=message):
        decode(headers, ev.value())


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_value_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode(_event().headers(), body)


def test_every_event_class_is_registered_once_with_a_versioned_schema() -> None:
    assert EVENT_TYPES["order.paid"] is OrderPaid
    for ce_type, cls in EVENT_TYPES.items():
        assert cls.ce_type == ce_type
        assert cls.topic.endswith(".events")
        assert cls.dataschema() == f"urn:ticketing:{ce_type}:v{cls.schema_version}"


def test_newer_producer_fields_do_not_break_an_older_consumer() -> None:
    data = {
        "order_id": str(uuid.uuid4()),
        "tenant_id": "t",
        "buyer_id": "u",
        "buyer_email": "a@b.c",
        "quantity": 1,
        "total_amount": 100,
        "currency": "EUR",
        "transaction_id": "x",
        "paid_at": "2026-01-01T00:00:00Z",
        "field_from_the_future": 42,
    }
    assert OrderPaid.model_validate(data).total_amount == 100
