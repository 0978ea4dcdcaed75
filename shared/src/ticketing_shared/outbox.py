"""Transactional outbox: writer, relay and replay.

``emit()`` writes the event in the caller's transaction, so a state change and the event
announcing it commit together or not at all.

The relay publishes pending rows in id order with ``acks=all`` and marks them published. Any
number of workers may run one; a session-level PostgreSQL advisory lock elects the single active
relay per service, and a standby takes over within ``standby_interval`` when the active one's
session ends. Rows of one order are written under that order's row lock, so their ids follow
commit order and the order's events leave in order. The relay drains in batches while there is
work (after a short batch it lets the next one gather for ``gather_ms``) and, when idle, polls
with a short exponential backoff (``poll_min_ms`` → ``poll_max_ms``):
no NOTIFY in the order transaction, which costs the purchase path nothing. A worker's consumers
wake their own relay right after committing (``wake()``, in-process). The other services'
outboxes NOTIFY the relay on every insert (the ``outbox_wake`` trigger, migrations); their relay
sees the trigger and polls only as a safety net (``notified_poll_max_ms``).

Replay clears ``published_at`` of rows created since a time, or published since a time (all a
lost broker held); the active relay then publishes them again in id order. Consumers are
idempotent, so this is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as _Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from . import db, kafka
from .contracts.base import EventData
from .envelope import CloudEvent
from .writes import OUTBOX, OutboxEvent
from .writes import new_event_id as new_event_id

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox"
# The active relay LISTENs here; the outbox_wake trigger (payments, refunds, notifications)
# notifies it. Never from the order transaction: NOTIFY serializes the commits of the
# transactions that use it.
OUTBOX_CHANNEL = "outbox_wake"
ANALYZE_EVERY_ROWS = 1000  # the relay refreshes the outbox's statistics after this many rows…
ANALYZE_EVERY_S = 30.0  # …at most this often

PUBLISHED = Counter("outbox_published_total", "Outbox rows published to Kafka", ["topic"])
RELAY_ACTIVE = Gauge("outbox_relay_active", "1 while this process holds the relay lock")
PENDING = Gauge("outbox_pending_rows", "Unpublished outbox rows seen by the active relay")
PUBLISH_ERRORS = Counter("outbox_publish_errors_total", "Failed publish attempts")


async def emit(
    conn: asyncpg.Connection,
    event: EventData,
    *,
    subject: str | UUID,
    source: str,
    event_id: UUID | None = None,
) -> UUID:
    """Write ``event`` to the outbox in the caller's transaction; returns its event id."""
    row = OutboxEvent.of(event, subject=subject, source=source, event_id=event_id)
    await conn.execute(OUTBOX.insert("$1::jsonb"), [row])
    return row.event_id


async def emit_many(
    conn: asyncpg.Connection, events: list[tuple[EventData, str | UUID]], *, source: str
) -> None:
    """Write many ``(event, subject)`` to the outbox in the caller's transaction, in one
    statement."""
    if events:
        await conn.execute(
            OUTBOX.insert("$1::jsonb"),
            [OutboxEvent.of(e, subject=subject, source=source) for e, subject in events],
        )


def _row_event(row: asyncpg.Record) -> CloudEvent:
    return CloudEvent(
        id=row["event_id"],
        type=row["ce_type"],
        source=row["ce_source"],
        subject=row["ce_subject"],
        time=row["ce_time"],
        data={},
        dataschema=row["dataschema"],
        traceparent=row["traceparent"],
        raw=row["data"].encode(),
    )


