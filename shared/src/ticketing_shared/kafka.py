"""Kafka producer and topic administration (aiokafka)."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .contracts.topics import ALL_TOPICS, dlq_topic

log = logging.getLogger(__name__)


def producer(
    bootstrap: str, *, idempotent: bool = False, client_id: str = "ticketing"
) -> AIOKafkaProducer:
    """A producer with ``acks=all``; Kafka idempotence is an option, never relied on."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=1,
        request_timeout_ms=15000,
        retry_backoff_ms=100,
    )


async def ensure_topics(
    bootstrap: str,
    *,
    partitions: int = 6,
    replication: int = 1,
    topics: tuple[str, ...] = ALL_TOPICS,
) -> list[str]:
    """Create the event topics and their DLQ twins if missing; returns those created."""
    wanted = [*topics, *(dlq_topic(t) for t in topics)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return created
        try:
            resp = await admin.create_topics(
                [NewTopic(t, partitions, replication) for t in missing], timeout_ms=10000
            )
        except TopicAlreadyExistsError:
            return created
        for topic, code, *_ in getattr(resp, "topic_errors", []):
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"could not create topic {topic}: error code {code}")
        if created:
            log.info("kafka.topics_created", extra={"topics": created})
        return created
    finally:
        await admin.close()
