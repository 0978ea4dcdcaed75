"""Notifications: sealed, signed and POSTed to the ``notify_url`` in the background, re-sent on
WeChat's schedule (scaled by ``time_scale``) until acknowledged or given up; redeliveries on
demand."""

from __future__ import annotations

import asyncio
import logging
import uuid

from .config import LOGGER_NAME
from .crypto import seal_resource, sign_headers
from .state import Notification, SandboxState
from .wire import Json, dumps, rfc3339

log = logging.getLogger(LOGGER_NAME)


class Notifications(SandboxState):
    """The notification layer of :class:`~.sandbox.WeChatSandbox`."""

    def _envelope(self, kind: str, event_type: str, summary: str, plaintext: Json) -> Json:
        resource = seal_resource(self._aes, kind, plaintext)
        return {
            "id": str(uuid.uuid4()),
            "create_time": rfc3339(self.now_dt()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
        }

    def notify(
        self,
        *,
        kind: str,
        event_type: str,
        summary: str,
        url: str,
        plaintext: Json,
        out_trade_no: str,
        out_refund_no: str | None,
        delay_s: float = 0.0,
    ) -> Notification:
        """Record a notification and start delivering it in the background."""
        envelope = self._envelope(kind, event_type, summary, plaintext)
        note = Notification(
            id=envelope["id"],
            event_type=event_type,
            summary=summary,
            url=url,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            body=dumps(envelope),
            resource=plaintext,
            created_at=self.now_dt(),
        )
        self._notifications[note.id] = note
        self._spawn(self._deliver(note, delay_s), name=f"wechat-notify-{note.id}")
        return note

    async def _deliver(self, note: Notification, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        schedule = self.config.retry_schedule_s
        for attempt in range(len(schedule) + 1):
            if attempt:
                await asyncio.sleep(schedule[attempt - 1] * self.config.time_scale)
            if note.state == "delivered":  # a redelivery got through meanwhile
                return
            if await self._attempt(note, "scheduled"):
                return
        if note.state != "delivered":
            note.state = "failed"
            log.warning("notification %s to %s given up", note.id, note.url)

    async def _attempt(
        self, note: Notification, kind: str, *, signature: str | None = None
    ) -> bool:
        """POST the notification once; record and return whether it counts as delivered."""
        headers = sign_headers(self.config, note.body, signature=signature)
        headers["Content-Type"] = "application/json"
        record: Json = {
            "n": len(note.attempts) + 1,
            "kind": kind,
            "at": rfc3339(self.now_dt()),
            "status_code": None,
            "error": None,
            "elapsed_ms": None,
            "delivered": False,
        }
        status = await self._background.post(
            note.url, note.body, headers, timeout_s=self.config.notify_timeout_s, record=record
        )
        record["delivered"] = status in (200, 204)
        note.attempts.append(record)
        if record["delivered"]:
            note.state = "delivered"
        log.info(
            "notification %s (%s) attempt %s → %s",
            note.id,
            note.event_type,
            kind,
            record["status_code"] or record["error"],
        )
        return bool(record["delivered"])

    async def redeliver(self, note: Notification, times: int) -> list[Json]:
        results = []
        for _ in range(times):
            await self._attempt(note, "redelivery")
            results.append(note.attempts[-1])
        return results

    def notification_view(self, note: Notification) -> Json:
        return {
            "id": note.id,
            "event_type": note.event_type,
            "summary": note.summary,
            "url": note.url,
            "out_trade_no": note.out_trade_no,
            "out_refund_no": note.out_refund_no,
            "created_at": rfc3339(note.created_at),
            "state": note.state,
            "attempts": list(note.attempts),
            "resource": note.resource,
        }

    def list_notifications(self, filters: dict[str, str]) -> list[Json]:
        views = [self.notification_view(n) for n in self._notifications.values()]
        return [v for v in views if all(str(v.get(k)) == val for k, val in filters.items())]
