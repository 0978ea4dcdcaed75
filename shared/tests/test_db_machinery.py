"""Migrations, idempotency keys and the outbox relay on a real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from ticketing_local.testing import wait_until
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db, idempotency, kafka, outbox
from ticketing_shared.contracts import ORDERS_EVENTS, OrderExpired
from ticketing_shared.envelope import decode
from ticketing_shared.errors import IdempotencyKeyReused

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]


async def test_concurrent_migration_runs_apply_each_migration_once(infra: Infra) -> None:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    owner = db.owner_role(name)
    await db.ensure_database(infra.pg_admin_dsn, name, owner=owner, runtime=name)
    dsn = db.role_dsn(infra.pg_admin_dsn, name, owner)
    migs = db.shared_migrations()
    numbered = [m for m in migs if not m.repeatable]
    results = await asyncio.gather(*(db.migrate(dsn, migs, runtime_role=name) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(numbered)]
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(numbered)
    finally:
        await conn.close()


@pytest.fixture
async def dsn(infra: Infra) -> str:
    return await infra.fresh_database("machinery", db.shared_migrations())


@pytest.fixture
async def pool(dsn: str):
    p = await db.create_pool(dsn, min_size=1, max_size=8)
    yield p
    await p.close()


async def test_idempotency_key_replays_first_response_and_refuses_other_body(
    pool: asyncpg.Pool,
) -> None:
    fp = idempotency.request_hash("POST", "/v1/x", {"a": 1})
    async with db.transaction(pool, tenant_id="t1") as conn:
        assert (
            await idempotency.begin(conn, scope="u1", key="k1", fingerprint=fp, tenant="t1") is None
        )
        await idempotency.complete(conn, scope="u1", key="k1", status=201, body={"id": "r1"})
    async with db.transaction(pool, tenant_id="t1") as conn:
        stored = await idempotency.begin(conn, scope="u1", key="k1", fingerprint=fp, tenant="t1")
    assert stored == idempotency.StoredResponse(201, {"id": "r1"})
    other = idempotency.request_hash("POST", "/v1/x", {"a": 2})
    with pytest.raises(IdempotencyKeyReused):
        async with db.transaction(pool, tenant_id="t1") as conn:
            await idempotency.begin(conn, scope="u1", key="k1", fingerprint=other, tenant="t1")
    # the same key in another scope (another caller) is unrelated
    async with db.transaction(pool, tenant_id="t1") as conn:
        assert (
            await idempotency.begin(conn, scope="u2", key="k1", fingerprint=other, tenant="t1")
            is None
        )


async def test_concurrent_same_key_creates_once_and_replays_to_the_rest(pool: asyncpg.Pool) -> None:
    fp = idempotency.request_hash("POST", "/v1/x", {"a": 1})
    created = []

    async def request(i: int) -> object:
        async with db.transaction(pool, tenant_id="t1") as conn:
            stored = await idempotency.begin(
                conn, scope="u", key="race", fingerprint=fp, tenant="t1"
            )
            if stored is not None:
                return stored.body
            await asyncio.sleep(
                0.05
            )  # the creation takes a while: the others must wait, not create
            created.append(i)
            body = {"id": f"r{i}"}
            await idempotency.complete(conn, scope="u", key="race", status=201, body=body)
            return body

    bodies = await asyncio.gather(*(request(i) for i in range(6)))
    assert len(created) == 1
    assert all(b == {"id": f"r{created[0]}"} for b in bodies)


async def test_a_failed_first_attempt_releases_the_key(pool: asyncpg.Pool) -> None:
    fp = idempotency.request_hash("POST", "/v1/x", {})
    with pytest.raises(RuntimeError):
        async with db.transaction(pool, tenant_id="t1") as conn:
            await idempotency.begin(conn, scope="u", key="retry", fingerprint=fp, tenant="t1")
            raise RuntimeError("inventory_exhausted")
    async with db.transaction(pool, tenant_id="t1") as conn:
        assert (
            await idempotency.begin(conn, scope="u", key="retry", fingerprint=fp, tenant="t1")
            is None
        )


async def test_only_one_relay_is_active_and_a_standby_takes_over(
    infra: Infra, dsn: str, pool: asyncpg.Pool
) -> None:
    topic_check = f"relay-{uuid.uuid4().hex[:6]}"
    relays = [
        outbox.OutboxRelay(
            dsn=dsn,
            kafka_options=kafka.plaintext_options(infra.bootstrap),
            service=topic_check,
            standby_interval=0.1,
        )
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await wait_until(
            lambda: asyncio.sleep(0, any(r.active for r in relays)), timeout=15, message="a leader"
        )
        await asyncio.sleep(0.3)
        assert sum(r.active for r in relays) == 1
        leader = next(r for r in relays if r.active)
        standby = next(r for r in relays if not r.active)

        order_ids = [uuid.uuid4() for _ in range(5)]
        written: dict[str, list[uuid.UUID]] = defaultdict(list)
        for round_ in range(2):
            async with db.transaction(pool, tenant_id="t") as conn:
                for oid in order_ids:
                    ev = OrderExpired(order_id=oid, tenant_id="t", buyer_email=f"{round_}@x")
                    written[str(oid)].append(
                        await outbox.emit(conn, ev, subject=oid, source="test")
                    )
            if round_ == 0:
                await wait_until(
                    lambda: _all_published(pool), timeout=15, message="first round published"
                )
                leader.stop()
                await wait_until(
                    lambda: asyncio.sleep(0, standby.active),
                    timeout=15,
                    message="standby takes over",
                )
        await wait_until(lambda: _all_published(pool), timeout=15, message="second round published")

        seen = await _read_topic(infra.bootstrap, {e for ids in written.values() for e in ids})
        for oid, ids in written.items():
            assert [e for e in seen[oid] if e in ids] == ids
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)


async def test_an_outbox_with_the_wake_trigger_wakes_its_idle_relay_at_every_insert(
    infra: Infra, dsn: str, pool: asyncpg.Pool
) -> None:
    """With every poll 30 s apart, a row is published at once only because its insert woke the
    relay (the trigger the payments, refunds and notifications outboxes carry)."""
    owner = await asyncpg.connect(infra.owner_dsn(dsn))  # DDL is the owner's
    try:
        await owner.execute((REPO / "services/refunds/migrations/0002_outbox_wake.sql").read_text())
    finally:
        await owner.close()
    relay = outbox.OutboxRelay(
        dsn=dsn,
        kafka_options=kafka.plaintext_options(infra.bootstrap),
        service="wake",
        poll_min_ms=30000,
        poll_max_ms=30000,
        notified_poll_max_ms=30000,
    )
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: asyncio.sleep(0, relay.active), timeout=15, message="active")
        await wait_until(lambda: _all_published(pool), timeout=15, message="nothing pending")
        await asyncio.sleep(0.2)  # the relay is now in its 30 s idle wait
        async with db.transaction(pool, tenant_id="t") as conn:
            oid = uuid.uuid4()
            ev = OrderExpired(order_id=oid, tenant_id="t", buyer_email="wake@x")
            await outbox.emit(conn, ev, subject=oid, source="test")
        await wait_until(lambda: _all_published(pool), timeout=5, message="woken, published")
    finally:
        relay.stop()
        await task


async def _all_published(pool: asyncpg.Pool) -> bool:
    rows = await _peek(pool, "SELECT count(*) = 0 AS done FROM outbox WHERE published_at IS NULL")
    return bool(rows[0]["done"])


async def _read_topic(bootstrap: str, wanted: set[uuid.UUID]) -> dict[str, list[uuid.UUID]]:
    consumer = AIOKafkaConsumer(
        ORDERS_EVENTS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
    )
    await consumer.start()
    seen: dict[str, list[uuid.UUID]] = defaultdict(list)
    got: set[uuid.UUID] = set()
    try:
        async with asyncio.timeout(30):
            while not wanted <= got:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        ev = decode(list(r.headers), r.value)
                        seen[ev.subject].append(ev.id)
                        got.add(ev.id)
    finally:
        await consumer.stop()
    return seen


async def test_replay_requeues_only_rows_since_the_given_time(pool: asyncpg.Pool) -> None:
    async with db.transaction(pool, tenant_id="t") as conn:
        for age in (1, 30, 120):
            eid = await outbox.emit(
                conn, OrderExpired(order_id=uuid.uuid4(), tenant_id="t"), subject="s", source="t"
            )
            await conn.execute(
                "UPDATE outbox SET created_at = $2, published_at = now() WHERE event_id = $1",
                eid,
                datetime.now(UTC) - timedelta(minutes=age),
            )
        count = await outbox.replay(conn, since=timedelta(minutes=45))
    assert count == 2


async def test_replay_by_publication_requeues_what_a_lost_broker_held(pool: asyncpg.Pool) -> None:
    """A broker that started at T held every row published since T, whenever it was created (a
    row replayed into it is old, but was published to it): exactly those go out again."""
    now = datetime.now(UTC)
    async with db.transaction(pool, tenant_id="t") as conn:
        ids = {}
        for name, created, published in (
            ("old-replayed-into-it", 600, 30),
            ("published-to-it", 20, 10),
            ("published-before-it", 600, 300),
        ):
            ids[name] = await outbox.emit(
                conn, OrderExpired(order_id=uuid.uuid4(), tenant_id="t"), subject="s", source="t"
            )
            await conn.execute(
                "UPDATE outbox SET created_at = $2, published_at = $3 WHERE event_id = $1",
                ids[name],
                now - timedelta(minutes=created),
                now - timedelta(minutes=published),
            )
        count = await outbox.replay(conn, published_since=now - timedelta(minutes=45))
        unpublished = {
            r["event_id"]
            for r in await conn.fetch(
                "SELECT event_id FROM outbox WHERE event_id = ANY($1) AND published_at IS NULL",
                list(ids.values()),
            )
        }
    assert count == 2
    assert unpublished == {ids["old-replayed-into-it"], ids["published-to-it"]}


async def test_a_fetched_batch_is_claimed_and_applied_in_one_go_duplicates_once(
    pool: asyncpg.Pool,
) -> None:
    """The batch path itself (not its one-by-one fallback): every event applied once, in order,
    a copy of an event inside the same batch skipped, a replayed batch changing nothing."""
    from ticketing_shared.consumer import EventConsumer, Record
    from ticketing_shared.envelope import CloudEvent

    consumer = EventConsumer("batch-test")
    applied: list[str] = []

    @consumer.on(OrderExpired)
    async def on_expired(conn: asyncpg.Connection, data: OrderExpired, event: CloudEvent) -> None:
        applied.append(str(data.order_id))

    async def no_fallback(record: Record) -> None:
        raise AssertionError("the batch fell back to one-by-one")

    consumer.handle = no_fallback  # type: ignore[method-assign]
    consumer.bind(pool, None)  # type: ignore[arg-type]
    orders = [uuid.uuid4() for _ in range(5)]
    events = [
        CloudEvent(
            id=uuid.uuid4(),
            type=OrderExpired.ce_type,
            source="test",
            subject=str(o),
            time=datetime.now(UTC),
            data=OrderExpired(order_id=o, tenant_id="t").model_dump(mode="json"),
        )
        for o in orders
    ]
    batch = [
        Record(ORDERS_EVENTS, 0, i, e.key(), e.value(), e.headers())
        for i, e in enumerate([*events, events[1]])
    ]
    await consumer.handle_batch(batch)
    assert applied == [str(o) for o in orders]
    await consumer.handle_batch(batch)
    assert applied == [str(o) for o in orders]
    rows = await _peek(
        pool, "SELECT event_id, tenant_id FROM inbox WHERE consumer = 'batch-test' ORDER BY seq"
    )
    assert [(r["event_id"], r["tenant_id"]) for r in rows] == [(e.id, "t") for e in events]
    # row-level security: unscoped, the claims are not there at all
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0


async def test_a_batch_route_applies_consecutive_events_of_its_type_in_one_call_in_order(
    pool: asyncpg.Pool,
) -> None:
    """Runs of one type go to its batch handler together; an event of another type between them
    splits the runs, so the order of effects is the order of the records; duplicates are left
    out; a record applied on its own comes as a list of one."""
    from ticketing_shared.consumer import EventConsumer, Record
    from ticketing_shared.contracts import OrderCancelled
    from ticketing_shared.envelope import CloudEvent

    consumer = EventConsumer("batch-route-test")
    calls: list[tuple[str, list[str]]] = []

    @consumer.on_batch(OrderExpired)
    async def on_expired(
        conn: asyncpg.Connection, items: list[tuple[OrderExpired, CloudEvent]]
    ) -> None:
        calls.append(("expired", [str(data.order_id) for data, _ in items]))

    @consumer.on(OrderCancelled)
    async def on_cancelled(
        conn: asyncpg.Connection, data: OrderCancelled, event: CloudEvent
    ) -> None:
        calls.append(("cancelled", [str(data.order_id)]))

    consumer.bind(pool, None)  # type: ignore[arg-type]

    def event(data: OrderExpired | OrderCancelled) -> CloudEvent:
        return CloudEvent(
            id=uuid.uuid4(),
            type=data.ce_type,
            source="test",
            subject=str(data.order_id),
            time=datetime.now(UTC),
            data=data.model_dump(mode="json"),
        )

    o = [uuid.uuid4() for _ in range(5)]
    events = [
        event(OrderExpired(order_id=o[0], tenant_id="t")),
        event(OrderExpired(order_id=o[1], tenant_id="t")),
        event(OrderCancelled(order_id=o[2], tenant_id="t", reason="user")),
        event(OrderExpired(order_id=o[3], tenant_id="t")),
        event(OrderExpired(order_id=o[4], tenant_id="t")),
    ]
    records = [
        Record(ORDERS_EVENTS, 0, i, e.key(), e.value(), e.headers())
        for i, e in enumerate([*events, events[3]])
    ]
    await consumer.handle_batch(records[:1])  # already applied: a duplicate in the batch below
    await consumer.handle_batch(records)
    assert calls == [
        ("expired", [str(o[0])]),
        ("expired", [str(o[1])]),
        ("cancelled", [str(o[2])]),
        ("expired", [str(o[3]), str(o[4])]),
    ]


async def test_the_inbox_claim_scopes_each_transaction_to_its_events_tenants(
    pool: asyncpg.Pool,
) -> None:
    """The claim scopes the transaction to its events' tenants in the same statement; in a batch
    of several tenants, each handler finds the scope narrowed to its own event's tenant (a
    handler's own ``set_tenant()`` then sends nothing)."""
    from ticketing_shared.consumer import EventConsumer, Record
    from ticketing_shared.envelope import CloudEvent

    consumer = EventConsumer("scoped-test")
    seen: list[tuple[str, str, int]] = []

    @consumer.on(OrderExpired)
    async def on_expired(conn: asyncpg.Connection, data: OrderExpired, event: CloudEvent) -> None:
        found = await conn.fetchval("SELECT coalesce(current_setting('app.tenant_id', true), '')")
        sent: list[str] = []

        def log(record: object) -> None:
            sent.append(str(record))

        conn.add_query_logger(log)
        try:
            await db.set_tenant(conn, data.tenant_id)
        finally:
            conn.remove_query_logger(log)
        after = await conn.fetchval("SELECT coalesce(current_setting('app.tenant_id', true), '')")
        assert after == data.tenant_id
        seen.append((found, after, len(sent)))

    consumer.bind(pool, None)  # type: ignore[arg-type]

    def record(i: int, tenant: str) -> Record:
        e = CloudEvent(
            id=uuid.uuid4(),
            type=OrderExpired.ce_type,
            source="test",
            subject=str(uuid.uuid4()),
            time=datetime.now(UTC),
            data=OrderExpired(order_id=uuid.uuid4(), tenant_id=tenant).model_dump(mode="json"),
        )
        return Record(ORDERS_EVENTS, 0, i, e.key(), e.value(), e.headers())

    await consumer.handle(record(0, "t1"))  # on its own
    assert seen == [("t1", "t1", 0)]
    seen.clear()
    await consumer.handle_batch([record(1, "t3"), record(2, "t3")])  # one tenant's batch
    assert seen == [("t3", "t3", 0), ("t3", "t3", 0)]
    seen.clear()
    # a batch of two tenants: the claim scopes to both, each handler runs under its own
    await consumer.handle_batch([record(3, "t1"), record(4, "t1"), record(5, "t2")])
    assert seen == [("t1", "t1", 0), ("t1", "t1", 0), ("t2", "t2", 0)]


