"""Use cases: queue an e-mail for an event (in the consumer's transaction), send due e-mails."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from ticketing_shared.invite_links import InviteLinks
from ticketing_shared.outbox import new_event_id

from . import repository
from .clients.smtp import DeliveryError, Mail, SmtpMailer
from .templates import render

log = logging.getLogger(__name__)

SENT = Counter("emails_sent_total", "E-mails accepted by the SMTP server", ["template"])
FAILED = Counter("email_attempts_failed_total", "E-mail delivery attempts that failed")


async def queue_email(
    conn: asyncpg.Connection,
    *,
    event_id: UUID,
    tenant_id: str,
    template: str,
    recipient: str,
    locale: str | None,
    order_id: UUID | None,
    context: dict[str, Any],
) -> bool:
    """Render and queue one e-mail; a second call for the same (event, template, recipient) is a no-op."""
    if not recipient:
        log.warning("email.no_recipient", extra={"template": template, "order_id": str(order_id)})
        return False
    rendered = render(template, locale, context)
    return await repository.insert_delivery(
        conn,
        delivery_id=new_event_id(),
        event_id=event_id,
        tenant_id=tenant_id,
        template=template,
        recipient=recipient,
        locale=rendered.locale,
        order_id=order_id,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
    )


class Sender:
    """Sends due deliveries; woken right after a consumer queued one, else polls."""

    def __init__(
        self,
        mailer: SmtpMailer,
        *,
        links: InviteLinks,
        batch: int = 20,
        max_attempts: int = 8,
        backoff_s: float = 1.0,
        idle_poll_s: float = 0.05,
        concurrency: int = 1,
    ) -> None:
        self.mailer = mailer
        self.links = links  # queued mails hold invite markers: the tokens go in as they leave
        self.batch = batch
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._queued = 0

    def wake(self, *_: Any) -> None:
        """A delivery was queued (called after its transaction committed)."""
        self._queued += 1
        self._wake.set()

    async def run(self, pool: asyncpg.Pool, stopping: asyncio.Event) -> None:
        """``concurrency`` loops, each claiming its own batch (``SKIP LOCKED``): one SMTP session
        waiting on the server does not hold back the next batch."""
        await asyncio.gather(*(self._loop(pool, stopping) for _ in range(self.concurrency)))

    async def _loop(self, pool: asyncpg.Pool, stopping: asyncio.Event) -> None:
        # One loop takes each wake-up (the others go back to sleep rather than all claiming
        # nothing); a full batch wakes a sibling for the rest; the idle poll finds retries. A
        # batch that was not full took everything due: what is queued meanwhile wakes a loop
        # (``_queued``), so looking again at once would only claim nothing.
        look = True
        while not stopping.is_set():
            if look or self._queued:
                self._queued = 0
                sent = await self.send_due(pool)
                look = False
                if sent >= self.batch:
                    self.wake()
                continue
            self._wake.clear()
            if self._queued:  # queued between the look above and the clear
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll_s)
            except TimeoutError:
                look = True

    async def send_due(self, pool: asyncpg.Pool) -> int:
        """Send one batch of due deliveries, holding their row locks while sending."""
        async with pool.acquire() as conn, conn.transaction():
            rows = await repository.claim_due(conn, limit=self.batch)
            if not rows:
                return 0
            results = await self.mailer.send_many([_mail(row, self.links) for row in rows])
            SENT.labels("any").inc(sum(1 for r in results if r is None))
            await repository.mark_sent(
                conn,
                [row["id"] for row, result in zip(rows, results, strict=True) if result is None],
            )
            for row, result in zip(rows, results, strict=True):
                if result is None:
                    continue
                FAILED.inc()
                attempts = row["attempts"] + 1
                permanent = isinstance(result, DeliveryError) and result.permanent
                retry_at = None
                if not permanent and attempts < self.max_attempts:
                    retry_at = datetime.now(UTC) + timedelta(
                        seconds=self.backoff_s * 2 ** (attempts - 1)
                    )
                log.warning(
                    "email.delivery_failed",
                    extra={
                        "delivery_id": str(row["id"]),
                        "attempts": attempts,
                        "error": repr(result),
                        "gave_up": retry_at is None,
                    },
                )
                await repository.mark_attempt_failed(
                    conn, row["id"], error=repr(result), retry_at=retry_at
                )
            return len(rows)


def _mail(row: asyncpg.Record, links: InviteLinks) -> Mail:
    return Mail(
        message_id=f"<{row['id']}@ticketing.local>",
        to=row["recipient"],
        subject=row["subject"],
        text=links.fill(row["body_text"]),
        html=links.fill(row["body_html"]) if row["body_html"] else None,
    )
