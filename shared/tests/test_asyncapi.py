"""A worker's AsyncAPI document is made from the contracts: every event the service publishes and
every event its consumers take, each with the payload schema of its contract."""

from __future__ import annotations

from typing import Any

import asyncpg

from ticketing_local.testing import json_refs
from ticketing_shared import asyncapi
from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import OrderPaid, PaymentSucceeded, RefundCompleted
from ticketing_shared.contracts.base import EVENT_TYPES
from ticketing_shared.envelope import CloudEvent


def _consumer() -> EventConsumer:
    consumer = EventConsumer("orders", max_attempts=3, backoff_ms=1)

    @consumer.on(PaymentSucceeded)
    async def paid(conn: asyncpg.Connection, data: PaymentSucceeded, event: CloudEvent) -> None:
        return None

    @consumer.on(RefundCompleted)
    async def refunded(conn: asyncpg.Connection, data: RefundCompleted, event: CloudEvent) -> None:
        return None

    return consumer


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_it_lists_what_the_service_sends_and_receives_with_their_payload_schemas() -> None:
    doc = asyncapi.document("orders", [_consumer()], bootstrap="kafka:9092")
    assert doc["asyncapi"] == "3.0.0"
    by_action: dict[str, set[str]] = {"send": set(), "receive": set()}
    for operation in doc["operations"].values():
        for ref in operation["messages"]:
            message = _resolve(doc, _resolve(doc, ref["$ref"])["$ref"])
            by_action[operation["action"]].add(message["name"])
    orders_events = {t for t, m in EVENT_TYPES.items() if m.topic == "orders.events"}
    assert by_action["send"] == orders_events
    assert OrderPaid.ce_type in orders_events
    assert by_action["receive"] == {PaymentSucceeded.ce_type, RefundCompleted.ce_type}
    message = doc["components"]["messages"]["PaymentSucceeded"]
    payload = _resolve(doc, message["payload"]["$ref"])
    expected = PaymentSucceeded.model_json_schema(ref_template="#/components/schemas/{model}")
    expected.pop("$defs", None)
    assert payload == expected
    assert set(payload["required"]) >= {"order_id", "amount", "currency"}


def test_every_reference_resolves() -> None:
    doc = asyncapi.document("orders", [_consumer()], bootstrap="kafka:9092")
    for ref in json_refs(doc):
        assert _resolve(doc, ref) is not None, ref