async def test_an_event_naming_all_tenants_cannot_widen_a_claims_scope(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="all tenants"):
            db.scoped_by_claim(conn, {"t1", "*"})


async def _peek(pool: asyncpg.Pool, sql: str, *args: object) -> list[asyncpg.Record]:
    """What every tenant's rows say (the all-tenants scope, as an operator would look)."""
    async with db.transaction(pool, tenant_id=db.ALL_TENANTS) as conn:
        return list(await conn.fetch(sql, *args))


async def test_the_pool_serves_waiting_callers_first_come_first_served(dsn: str) -> None:
    """Callers keep arriving faster than two connections can serve them: each is served in its
    turn, none overtaken by later arrivals (a flash sale's buyers, first come, first served)."""
    small = await db.create_pool(dsn, min_size=2, max_size=2)
    served: list[int] = []

    async def caller(n: int) -> None:
        async with small.acquire() as conn:
            served.append(n)
            await conn.execute("SELECT pg_sleep(0.01)")

    try:
        callers = []
        for n in range(60):
            callers.append(asyncio.create_task(caller(n)))
            await asyncio.sleep(0.002)  # 500 arrivals/s against ~200 served/s: a queue builds
        await asyncio.gather(*callers)
    finally:
        await small.close()
    assert sorted(served) == list(range(60))
    overtaken = {n: sum(1 for m in served[: served.index(n)] if m > n) for n in range(60)}
    assert max(overtaken.values()) == 0, overtaken
