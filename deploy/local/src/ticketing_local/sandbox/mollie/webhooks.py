"""Classic webhooks (B2): ``POST {webhookUrl}`` with the form body ``id=tr_…`` and nothing else.

No signature and no status: the receiver must fetch the payment. Only an HTTP ``200`` within
``webhook_timeout_s`` (15 s) counts as delivered — another 2xx, a redirect (never followed) or a
late answer does not. Failed calls are retried after 1m, 2m, 4m, 8m, 16m, 29m, 1h, 2h and 22h (10
attempts in all) multiplied by ``time_scale``, then given up. Each trigger (a payment status, a
refund transition) is one :class:`~.state.Delivery` with its attempts; redeliveries on demand are
recorded as their own delivery.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlencode

from .config import LOGGER_NAME
from .state import Delivery, Payment, SandboxState
from .wire import Json, iso, iso_ms, new_id, now

log = logging.getLogger(LOGGER_NAME)

FORM = "application/x-www-form-urlencoded"


class Webhooks(SandboxState):
    """The webhook layer of :class:`~.sandbox.MollieSandbox`."""

    def fire(self, payment: Payment, trigger: str, refund_id: str | None = None) -> Delivery | None:
        """Record a webhook call for ``payment`` and deliver it in the background (no
        ``webhookUrl``, no call)."""
        if not payment.webhook_url:
            return None
        delivery = Delivery(
            id=new_id("whd_"),
            payment_id=payment.id,
            refund_id=refund_id,
            url=payment.webhook_url,
            trigger=trigger,
            created_at=now(),
        )
        self._deliveries[delivery.id] = delivery
        self._spawn(self._deliver(delivery), name=f"mollie-webhook-{delivery.id}")
        return delivery

    async def _deliver(self, delivery: Delivery) -> None:
        schedule = self.config.retry_schedule_s
        for attempt in range(len(schedule) + 1):
            if attempt:
                await asyncio.sleep(schedule[attempt - 1] * self.config.time_scale)
            if await self._attempt(delivery, "scheduled"):
                delivery.state = "delivered"
                return
        delivery.state = "failed"
        log.warning("webhook %s (%s) to %s given up", delivery.id, delivery.trigger, delivery.url)

    async def _attempt(self, delivery: Delivery, kind: str) -> bool:
        """POST ``id=tr_…`` once; record and return whether it counts as delivered."""
        body = urlencode({"id": delivery.payment_id}).encode("ascii")
        record: Json = {
            "n": len(delivery.attempts) + 1,
            "kind": kind,
            "at": iso_ms(now()),
            "status_code": None,
            "error": None,
            "elapsed_ms": None,
            "delivered": False,
        }
        status = await self._background.post(
            delivery.url,
            body,
            {"Content-Type": FORM},
            timeout_s=self.config.webhook_timeout_s,
            record=record,
        )
        record["delivered"] = status == 200
        delivery.attempts.append(record)
        log.info(
            "webhook %s (%s, %s) attempt %d → %s",
            delivery.payment_id,
            delivery.trigger,
            kind,
            record["n"],
            record["status_code"] or record["error"],
        )
        return bool(record["delivered"])

    async def redeliver(self, payment: Payment, times: int) -> Delivery:
        """Call the webhook ``times`` times now, one after the other (duplicate deliveries)."""
        assert payment.webhook_url is not None
        delivery = Delivery(
            id=new_id("whd_"),
            payment_id=payment.id,
            refund_id=None,
            url=payment.webhook_url,
            trigger="redeliver",
            created_at=now(),
        )
        self._deliveries[delivery.id] = delivery
        delivered = [await self._attempt(delivery, "redelivery") for _ in range(times)]
        delivery.state = "delivered" if any(delivered) else "failed"
        return delivery

    def delivery_view(self, delivery: Delivery) -> Json:
        return {
            "id": delivery.id,
            "payment_id": delivery.payment_id,
            "refund_id": delivery.refund_id,
            "url": delivery.url,
            "trigger": delivery.trigger,
            "created_at": iso(delivery.created_at),
            "state": delivery.state,
            "attempts": list(delivery.attempts),
        }

    def list_deliveries(self, filters: dict[str, str]) -> list[Json]:
        views = [self.delivery_view(d) for d in self._deliveries.values()]
        return [v for v in views if all(str(v.get(k)) == val for k, val in filters.items())]
