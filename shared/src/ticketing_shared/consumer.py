"""The consumer wrapper: inbox claim and effects in one transaction, bounded retries, DLQ.

For each fetched batch of records:

1. decode each CloudEvent and validate ``data`` with the contract class of its ``ce_type``
   (types this consumer has no handler for are acknowledged and skipped);
2. in ONE transaction: claim ``(consumer, event_id)`` in the inbox for all of them and run the
   handlers of the fresh ones, in order (a batch route, ``on_batch``, takes a run of consecutive
   events of its type in one call); a redelivered event finds its claim and does nothing;
3. return, and only then do the offsets become committable (the worker commits them in the
   background), so a crash between the commit of (2) and the offset commit re-reads the events,
   which (2) then skips.

Failures: infrastructure errors (database unreachable) are not the message's fault: the record
is not acknowledged and is read again after a pause. Any other error is retried
``max_attempts`` times with exponential backoff; then the record goes to ``<topic>.dlq`` with
the error in its headers and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Histogram

from . import db
from .auth import TENANT_ID_PATTERN
from .contracts.base import EventData
from .contracts.topics import dlq_topic
from .crash import crash_point
from .db import scope_cache, set_tenant
from .envelope import CloudEvent, EnvelopeError, Headers, decode
from .inbox import claim, claim_many
from .logs import traceparent_var

log = logging.getLogger(__name__)
_TENANT_ID = re.compile(TENANT_ID_PATTERN)

E = TypeVar("E", bound=EventData)
Handler = Callable[[asyncpg.Connection, Any, CloudEvent], Awaitable[None]]
#: applies several fresh events of one type, in order, in one go: ``handler(conn, [(data, event)])``
BatchHandler = Callable[[asyncpg.Connection, list[tuple[Any, CloudEvent]]], Awaitable[None]]

EVENTS = Counter(
    "consumer_events_total", "Records handled by consumers", ["consumer", "ce_type", "outcome"]
)
RETRIES = Counter("consumer_retries_total", "Handler attempts that failed", ["consumer", "ce_type"])
LATENCY = Histogram(
    "consumer_handle_seconds",
    "Time to apply one event (claim + effects + commit)",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def transient(exc: BaseException) -> bool:
    """Whether the database, not the message, is the problem: never dead-letter for these. The
    database unavailable (``db.unavailable``, what the APIs answer 503 for) or too slow to answer
    a statement in time (its command timeout): the message is read again later."""
    return db.unavailable(exc) or isinstance(exc, TimeoutError)


class InfrastructureUnavailable(RuntimeError):
    """Raised to leave a record unacknowledged so that it is read again."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass
class _Route:
    model: type[EventData]
    handler: Handler
    batch_handler: BatchHandler | None = None


