"""What each service may do on Kafka, derived from the code: the deployments' ACLs must match."""

from __future__ import annotations

import importlib
import secrets
from dataclasses import dataclass

from ticketing_shared.contracts import ORDERS_EVENTS, PAYMENTS_EVENTS, REFUNDS_EVENTS, dlq_topic

SERVICES = ("orders", "payments", "refunds", "notifications")

#: the topic whose events each service's outbox publishes (notifications publishes none)
OWN_TOPIC = {
    "orders": ORDERS_EVENTS,
    "payments": PAYMENTS_EVENTS,
    "refunds": REFUNDS_EVENTS,
    "notifications": None,
}


@dataclass(frozen=True)
class Access:
    writes: frozenset[str]  # its own topic and the DLQ twins of what it consumes
    reads: frozenset[str]  # the topics its consumer subscribes to
    group: str  # its consumer group id


def expected(service: str) -> Access:
    # the orders consumer derives invite tokens: it needs a key, any key will do here
    extra = {"invite_secret": secrets.token_hex(32)} if service == "orders" else {}
    settings = importlib.import_module(f"{service}.settings").Settings(**extra)
    consumer = importlib.import_module(f"{service}.consumers").build_consumer(settings)
    reads = frozenset(consumer.topics)
    own = OWN_TOPIC[service]
    writes = frozenset({*([own] if own else []), *(dlq_topic(t) for t in reads)})
    return Access(writes=writes, reads=reads, group=consumer.name)