class OutboxRelay:
    """Publishes a service's outbox to Kafka while it holds the relay lock."""

    def __init__(
        self,
        *,
        dsn: str,
        kafka_options: kafka.ClientOptions,
        service: str,
        batch_size: int = 500,
        poll_min_ms: float = 2.0,
        poll_max_ms: float = 20.0,
        gather_ms: float = 10.0,
        notified_poll_max_ms: float = 1000.0,
        standby_interval: float = 1.0,
        retention: timedelta = timedelta(days=7),
        partitions: int = 6,
        replication: int = 1,
        idempotent_producer: bool = False,
    ) -> None:
        self.dsn = dsn
        self.kafka_options = kafka_options
        self.service = service
        self.batch_size = batch_size
        self.poll_min = poll_min_ms / 1000
        self.poll_max = poll_max_ms / 1000
        self.gather = gather_ms / 1000
        self.notified_poll_max = notified_poll_max_ms / 1000
        self.standby_interval = standby_interval
        self.retention = retention
        self.partitions = partitions
        self.replication = replication
        self.idempotent_producer = idempotent_producer
        self.active = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self, *_: object) -> None:
        """Look at the outbox now rather than at the next poll: called in-process right after a
        consumer of the same process committed rows, and on a NOTIFY on ``OUTBOX_CHANNEL``."""
        self._wake.set()

    async def run(self) -> None:
        """Run until stopped: stand by for the lock, relay while holding it, recover on errors."""
        while not self._stop.is_set():
            try:
                await self._run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox.relay_db_error", extra={"error": repr(exc)})
            except Exception:
                log.exception("outbox.relay_crashed")
            finally:
                self.active = False
                RELAY_ACTIVE.set(0)
            await self._sleep(self.standby_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _idle(self, seconds: float) -> None:
        """Sleep ``seconds`` unless woken (or stopped) first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _run_once(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await db.init_connection(conn)
            # Plan each statement with its values and the table as it is now (statistics kept
            # fresh below). A plan cached while the outbox was nearly empty scans it whole ever
            # after (measured: 360 buffers per mark-published, 0.7 ms, at 3,000 rows; retention
            # keeps days of rows).
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            # the relay publishes every tenant's events: its own connection (never pooled, never
            # lent to anything else) sees all outbox rows through row-level security
            await conn.execute("SELECT set_config('app.tenant_id', '*', false)")
            while not self._stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    break
                await self._sleep(self.standby_interval)
            if self._stop.is_set():
                return
            self.active = True
            RELAY_ACTIVE.set(1)
            log.info("outbox.relay_elected", extra={"service": self.service})
            await self._relay(conn)
        finally:
            await conn.close(timeout=2)

    async def _relay(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(OUTBOX_CHANNEL, self.wake)
        await kafka.ensure_topics(
            self.kafka_options, partitions=self.partitions, replication=self.replication
        )
        producer = kafka.producer(
            self.kafka_options,
            idempotent=self.idempotent_producer,
            client_id=f"{self.service}-relay",
        )
        await producer.start()
        # an outbox whose every insert NOTIFYs (the outbox_wake trigger) needs polling only as a
        # safety net; one written without it (orders' purchases) is polled at up to poll_max
        notified = bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger"
                " WHERE tgrelid = 'outbox'::regclass AND tgname = 'outbox_wake')"
            )
        )
        poll_max = self.notified_poll_max if notified else self.poll_max
        try:
            idle = self.poll_min
            last_cleanup = 0.0
            last_analyze, published_since = time.monotonic(), 0
            while not self._stop.is_set():
                if published_since >= ANALYZE_EVERY_ROWS and (
                    time.monotonic() - last_analyze > ANALYZE_EVERY_S
                ):
                    # the table's statistics, for the plans above: a table that grew from empty
                    # and churns (every row inserted, then updated) outruns autovacuum's analyze
                    await conn.execute("SELECT outbox_analyze()")  # ANALYZE, as the owner
                    last_analyze, published_since = time.monotonic(), 0
                self._wake.clear()  # before looking, so a wake-up during the read is not lost
                rows = await conn.fetch(
                    """
                    SELECT id, event_id, topic, key, ce_type, ce_source, ce_subject, ce_time,
                           dataschema, traceparent, data::text AS data
                    FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1
                    """,
                    self.batch_size,
                )
                if rows:
                    idle = self.poll_min
                    published_since += len(rows)
                    if not await self._publish(conn, producer, rows):
                        await self._sleep(0.5)
                    elif len(rows) < self.batch_size:
                        # a short batch: let the next one gather for a moment. Every batch costs
                        # a produce request, a fetch response to each consumer group and a
                        # transaction in each consumer, whatever its size: under load, 10 ms
                        # here instead of 2 cut the whole stack's CPU per order by ~12 % and
                        # per settlement by ~15 % (bench/), for at most that much latency
                        await self._sleep(self.gather)
                    continue
                PENDING.set(0)
                if time.monotonic() - last_cleanup > 600:
                    last_cleanup = time.monotonic()
                    await conn.execute(
                        "DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < $1",
                        datetime.now(UTC) - self.retention,
                    )
                await self._idle(idle)
                idle = min(idle * 2, poll_max)
        finally:
            await producer.stop()

    async def _publish(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, rows: list[asyncpg.Record]
    ) -> bool:
        PENDING.set(len(rows))
        futures = []
        for row in rows:
            ev = _row_event(row)
            futures.append(
                await producer.send(
                    row["topic"], value=ev.value(), key=ev.key(), headers=ev.headers()
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        done = [
            row["id"]
            for row, res in zip(rows, results, strict=True)
            if not isinstance(res, BaseException)
        ]
        failed = [res for res in results if isinstance(res, BaseException)]
        if done:
            await conn.execute(
                "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
                done,
            )
            by_topic = _Counter(
                row["topic"]
                for row, res in zip(rows, results, strict=True)
                if not isinstance(res, BaseException)
            )
            for topic, count in by_topic.items():
                PUBLISHED.labels(topic).inc(count)
        if failed:
            PUBLISH_ERRORS.inc(len(failed))
            log.warning(
                "outbox.publish_failed", extra={"failed": len(failed), "error": repr(failed[0])}
            )
            # The broker may have lost its topics (restart of a memory-only broker).
            try:
                await kafka.ensure_topics(
                    self.kafka_options, partitions=self.partitions, replication=self.replication
                )
            except Exception as exc:
                log.warning("outbox.ensure_topics_failed", extra={"error": repr(exc)})
            return False
        return True


async def replay(
    conn: asyncpg.Connection,
    *,
    since: timedelta | None = None,
    published_since: datetime | None = None,
) -> int:
    """Mark published rows unpublished, so the relay publishes them again (every tenant's): those
    created within ``since``, or those published at or after ``published_since``.

    A broker that lost its log held exactly what was published to it since it started, replays
    into it included (a replayed row's ``published_at`` is its latest publication), so
    ``published_since=<its start>`` brings back all of it, however often it restarted; a window of
    creation times cannot (rows it got from an earlier replay are older than any window)."""
    if (since is None) == (published_since is None):
        raise ValueError("replay: give exactly one of since and published_since")
    column, start = (
        ("created_at", datetime.now(UTC) - since)
        if since is not None
        else ("published_at", published_since)
    )
    async with conn.transaction():
        await db.set_tenant(conn, db.ALL_TENANTS)
        result = await conn.execute(
            f"UPDATE outbox SET published_at = NULL WHERE {column} >= $1 AND published_at IS NOT NULL",
            start,
        )
    return int(result.split()[-1])


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` → timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 1d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])