class EventConsumer:
    """One logical consumer (its inbox name) and its handlers by ``ce_type``."""

    def __init__(
        self,
        name: str,
        *,
        max_attempts: int = 5,
        backoff_ms: float = 50.0,
        backoff_max_ms: float = 2000.0,
    ) -> None:
        self.name = name
        self.max_attempts = max_attempts
        self.backoff = backoff_ms / 1000
        self.backoff_max = backoff_max_ms / 1000
        self.routes: dict[str, _Route] = {}
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        # called after a fresh event's transaction committed (e.g. wake an e-mail sender)
        self.after_commit: list[Callable[[CloudEvent], None]] = []

    def on(self, model: type[E]) -> Callable[[Handler], Handler]:
        """Register ``handler(conn, data, event)`` for ``model.ce_type``."""

        def register(fn: Handler) -> Handler:
            if model.ce_type in self.routes:
                raise ValueError(f"{self.name}: two handlers for {model.ce_type}")
            self.routes[model.ce_type] = _Route(model, fn)
            return fn

        return register

    def on_batch(self, model: type[E]) -> Callable[[BatchHandler], BatchHandler]:
        """Register ``handler(conn, [(data, event), ...])`` for ``model.ce_type``: consecutive fresh
        events of that type in a fetched batch are applied by one call (say, one multi-row
        statement instead of one statement each), in the batch's transaction. A record applied
        on its own (the fallback after a failed batch) comes as a list of one."""

        def register(fn: BatchHandler) -> BatchHandler:
            async def one(conn: asyncpg.Connection, data: Any, event: CloudEvent) -> None:
                await fn(conn, [(data, event)])

            self.on(model)(one)
            self.routes[model.ce_type].batch_handler = fn
            return fn

        return register

    @property
    def topics(self) -> list[str]:
        return sorted({r.model.topic for r in self.routes.values()})

    def bind(self, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self.pool = pool
        self.producer = producer

    async def handle(self, record: Record) -> None:
        """Apply one record exactly once, or dead-letter it; raise only to be re-read."""
        ce_type = _header(record.headers, "ce_type") or "?"
        if ce_type != "?" and ce_type not in self.routes:
            EVENTS.labels(self.name, ce_type, "ignored").inc()
            return  # not ours: skip without parsing (most records of a topic are like this)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                outcome = await self._apply(record)
                LATENCY.labels(self.name).observe(time.perf_counter() - started)
                EVENTS.labels(self.name, ce_type, outcome).inc()
                return
            except Exception as exc:
                if transient(exc):
                    log.warning(
                        "consumer.infrastructure_unavailable",
                        extra={"consumer": self.name, "error": repr(exc)},
                    )
                    await asyncio.sleep(min(self.backoff * 2**attempt, self.backoff_max))
                    raise InfrastructureUnavailable(repr(exc)) from exc
                RETRIES.labels(self.name, ce_type).inc()
                if attempt >= self.max_attempts:
                    await self._dead_letter(record, exc, attempt)
                    EVENTS.labels(self.name, ce_type, "dead_lettered").inc()
                    return
                log.warning(
                    "consumer.attempt_failed",
                    extra={
                        "consumer": self.name,
                        "ce_type": ce_type,
                        "attempt": attempt,
                        "error": repr(exc),
                    },
                )
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))

    async def handle_batch(self, records: list[Record]) -> None:
        """Apply a fetched batch in ONE transaction (one commit, one WAL flush, not one each).

        Records stay in order. If anything in the batch fails, the transaction rolls back and the
        records are applied one by one instead, each with its own retries and DLQ, so one poison
        message never holds back or dead-letters the others.
        """
        ours = [r for r in records if self._routed(r)]
        for r in records:
            if not self._routed(r):
                EVENTS.labels(self.name, _header(r.headers, "ce_type") or "?", "ignored").inc()
        if len(ours) <= 1:
            for r in ours:
                await self.handle(r)
            return
        started = time.perf_counter()
        try:
            outcomes = await self._apply_all(ours)
        except Exception as exc:
            if transient(exc):
                log.warning(
                    "consumer.infrastructure_unavailable",
                    extra={"consumer": self.name, "error": repr(exc)},
                )
                await asyncio.sleep(self.backoff_max)
                raise InfrastructureUnavailable(repr(exc)) from exc
            log.info(
                "consumer.batch_fallback",
                extra={"consumer": self.name, "size": len(ours), "error": repr(exc)},
            )
            for r in ours:
                await self.handle(r)
            return
        LATENCY.labels(self.name).observe(time.perf_counter() - started)
        for ce_type, outcome in outcomes:
            EVENTS.labels(self.name, ce_type, outcome).inc()

    @staticmethod
    def _tenant(data: Any) -> str | None:
        """The tenant an event names (every contract has one): the inbox claim scopes the
        transaction to the batch's tenants (see ``inbox``), and each handler then runs under its
        own events' tenants (``_apply_run``)."""
        tenant = getattr(data, "tenant_id", None)
        return tenant if isinstance(tenant, str) and tenant else None

    def _routed(self, record: Record) -> bool:
        ce_type = _header(record.headers, "ce_type")
        return ce_type is None or ce_type in self.routes

    async def _apply_all(self, records: list[Record]) -> list[tuple[str, str]]:
        parsed = []
        for record in records:
            event = decode(record.headers, record.value)
            route = self.routes[event.type]
            parsed.append((record, event, route, route.model.model_validate(event.data)))
        assert self.pool is not None, "consumer not bound to a pool"
        outcomes: list[tuple[str, str]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            with scope_cache():  # one transaction: a repeated tenant scope is set once
                fresh_ids = await claim_many(
                    conn,
                    consumer=self.name,
                    claims=[
                        (e, r.topic, r.partition, r.offset, self._tenant(d))
                        for r, e, _, d in parsed
                    ],
                )
                fresh: list[tuple[CloudEvent, _Route, Any]] = []
                for _record, event, route, data in parsed:
                    key = str(event.id)
                    applied = key in fresh_ids
                    if applied:
                        fresh_ids.discard(key)  # the same event twice in a batch: applied once
                        fresh.append((event, route, data))
                    outcomes.append((event.type, "applied" if applied else "duplicate"))
                for run in _runs(fresh):
                    await _apply_run(conn, run)
                fresh_events = [event for event, _, _ in fresh]
        for _, committed, _, _ in parsed:
            crash_point("consumer.after_commit", committed.type)
        for event in fresh_events:
            for callback in self.after_commit:
                callback(event)
        return outcomes

    async def _apply(self, record: Record) -> str:
        event = decode(record.headers, record.value)
        route = self.routes.get(event.type)
        if route is None:
            return "ignored"
        data = route.model.model_validate(event.data)
        token = traceparent_var.set(event.traceparent)
        try:
            assert self.pool is not None, "consumer not bound to a pool"
            async with self.pool.acquire() as conn, conn.transaction():
                with scope_cache():
                    fresh = await claim(
                        conn,
                        consumer=self.name,
                        event=event,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        tenant=self._tenant(data),
                    )
                    if fresh:
                        await route.handler(conn, data, event)
            crash_point("consumer.after_commit", event.type)
            if fresh:
                for callback in self.after_commit:
                    callback(event)
            return "applied" if fresh else "duplicate"
        finally:
            traceparent_var.reset(token)

    async def _dead_letter(self, record: Record, exc: BaseException, attempts: int) -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.error(
            "consumer.dead_lettered",
            extra={
                "consumer": self.name,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "attempts": attempts,
                "error": error,
            },
        )
        headers = [h for h in record.headers if not h[0].startswith("dlq_")]
        headers += [
            ("dlq_consumer", self.name.encode()),
            ("dlq_error", error.encode()),
            ("dlq_stack", "".join(traceback.format_exception(exc))[-4000:].encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_original_topic", record.topic.encode()),
            ("dlq_original_partition", str(record.partition).encode()),
            ("dlq_original_offset", str(record.offset).encode()),
        ]
        assert self.producer is not None and self.pool is not None
        await self.producer.send_and_wait(
            dlq_topic(record.topic), value=record.value, key=record.key, headers=headers
        )
        # kept with its tenant when the message can be read that far (NULL when not: only the
        # all-tenants scope, an operator's, sees those), written under the all-tenants scope
        # (the message may name no tenant, or one this consumer never scoped to)
        await self.pool.execute(
            """
            INSERT INTO dead_letters (consumer, event_id, ce_type, topic, partition, "offset",
                                      error, attempts, tenant_id)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
            WHERE set_config('app.tenant_id', '*', true) IS NOT NULL
            """,
            self.name,
            _header(record.headers, "ce_id"),
            _header(record.headers, "ce_type"),
            record.topic,
            record.partition,
            record.offset,
            error,
            attempts,
            _record_tenant(record),
        )


def _runs(
    fresh: list[tuple[CloudEvent, _Route, Any]],
) -> list[list[tuple[CloudEvent, _Route, Any]]]:
    """Split fresh events, in order, into runs: consecutive events of one batch route together,
    every other event alone."""
    runs: list[list[tuple[CloudEvent, _Route, Any]]] = []
    for item in fresh:
        route = item[1]
        if route.batch_handler is not None and runs and runs[-1][0][1] is route:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


async def _apply_run(conn: asyncpg.Connection, run: list[tuple[CloudEvent, _Route, Any]]) -> None:
    first, route, data = run[0]
    token = traceparent_var.set(first.traceparent)
    try:
        # the handler works under its own events' tenants only, not the whole batch's: no round
        # trip when the batch is one tenant's (the claim set that scope already)
        tenants = {t for _, _, d in run if (t := EventConsumer._tenant(d))}
        await set_tenant(conn, tenants)
        if route.batch_handler is not None:
            await route.batch_handler(conn, [(d, e) for e, _, d in run])
        else:
            await route.handler(conn, data, first)
    finally:
        traceparent_var.reset(token)


def _record_tenant(record: Record) -> str | None:
    """The tenant a record's data names, if the record can be read at all."""
    try:
        tenant = decode(record.headers, record.value).data.get("tenant_id")
    except EnvelopeError:
        return None
    return tenant if isinstance(tenant, str) and _TENANT_ID.fullmatch(tenant) else None


def _header(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k == name:
            try:
                return v.decode()
            except (UnicodeDecodeError, AttributeError):
                return None
    return None
