"""Proofs of the messaging rules through real processes.

Real PostgreSQL, a real Kafka-protocol broker, real SMTP: the orders worker's relay publishes
its outbox, the notifications worker consumes and sends e-mail through the SMTP sink.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter, defaultdict

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ticketing_local.testing import wait_until
from ticketing_shared.contracts import OrderExpired, dlq_topic

from .conftest import Messaging, TcpProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_outbox_event_reaches_consumer_and_sends_one_email(messaging: Messaging) -> None:
    await messaging.start("orders")
    await messaging.start("notifications")
    paid = messaging.order_paid(1)

    (event_id,) = await messaging.emit([(paid, str(paid.order_id))])

    mails = await wait_until(
        lambda: messaging.mails(paid.buyer_email), timeout=30, message="e-mail"
    )
    assert len(mails) == 1
    assert mails[0]["to"] == [paid.buyer_email]
    assert "confirmed" in mails[0]["subject"]
    assert str(paid.order_id) in mails[0]["text"]
    published = await messaging.pools["orders"].fetchval(
        "SELECT published_at FROM outbox WHERE event_id = $1", event_id
    )
    assert published is not None


async def test_same_event_delivered_again_sends_no_second_email(messaging: Messaging) -> None:
    await messaging.start("orders")
    notifications = await messaging.start("notifications")
    paid = messaging.order_paid(2)
    (event_id,) = await messaging.emit([(paid, str(paid.order_id))])
    await wait_until(lambda: messaging.mails(paid.buyer_email), timeout=30, message="first e-mail")

    # the operator's replay re-publishes the very same event (same ce_id)
    out = messaging.cli("orders", "outbox", "replay", "--since", "10m")
    assert "1 outbox row(s)" in out

    async def seen_twice() -> bool:
        return (
            await messaging.metric(
                notifications, "consumer_events_total", ce_type="order.paid", outcome="duplicate"
            )
            >= 1
        )

    await wait_until(seen_twice, timeout=30, message="the duplicate to be consumed")
    assert len(await messaging.mails(paid.buyer_email)) == 1
    rows = await messaging.pools["notifications"].fetchval(
        "SELECT count(*) FROM deliveries WHERE event_id = $1", event_id
    )
    assert rows == 1


async def test_worker_killed_between_db_commit_and_offset_commit_applies_nothing_twice(
    messaging: Messaging, work_dir
) -> None:
    await messaging.start("orders")
    marker = work_dir / f"crash-{uuid.uuid4().hex}"
    crashing = await messaging.start(
        "notifications",
        extra_env={
            "TICKETING_CRASH_POINT": "consumer.after_commit:order.paid",
            "TICKETING_CRASH_ONCE_FILE": str(marker),
        },
        name="notifications-crashing",
    )
    paid = messaging.order_paid(3)
    (event_id,) = await messaging.emit([(paid, str(paid.order_id))])

    # the worker SIGKILLs itself right after its transaction committed, before the offset commit
    await wait_until(
        lambda: asyncio.sleep(0, crashing.exited() is not None), timeout=30, message="crash"
    )
    assert crashing.exited() == -9
    notif = messaging.pools["notifications"]
    assert await notif.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id) == 1
    assert (
        await notif.fetchval("SELECT count(*) FROM deliveries WHERE event_id = $1", event_id) == 1
    )

    # restarted: it reads the same record again (offset not committed) and applies nothing
    restarted = await messaging.start(
        "notifications",
        extra_env={
            "TICKETING_CRASH_POINT": "consumer.after_commit:order.paid",
            "TICKETING_CRASH_ONCE_FILE": str(marker),
        },
        name="notifications-restarted",
    )

    async def reread() -> bool:
        return (
            await messaging.metric(
                restarted, "consumer_events_total", ce_type="order.paid", outcome="duplicate"
            )
            >= 1
        )

    await wait_until(reread, timeout=45, message="the uncommitted record to be read again")
    await wait_until(lambda: messaging.mails(paid.buyer_email), timeout=30, message="the e-mail")
    assert len(await messaging.mails(paid.buyer_email)) == 1
    assert (
        await notif.fetchval("SELECT count(*) FROM deliveries WHERE event_id = $1", event_id) == 1
    )
    assert await messaging.metric(restarted, "consumer_events_total", outcome="applied") == 0


async def _relay_holder(procs) -> object:
    async with httpx.AsyncClient(timeout=2) as c:
        for p in procs:
            if p.exited() is None and (await c.get(p.url + "/readyz")).json().get("relay_active"):
                return p
    return None


async def test_two_workers_per_service_move_1000_events_exactly_once_in_order(
    messaging: Messaging,
) -> None:
    relays = [await messaging.start("orders", name=f"orders-worker-{i}") for i in range(2)]
    for i in range(2):
        await messaging.start("notifications", name=f"notifications-worker-{i}")
    holder = await wait_until(lambda: _relay_holder(relays), timeout=15, message="an elected relay")
    assert sum(1 for p in relays if p is holder) == 1

    orders = [uuid.uuid4() for _ in range(100)]
    emitted: list[uuid.UUID] = []
    for batch in range(20):
        events = []
        for i in range(50):
            n = batch * 50 + i
            order_id = orders[n % len(orders)]
            ev = (
                messaging.order_paid(n, order_id)
                if n % 2
                else OrderExpired(
                    order_id=order_id, tenant_id="t-demo", buyer_email=messaging.recipient(n)
                )
            )
            events.append((ev, str(order_id)))
        emitted += await messaging.emit(events)
        if batch == 10:
            # the active relay dies mid-stream; the standby must take over
            killed = await _relay_holder(relays)
            assert killed is not None
            killed.kill()

    async def all_mail() -> bool:
        return len(await messaging.mails()) >= 1000

    await wait_until(all_mail, timeout=120, interval=0.5, message="1000 e-mails")
    mails = await messaging.mails()
    assert len(mails) == 1000
    assert len({m["headers"].get("Message-ID") for m in mails}) == 1000
    assert Counter(r for m in mails for r in m["to"]) == Counter(
        messaging.recipient(n) for n in range(1000)
    )

    notif = messaging.pools["notifications"]
    assert await notif.fetchval("SELECT count(*) FROM deliveries") == 1000
    inbox = await notif.fetch("SELECT event_id, ce_subject FROM inbox ORDER BY seq")
    assert len(inbox) == 1000
    applied_order: dict[str, list[uuid.UUID]] = defaultdict(list)
    for row in inbox:
        applied_order[row["ce_subject"]].append(row["event_id"])
    rows = await messaging.pools["orders"].fetch(
        "SELECT event_id, ce_subject FROM outbox ORDER BY id"
    )
    written_order: dict[str, list[uuid.UUID]] = defaultdict(list)
    for row in rows:
        written_order[row["ce_subject"]].append(row["event_id"])
    assert applied_order == written_order
    assert sorted(map(str, emitted)) == sorted(str(r["event_id"]) for r in inbox)


async def test_broker_restart_then_outbox_replay_loses_nothing(messaging: Messaging) -> None:
    if messaging.broker is None:
        pytest.skip("restarting the broker needs the embedded broker")
    orders_worker = await messaging.start("orders")
    consumer = await messaging.start("notifications")
    before = [messaging.order_paid(f"a{i}") for i in range(5)]
    await messaging.emit([(ev, str(ev.order_id)) for ev in before])
    await wait_until(lambda: _count(messaging, "a", 5), timeout=30, message="first batch mailed")

    # consumer down; new events published but not consumed; then the broker loses everything
    consumer.stop()
    lost = [messaging.order_paid(f"b{i}") for i in range(5)]
    ids = await messaging.emit([(ev, str(ev.order_id)) for ev in lost])

    async def published() -> bool:
        return await messaging.pools["orders"].fetchval(
            "SELECT bool_and(published_at IS NOT NULL) FROM outbox WHERE event_id = ANY($1)", ids
        )

    await wait_until(published, timeout=30, message="second batch published")
    messaging.broker.restart()

    out = messaging.cli("orders", "outbox", "replay", "--since", "10m")
    assert "10 outbox row(s)" in out
    after = [messaging.order_paid(f"c{i}") for i in range(5)]
    await messaging.emit([(ev, str(ev.order_id)) for ev in after])
    await messaging.start("notifications", name="notifications-after-restart")

    for tag in ("a", "b", "c"):
        await wait_until(
            lambda tag=tag: _count(messaging, tag, 5), timeout=60, message=f"{tag} mailed"
        )
    mails = await messaging.mails()
    assert len(mails) == 15
    assert orders_worker.exited() is None


async def _count(messaging: Messaging, tag: str, n: int) -> bool:
    prefix = messaging.recipient(tag)[: -len("@example.test")]
    mails = await messaging.mails(prefix)
    return len(mails) >= n


async def test_poison_message_goes_to_dlq_after_retries_and_partition_moves_on(
    messaging: Messaging,
) -> None:
    consumer = await messaging.start("notifications", extra_env={"CONSUMER_MAX_ATTEMPTS": "3"})
    order_id = uuid.uuid4()
    poison_id = uuid.uuid4()
    producer = AIOKafkaProducer(bootstrap_servers=messaging.bootstrap, acks="all")
    await producer.start()
    try:
        # a well-formed envelope whose data breaks the handler (the template needs a number)
        headers = [
            ("ce_id", str(poison_id).encode()),
            ("ce_type", b"order.paid"),
            ("ce_source", b"orders"),
            ("ce_specversion", b"1.0"),
            ("ce_subject", str(order_id).encode()),
        ]
        bad = messaging.order_paid("poison", order_id).model_dump(mode="json")
        bad["quantity"] = 1
        bad["currency"] = None
        await producer.send_and_wait(
            "orders.events",
            key=str(order_id).encode(),
            value=json.dumps(bad).encode(),
            headers=headers,
        )
    finally:
        await producer.stop()
    good = messaging.order_paid("after-poison", order_id)
    await messaging.emit([(good, str(order_id))])
    await messaging.start("orders")

    await wait_until(
        lambda: messaging.mails(good.buyer_email), timeout=30, message="the next event"
    )
    notif = messaging.pools["notifications"]
    row = await notif.fetchrow(
        "SELECT attempts, error FROM dead_letters WHERE event_id = $1", str(poison_id)
    )
    assert row is not None
    assert row["attempts"] == 3
    assert "currency" in row["error"]

    dlq = AIOKafkaConsumer(
        dlq_topic("orders.events"),
        bootstrap_servers=messaging.bootstrap,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex}",
    )
    await dlq.start()
    try:
        msg = await asyncio.wait_for(dlq.getone(), timeout=20)
    finally:
        await dlq.stop()
    h = {k: v.decode() for k, v in msg.headers}
    assert h["ce_id"] == str(poison_id)
    assert h["dlq_consumer"] == "notifications"
    assert h["dlq_original_topic"] == "orders.events"
    assert h["dlq_error"]
    assert await messaging.metric(consumer, "consumer_events_total", outcome="dead_lettered") == 1


async def test_a_poison_message_inside_a_fetched_batch_holds_back_none_of_the_others(
    messaging: Messaging,
) -> None:
    """Records fetched together are applied in one transaction; a poison one among them makes the
    batch fall back to one-by-one: the good ones apply once, in order, the poison one is DLQ'd."""
    order_id = uuid.uuid4()
    producer = AIOKafkaProducer(bootstrap_servers=messaging.bootstrap, acks="all")
    await producer.start()
    good = [messaging.order_paid(f"batch{i}", order_id) for i in range(5)]
    poison_id = uuid.uuid4()
    try:
        for i, ev in enumerate(good):
            if i == 2:  # the poison record sits in the middle of the partition
                bad = ev.model_dump(mode="json") | {"currency": None}
                await producer.send_and_wait(
                    "orders.events",
                    key=str(order_id).encode(),
                    value=json.dumps(bad).encode(),
                    headers=_headers(poison_id, order_id),
                )
            await producer.send_and_wait(
                "orders.events",
                key=str(order_id).encode(),
                value=json.dumps(ev.model_dump(mode="json")).encode(),
                headers=_headers(uuid.uuid4(), order_id),
            )
    finally:
        await producer.stop()
    # started only now: its first fetch holds all six records
    await messaging.start("notifications", extra_env={"CONSUMER_MAX_ATTEMPTS": "2"})

    async def all_mailed() -> bool:
        return len(await messaging.mails("-batch")) >= 5

    await wait_until(all_mailed, timeout=60, message="the five good events mailed")
    assert sorted(m["to"][0] for m in await messaging.mails("-batch")) == sorted(
        ev.buyer_email for ev in good
    )
    notif = messaging.pools["notifications"]
    assert (
        await notif.fetchval(
            "SELECT count(*) FROM dead_letters WHERE event_id = $1", str(poison_id)
        )
        == 1
    )
    inbox = [
        r["ce_subject"] for r in await notif.fetch("SELECT ce_subject FROM inbox ORDER BY seq")
    ]
    assert inbox == [str(order_id)] * 5


