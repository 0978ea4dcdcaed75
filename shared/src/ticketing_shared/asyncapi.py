"""A worker's AsyncAPI 3.0 document, made from the contracts: every event the service produces
(its own topic's) and every event its consumers take, each with its payload's JSON Schema.

Messages are CloudEvents in Kafka's binary mode (``ticketing_shared.envelope``): the record's
value is the event's ``data`` (the payload below), its headers the CloudEvents attributes, its
key the subject.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .consumer import EventConsumer
from .contracts.base import EVENT_TYPES, EventData
from .envelope import HEADER_NAMES

HEADERS = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes, binary mode",
    "properties": {name: {"type": "string"} for name in HEADER_NAMES},
    "required": ["ce_id", "ce_type", "ce_source", "ce_specversion"],
}


def produced_by(service: str) -> list[type[EventData]]:
    """The events ``service`` publishes: those of its own topic."""
    return sorted(
        (m for m in EVENT_TYPES.values() if m.topic == f"{service}.events"),
        key=lambda m: m.ce_type,
    )


def document(
    service: str, consumers: Iterable[EventConsumer], *, bootstrap: str = ""
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``service``'s worker."""
    sends = produced_by(service)
    receives = {
        c.name: sorted((r.model for r in c.routes.values()), key=lambda m: m.ce_type)
        for c in consumers
    }
    models = {m.__name__: m for m in [*sends, *(m for ms in receives.values() for m in ms)]}
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, model in sorted(models.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        messages[name] = {
            "name": model.ce_type,
            "title": model.ce_type,
            "summary": (model.__doc__ or "").strip().split("\n\n")[0] or model.ce_type,
            "contentType": "application/json",
            "headers": HEADERS,
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "x-dataschema": model.dataschema(),
        }
    channels: dict[str, Any] = {}
    for model in models.values():
        channel = channels.setdefault(model.topic, {"address": model.topic, "messages": {}})
        channel["messages"][model.__name__] = {"$ref": f"#/components/messages/{model.__name__}"}

    def refs(topic: str, ms: Iterable[type[EventData]]) -> list[dict[str, str]]:
        return [
            {"$ref": f"#/channels/{topic}/messages/{m.__name__}"} for m in ms if m.topic == topic
        ]

    operations: dict[str, Any] = {}
    for topic in sorted({m.topic for m in sends}):
        operations[f"publish:{topic}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"{service} publishes (outbox relay)",
            "messages": refs(topic, sends),
        }
    for consumer, ms in sorted(receives.items()):
        for topic in sorted({m.topic for m in ms}):
            operations[f"{consumer}:{topic}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"consumer group {consumer}",
                "messages": refs(topic, ms),
            }
    out: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {"title": f"{service} worker", "version": "1.0.0"},
        "defaultContentType": "application/json",
        "channels": dict(sorted(channels.items())),
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
    if bootstrap:
        out["servers"] = {"kafka": {"host": bootstrap.split(",")[0], "protocol": "kafka"}}
        for channel in out["channels"].values():
            channel["servers"] = [{"$ref": "#/servers/kafka"}]
    return out
