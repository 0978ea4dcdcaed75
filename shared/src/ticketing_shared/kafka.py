"""Kafka clients (aiokafka): how they connect, the producer and topic administration.

Every client the services build takes :func:`client_options`: the bootstrap servers and the
deployment's security settings (TLS, SASL). Nothing else constructs an aiokafka client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context

from .contracts.topics import ALL_TOPICS, dlq_topic

if TYPE_CHECKING:
    from .settings import ServiceSettings

log = logging.getLogger(__name__)

#: keyword arguments of any aiokafka client: ``bootstrap_servers`` and the security settings
ClientOptions = Mapping[str, Any]

#: CreateTopics answers meaning "not yours to create": the operator provisions the topics
_NOT_ALLOWED = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)
_NOT_ALLOWED_CODES = {e.errno for e in _NOT_ALLOWED}


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """The keyword arguments every aiokafka client of this service is built with.

    ``security_protocol`` always; ``ssl_context`` for SSL and SASL_SSL (the CA file, else the
    system's CAs; a client certificate and key for mutual TLS); ``sasl_*`` for SASL_PLAINTEXT
    and SASL_SSL (the password file is read now). The settings were validated at start.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password_value()
    return options


def plaintext_options(bootstrap: str) -> dict[str, Any]:
    """Options of an unauthenticated client: the embedded broker on loopback, and tests."""
    return {"bootstrap_servers": bootstrap, "security_protocol": "PLAINTEXT"}


def consumer(
    options: ClientOptions, *, group_id: str, client_id: str, **tuning: Any
) -> AIOKafkaConsumer:
    """A consumer of ``group_id`` that commits only when told (after the transaction)."""
    return AIOKafkaConsumer(
        **options,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        **tuning,
    )


def producer(
    options: ClientOptions, *, idempotent: bool = False, client_id: str = "ticketing"
) -> AIOKafkaProducer:
    """A producer with ``acks=all``; Kafka idempotence is an option, never relied on."""
    return AIOKafkaProducer(
        **options,
        client_id=client_id,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=1,
        request_timeout_ms=15000,
        retry_backoff_ms=100,
    )


def admin_client(options: ClientOptions, *, request_timeout_ms: int = 10000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**options, request_timeout_ms=request_timeout_ms)


async def ensure_topics(
    options: ClientOptions,
    *,
    partitions: int = 6,
    replication: int = 1,
    topics: tuple[str, ...] = ALL_TOPICS,
) -> list[str]:
    """Create the event topics and their DLQ twins if missing; returns those created.

    Where the broker's ACLs do not let this service create topics, the deployment provisions
    them: that answer is logged and the caller carries on, as with topics that already exist.
    (A service sees only the topics it may describe, so it may find some "missing".)
    """
    wanted = [*topics, *(dlq_topic(t) for t in topics)]
    admin = admin_client(options)
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
        except _NOT_ALLOWED as exc:
            _operator_provisions(missing, repr(exc))
            return created
        refused: list[str] = []
        for topic, code, *_ in getattr(resp, "topic_errors", []):
            if code == 0:
                created.append(topic)
            elif code in _NOT_ALLOWED_CODES:
                refused.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"could not create topic {topic}: error code {code}")
        if created:
            log.info("kafka.topics_created", extra={"topics": created})
        if refused:
            _operator_provisions(refused, "not authorized to create topics")
        return created
    finally:
        await admin.close()


def _operator_provisions(topics: list[str], reason: str) -> None:
    log.info(
        "kafka.topics_provisioned_by_operator",
        extra={"topics": topics, "reason": reason},
    )
