"""CloudEvents 1.0 in Kafka binary mode.

Headers carry the attributes (``ce_id``, ``ce_type``, ``ce_source``, ``ce_specversion``,
``ce_time``, ``ce_subject``, ``ce_dataschema``, ``content-type``, ``traceparent``); the record
value is the JSON ``data``; the record key is the subject (the order id), so all events of one
order land in one partition, in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
#: the headers that carry the CloudEvents attributes (any other header is passed on as is)
HEADER_NAMES = (
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_specversion",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "content-type",
    "traceparent",
)
_KNOWN = frozenset(HEADER_NAMES)

Headers = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """A record that is not a well-formed CloudEvent (a poison message)."""


@dataclass(frozen=True)
class CloudEvent:
    id: UUID
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    dataschema: str = ""
    traceparent: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    # the data already serialized (the relay reads it as text): sent as is
    raw: bytes | None = None

    def headers(self) -> Headers:
        h: Headers = [
            ("ce_id", str(self.id).encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_time", self.time.astimezone(UTC).isoformat().encode()),
            ("ce_subject", self.subject.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.dataschema:
            h.append(("ce_dataschema", self.dataschema.encode()))
        if self.traceparent:
            h.append(("traceparent", self.traceparent.encode()))
        h.extend((k, v.encode()) for k, v in self.extra_headers.items())
        return h

    def value(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.data, separators=(",", ":"), default=str).encode()

    def key(self) -> bytes:
        return self.subject.encode()


def decode(headers: Headers | None, value: bytes | None) -> CloudEvent:
    """Parse a Kafka record into a CloudEvent, or raise EnvelopeError."""
    h: dict[str, str] = {}
    for k, v in headers or []:
        try:
            h[k] = v.decode() if v is not None else ""
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"header {k!r} is not UTF-8") from exc
    missing = [k for k in ("ce_id", "ce_type", "ce_source", "ce_specversion") if k not in h]
    if missing:
        raise EnvelopeError(f"missing CloudEvents headers: {', '.join(missing)}")
    if h["ce_specversion"] != SPECVERSION:
        raise EnvelopeError(f"unsupported ce_specversion {h['ce_specversion']!r}")
    try:
        event_id = UUID(h["ce_id"])
    except ValueError as exc:
        raise EnvelopeError(f"ce_id {h['ce_id']!r} is not a UUID") from exc
    try:
        time = datetime.fromisoformat(h["ce_time"]) if "ce_time" in h else datetime.now(UTC)
    except ValueError as exc:
        raise EnvelopeError(f"ce_time {h.get('ce_time')!r} is not RFC 3339") from exc
    try:
        data = json.loads(value) if value else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("value is not a JSON object")
    return CloudEvent(
        id=event_id,
        type=h["ce_type"],
        source=h["ce_source"],
        subject=h.get("ce_subject", ""),
        time=time,
        data=data,
        dataschema=h.get("ce_dataschema", ""),
        traceparent=h.get("traceparent"),
        extra_headers={k: v for k, v in h.items() if k not in _KNOWN},
    )