def _headers(event_id: uuid.UUID, order_id: uuid.UUID) -> list[tuple[str, bytes]]:
    return [
        ("ce_id", str(event_id).encode()),
        ("ce_type", b"order.paid"),
        ("ce_source", b"orders"),
        ("ce_specversion", b"1.0"),
        ("ce_subject", str(order_id).encode()),
    ]


async def _group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` past the offsets ``group`` committed (what a restart would re-read).

    The topic is read to its end (its last offsets, as the broker's own end offsets are not
    relied on) and the committed offsets are fetched by a consumer of that group id that is
    assigned partitions by hand, so it never joins the group."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    await member.start()
    try:
        await reader.topics()  # fills the metadata
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        assert tps, f"no partitions for {topic}"
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = dict.fromkeys(tps, 0)
        while batch := await reader.getmany(timeout_ms=1000):
            for tp, records in batch.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
        member.assign(tps)
        lag = 0
        for tp, end in ends.items():
            lag += end - ((await member.committed(tp)) or 0)
        return lag
    finally:
        await reader.stop()
        await member.stop()


async def test_a_batch_the_database_could_not_take_is_read_again_once_it_is_back(
    messaging: Messaging,
) -> None:
    """The notifications database goes away (every connection dropped, new ones refused) while
    events arrive: the worker does not acknowledge what it could not apply, nor dead-letter it;
    once the database is back, each event is applied once and mailed once."""
    for p in messaging.processes:
        p.stop()
    await messaging.start("orders")
    notifications_dsn = messaging.dsn["notifications"]
    target = re.search(r"@([^:/]+):(\d+)/", notifications_dsn)
    assert target is not None
    proxy = await TcpProxy(target.group(1), int(target.group(2))).start()
    worker = await messaging.start(
        "notifications",
        extra_env={"NOTIFICATIONS_DATABASE_URL": proxy.dsn(notifications_dsn)},
        name="notifications-behind-proxy",
    )
    try:
        first = messaging.order_paid("outage-before")
        await messaging.emit([(first, str(first.order_id))])
        await wait_until(lambda: messaging.mails(first.buyer_email), timeout=30, message="mail 1")
        # The sender marks a delivery sent right after the server accepted it; a cut between the
        # two would have it sent again once the database is back (e-mail is at least once). Cut
        # only after the mark committed, so that each mail below is expected exactly once.
        notif = messaging.pools["notifications"]
        await wait_until(
            lambda: notif.fetchval(
                "SELECT status = 'sent' FROM deliveries WHERE recipient = $1", first.buyer_email
            ),
            timeout=30,
            message="mail 1 marked sent",
        )

        await proxy.cut()
        during = [messaging.order_paid(f"outage-{i}") for i in range(3)]
        await messaging.emit([(ev, str(ev.order_id)) for ev in during])
        await wait_until(
            lambda: asyncio.sleep(
                0, "consumer.infrastructure_unavailable" in worker.log_path.read_text()
            ),
            timeout=30,
            message="the worker to meet the outage",
        )
        await proxy.restore()

        for ev in during:
            await wait_until(
                lambda ev=ev: messaging.mails(ev.buyer_email), timeout=45, message="mail after"
            )
        for ev in [first, *during]:
            assert len(await messaging.mails(ev.buyer_email)) == 1
        assert await messaging.metric(worker, "consumer_events_total", outcome="applied") == 4
        assert await messaging.metric(worker, "consumer_events_total", outcome="dead_lettered") == 0
        assert await notif.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        worker.stop()
        await proxy.cut()


async def test_applied_offsets_are_committed_in_the_background_and_flushed_at_shutdown(
    messaging: Messaging,
) -> None:
    """Offsets are committed off the consume loop: with a commit interval far beyond the test,
    a graceful stop still commits every applied batch, so a restart re-reads nothing; with the
    default interval they are committed while the worker runs."""
    for p in messaging.processes:
        p.stop()
    await messaging.start("orders")
    worker = await messaging.start(
        "notifications",
        extra_env={"CONSUMER_COMMIT_INTERVAL_MS": "600000"},
        name="notifications-flush",
    )
    events = [messaging.order_paid(f"flush-{i}") for i in range(12)]
    await messaging.emit([(ev, str(ev.order_id)) for ev in events])

    async def all_mailed() -> bool:
        return all([await messaging.mails(ev.buyer_email) for ev in events])

    await wait_until(all_mailed, timeout=45, message="every e-mail")
    worker.stop()  # SIGTERM: the worker commits what it applied before it leaves
    assert await _group_lag(messaging.bootstrap, "notifications", "orders.events") == 0

    restarted = await messaging.start("notifications", name="notifications-after-flush")
    more = [messaging.order_paid(f"flush-more-{i}") for i in range(3)]
    await messaging.emit([(ev, str(ev.order_id)) for ev in more])

    async def committed_while_running() -> bool:
        return await _group_lag(messaging.bootstrap, "notifications", "orders.events") == 0 and all(
            [await messaging.mails(ev.buyer_email) for ev in more]
        )

    await wait_until(committed_while_running, timeout=45, message="offsets committed")
    assert await messaging.metric(restarted, "consumer_events_total", outcome="duplicate") == 0
    assert await messaging.metric(restarted, "consumer_events_total", outcome="applied") == 3


async def test_a_position_beyond_the_end_of_the_log_reads_the_log_from_its_start(
    messaging: Messaging,
) -> None:
    """The group's committed offsets lie past the end of the log (they came from a longer log
    the broker lost). The consumer does not wait for the log to grow past them, skipping what
    is there: it reads the log from its start (the inbox skips what it had), says so in its log
    and metrics, and its committed offsets come back inside the log."""
    for p in messaging.processes:
        p.stop()
    await messaging.start("orders")
    events = [messaging.order_paid(f"beyond-{i}") for i in range(5)]
    ids = await messaging.emit([(ev, str(ev.order_id)) for ev in events])

    async def published() -> bool:
        return await messaging.pools["orders"].fetchval(
            "SELECT bool_and(published_at IS NOT NULL) FROM outbox WHERE event_id = ANY($1)", ids
        )

    await wait_until(published, timeout=30, message="events published")
    stale = AIOKafkaConsumer(
        bootstrap_servers=messaging.bootstrap, group_id="notifications", enable_auto_commit=False
    )
    await stale.start()
    try:
        await stale.topics()
        tps = [
            TopicPartition("orders.events", p)
            for p in stale.partitions_for_topic("orders.events") or ()
        ]
        stale.assign(tps)
        await stale.commit(dict.fromkeys(tps, 100_000))
    finally:
        await stale.stop()

    worker = await messaging.start("notifications", name="notifications-beyond-end")

    async def all_mailed() -> bool:
        return all([await messaging.mails(ev.buyer_email) for ev in events])

    await wait_until(all_mailed, timeout=45, message="every e-mail of the log")
    assert (
        await messaging.metric(worker, "consumer_position_resets_total", reason="beyond_end") >= 1
    )
    assert "consumer.position_reset" in worker.log_path.read_text()

    async def back_inside() -> bool:
        return await _group_lag(messaging.bootstrap, "notifications", "orders.events") >= 0

    await wait_until(back_inside, timeout=30, message="committed offsets inside the log")
