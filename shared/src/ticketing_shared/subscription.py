"""The Kafka side of a consumer: ONE aiokafka consumer (group = the consumer's inbox name) for all
of its topics, fetching batches and handing them to :class:`~ticketing_shared.consumer.EventConsumer`.

One fetch covers every assigned partition, so an idle worker polls the broker once per fetch
wait rather than once per topic. The poll itself is the wait: ``getmany`` returns as soon as
records arrive. A batch's offsets become committable once its transaction committed (the
:class:`~ticketing_shared.worker.OffsetCommitter` commits them in the background); a batch that
could not be applied is rewound, each partition to its first record, and read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from . import kafka
from .consumer import EventConsumer, InfrastructureUnavailable, Record
from .settings import ServiceSettings

if TYPE_CHECKING:
    from .worker import OffsetCommitter

log = logging.getLogger(__name__)
#: the pause after the broker could not be fetched from, or a batch failed unexpectedly
RETRY_PAUSE_S = 1.0


class Subscription:
    """An :class:`EventConsumer`'s records, fetched from Kafka and applied in batches."""

    def __init__(
        self,
        consumer: EventConsumer,
        committer: OffsetCommitter,
        settings: ServiceSettings,
        kafka_options: dict[str, Any],
    ) -> None:
        self.consumer = consumer
        self.committer = committer
        self.settings = settings
        self.kafka_options = kafka_options
        self.client: AIOKafkaConsumer | None = None  # made in start(), inside the event loop
        self.batch_max = settings.consumer_batch_max
        self.batch_wait_s = settings.consumer_batch_wait_ms / 1000
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._applying = False

    @property
    def topics(self) -> list[str]:
        return self.consumer.topics

    async def start(self) -> None:
        """Join the group and start fetching (raises when the broker cannot be reached)."""
        self.client = client = kafka.consumer(
            self.kafka_options,
            group_id=self.consumer.name,
            client_id=f"{self.settings.service_name}-worker",
            # a new group, or one whose offsets a restarted memory-only broker lost, reads from
            # the start: the inbox absorbs the repeats
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        client.subscribe(self.topics, listener=self.committer)
        await client.start()
        self.committer.consumer = client
        self._task = asyncio.create_task(self._run(client), name=f"consume-{self.consumer.name}")

    async def stop_fetching(self) -> None:
        """Stop fetching: a fetch in progress is abandoned, a batch being applied finishes."""
        self._stopping = True
        if self._task is None:
            return
        if not self._applying:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def stop(self) -> None:
        """Leave the group (after :meth:`stop_fetching`, and the committer's last commit)."""
        await self.stop_fetching()
        if self.client is not None:
            await self.client.stop()

    async def _run(self, client: AIOKafkaConsumer) -> None:
        while not self._stopping:
            started = time.monotonic()
            try:
                fetched = await client.getmany(
                    timeout_ms=int(self.batch_wait_s * 1000), max_records=self.batch_max
                )
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.error(
                    "consumer.fetch_failed",
                    extra={"consumer": self.consumer.name, "error": repr(exc)},
                )
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            records = tuple(chain.from_iterable(fetched.values()))
            if records:
                self._applying = True
                try:
                    await self._apply(client, records)
                finally:
                    self._applying = False
                continue
            # a poll that came back empty early (no assignment yet) waits out the rest
            rest = self.batch_wait_s - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    async def _apply(self, client: AIOKafkaConsumer, records: Sequence[ConsumerRecord]) -> None:
        """Apply one batch (one transaction; one by one if any record fails)."""
        try:
            await self.consumer.handle_batch(
                [
                    Record(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value,
                        headers=list(r.headers or ()),
                    )
                    for r in records
                ]
            )
        except InfrastructureUnavailable:
            self._rewind(client, records)  # the database is away: the same records again, later
            return
        except Exception:
            log.exception("consumer.batch_crashed", extra={"consumer": self.consumer.name})
            self._rewind(client, records)
            await asyncio.sleep(RETRY_PAUSE_S)
            return
        self.committer.applied(client, records)

    def _rewind(self, client: AIOKafkaConsumer, records: Sequence[ConsumerRecord]) -> None:
        """Each partition of the batch back to its first record, so none is committed past a
        record that was not applied."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            client.seek(tp, offset)
