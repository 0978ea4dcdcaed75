"""Common machinery of the ticketing services.

Modules (nothing here imports a service):

- ``settings``     pydantic-settings base shared by every service role
- ``db``           asyncpg pool, tenant-scoped transactions, numbered SQL migrations
- ``envelope``     CloudEvents 1.0 binary-mode envelope for Kafka records
- ``contracts``    event payload models and topic names: the only types that cross services
- ``outbox``       transactional outbox writer, relay (advisory-lock elected) and replay
- ``inbox``        idempotent consumer claim ``(consumer, event_id)``
- ``consumer``     the consumer wrapper: inbox + one transaction + bounded retries + DLQ
- ``kafka``        producer and topic administration
- ``auth``         RS256 JWT verification, principals and roles
- ``errors``       domain errors rendered as RFC 9457 problem+json
- ``idempotency``  ``Idempotency-Key`` replay for creating POSTs
- ``logs``         JSON logging with a correlation id carried as W3C ``traceparent``
- ``web``          FastAPI app factory with health, readiness and Prometheus metrics
- ``worker``       worker process factory: Kafka consumers, relay, schedulers, health
- ``subscription`` one Kafka consumer per service consumer: fetch, apply, rewind
- ``asyncapi``     a worker's AsyncAPI 3.0 document, made from the contracts
- ``cli``          the per-service command line (api, worker, migrate, outbox replay)
"""

__version__ = "0.1.0"
