"""WeChat Pay v3: checkout (Native QR or JSAPI inside WeChat), its signed and encrypted
notifications, and the provider tasks (close an unpaid order, execute a refund).

Provider calls are never made inside a database transaction: checkout records the attempt,
calls WeChat Pay, then stores its answer; closes and refunds are tasks written in the transaction
that decides them and executed by the worker afterwards, with retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import db, outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import PaymentSucceeded
from ticketing_shared.writes import OutboxEvent

from .. import repository as repo
from ..domain import (
    WECHAT_REFUND_STATUS,
    PaymentMethod,
    PaymentStatus,
    fee,
    out_trade_no,
    transition,
    wechat_method,
)
from ..errors import OpenIdRequired, OrderNotPayable, PaymentMethodConflict, ProviderUnavailable
from ..providers.wechatpay import Notification, WeChatPayClient, WeChatPayError
from ..refunds import RefundChange, record
from ..service import NOTIFICATIONS, SOURCE, check_provider, payment_public, reject_amount_mismatch
from .protocol import UnknownTask

log = logging.getLogger(__name__)
PROVIDER = "wechatpay"
#: WeChat Pay's answers that mean the order was paid meanwhile
_PAID = ("ORDER_PAID", "ORDERPAID")


class WeChatPayFlow:
    """Paying in CNY with WeChat Pay."""

    provider = PROVIDER

    def __init__(self, client: WeChatPayClient, *, fee_bps: int, app_fee_bps: int) -> None:
        self.client = client
        self.fee_bps = fee_bps
        self.app_fee_bps = app_fee_bps

    # ---------------------------------------------------------------------------------- checkout
    async def checkout(
        self,
        pool: asyncpg.Pool,
        principal: Principal,
        order_id: UUID,
        *,
        openid: str | None,
        user_agent: str | None,
    ) -> dict[str, Any]:
        """Start (or resume) paying: a QR code's ``code_url`` (Native), or the ``jsapi``
        parameters of a payment inside WeChat (JSAPI, which needs the buyer's openid)."""
        method = wechat_method(user_agent)
        openid = openid or principal.wechat_openid
        if method is PaymentMethod.JSAPI and not openid:
            raise OpenIdRequired(
                "paying inside WeChat needs the buyer's openid (body or token claim)"
            )
        async with db.transaction(pool) as conn:
            await repo.scope_to_order(conn, order_id)
            order = check_provider(await repo.get_order(conn, order_id), principal, PROVIDER)
            payment = await repo.insert_payment(
                conn,
                {
                    "id": outbox.new_event_id(),
                    "order_id": order_id,
                    "tenant_id": order["tenant_id"],
                    "provider": PROVIDER,
                    "payment_method": method.value,
                    "out_trade_no": out_trade_no(order_id),
                    "amount": order["total_amount"],
                    "currency": order["currency"],
                },
            )
        if payment["status"] != PaymentStatus.CREATED:
            raise OrderNotPayable(f"this order's payment is already {payment['status'].lower()}")
        if payment["payment_method"] != method.value:
            raise PaymentMethodConflict(
                f"this order is being paid with {payment['payment_method']}; continue there"
            )
        if (method is PaymentMethod.NATIVE and payment["code_url"]) or (
            method is PaymentMethod.JSAPI and payment["prepay_id"]
        ):
            return payment_public(payment, self.client)
        prepay = {
            "out_trade_no": payment["out_trade_no"],
            "description": (order["event_title"] or "Tickets")[:100],
            "total": order["total_amount"],
            "currency": order["currency"].strip(),
            "time_expire": order["expires_at"],
        }
        try:
            if method is PaymentMethod.NATIVE:
                fields = {"code_url": await self.client.prepay_native(**prepay)}
            else:
                assert openid is not None
                fields = {"prepay_id": await self.client.prepay_jsapi(**prepay, openid=openid)}
        except WeChatPayError as exc:
            log.warning(
                "payments.prepay_failed", extra={"order_id": str(order_id), "code": exc.code}
            )
            if exc.code in _PAID:
                raise OrderNotPayable("this order has already been paid") from exc
            if exc.code == "ORDER_CLOSED":
                raise OrderNotPayable("this order's payment was closed") from exc
            raise ProviderUnavailable(f"WeChat Pay: {exc.code} {exc.message}") from exc
        async with db.transaction(pool, tenant_id=order["tenant_id"]) as conn:
            stored = await repo.update_payment(conn, payment["id"], fields)
        assert stored is not None
        return payment_public(stored, self.client)

    # ----------------------------------------------------------------------------- notifications
    async def on_notification(self, conn: asyncpg.Connection, note: Notification) -> str:
        """A verified, decrypted notification: a payment's or a refund's; others are ignored.

        No explicit transaction: one read, then ONE statement writing the outcome (the payment
        or refund, its outbox event and the notification record together) whose UPDATE is
        guarded on the state read. Two deliveries racing for one row serialize on its lock, and
        the second finds it moved on and writes nothing but its record; so does any redelivery.
        """
        if note.event_type == "TRANSACTION.SUCCESS":
            outcome = await self._payment_notification(conn, note)
        elif note.event_type.startswith("REFUND."):
            outcome = await self._refund_notification(conn, note)
        else:
            log.info("payments.webhook_ignored", extra={"event_type": note.event_type})
            return "ignored"
        NOTIFICATIONS.labels(PROVIDER, outcome).inc()
        return outcome

    def _record(self, note: Notification, reference: str) -> dict[str, Any]:
        return {
            "provider": PROVIDER,
            "notification_id": note.id,
            "event_type": note.event_type,
            "reference": reference,
            "payload": note.resource,
            "tenant_id": None,
        }

    async def _payment_notification(self, conn: asyncpg.Connection, note: Notification) -> str:
        """TRANSACTION.SUCCESS: mark paid and announce it, once."""
        tx = note.resource
        notification = self._record(note, str(tx.get("out_trade_no", "")))
        outcome, payment, fields = await self._payment_outcome(conn, tx)
        if payment is not None:
            notification["tenant_id"] = payment["tenant_id"]
        if fields is None:
            if not await repo.record_notification(conn, outcome=outcome, **notification):
                outcome = "redelivered"
            return outcome
        assert payment is not None
        event = PaymentSucceeded(
            order_id=payment["order_id"],
            tenant_id=payment["tenant_id"],
            payment_id=payment["id"],
            provider=PROVIDER,
            payment_method=payment["payment_method"],
            transaction_id=fields["transaction_id"],
            amount=payment["amount"],
            currency=payment["currency"].strip(),
            paid_at=fields["paid_at"],
            transaction_fee=fields["transaction_fee"],
            app_fee=fields["app_fee"],
        )
        if not await repo.mark_paid(
            conn,
            payment_id=payment["id"],
            expected=payment["status"],
            fields=fields,
            notification=notification,
            event=OutboxEvent.of(event, subject=payment["order_id"], source=SOURCE),
        ):
            outcome = "duplicate"
        return outcome

    async def _payment_outcome(
        self, conn: asyncpg.Connection, tx: dict[str, Any]
    ) -> tuple[str, asyncpg.Record | None, dict[str, Any] | None]:
        """(outcome, the payment it is about if ours, the fields to mark it paid if it pays it)."""
        config = self.client.config
        if tx.get("mchid") != config.mchid or tx.get("appid") != config.appid:
            log.error(
                "payments.alert_foreign_notification",
                extra={"mchid": tx.get("mchid"), "appid": tx.get("appid")},
            )
            return "foreign_merchant", None, None
        if tx.get("trade_state") != "SUCCESS":
            return f"ignored_{str(tx.get('trade_state', '')).lower()}", None, None
        payment = await repo.get_payment(
            conn, provider=PROVIDER, out_trade_no=str(tx.get("out_trade_no"))
        )
        if payment is None:
            log.error(
                "payments.alert_unknown_payment", extra={"out_trade_no": tx.get("out_trade_no")}
            )
            return "unknown_payment", None, None
        if payment["status"] == PaymentStatus.SUCCEEDED:
            return "duplicate", payment, None
        amount = tx.get("amount") or {}
        if (
            amount.get("total") != payment["amount"]
            or amount.get("currency") != payment["currency"].strip()
        ):
            await reject_amount_mismatch(
                conn,
                payment,
                provider=PROVIDER,
                got=amount.get("total"),
                currency=amount.get("currency"),
                transaction_id=tx.get("transaction_id"),
            )
            return "amount_mismatch", payment, None
        transition(PaymentStatus(payment["status"]), PaymentStatus.SUCCEEDED)
        success_time = tx.get("success_time")
        fields = {
            "transaction_id": str(tx.get("transaction_id")),
            "paid_at": datetime.fromisoformat(str(success_time))
            if success_time
            else datetime.now(UTC),
            "transaction_fee": fee(payment["amount"], self.fee_bps),
            "app_fee": fee(payment["amount"], self.app_fee_bps),
        }
        return "paid", payment, fields

    async def _refund_notification(self, conn: asyncpg.Connection, note: Notification) -> str:
        """REFUND.SUCCESS / ABNORMAL / CLOSED: settle or fail the refund, once."""
        res = note.resource
        notification = self._record(note, str(res.get("out_refund_no", "")))
        if res.get("mchid") != self.client.config.mchid:
            log.error("payments.alert_foreign_notification", extra={"mchid": res.get("mchid")})
            outcome = "foreign_merchant"
        elif (
            refund := await repo.get_refund(
                conn, provider=PROVIDER, out_refund_no=notification["reference"]
            )
        ) is None:
            log.error(
                "payments.alert_unknown_refund",
                extra={"out_refund_no": notification["reference"]},
            )
            outcome = "unknown_refund"
        else:
            notification["tenant_id"] = refund["tenant_id"]
            change = refund_change(res, status_field="refund_status")
            if change is None:  # a status we do not know: recorded and alerted, not applied
                outcome = "duplicate"
            else:
                outcome = f"refund_{str(res.get('refund_status', '')).lower()}"
                if not await record(
                    conn, refund, change, notification=notification, outcome=outcome
                ):
                    outcome = "duplicate"
                return outcome
        if not await repo.record_notification(conn, outcome=outcome, **notification):
            outcome = "redelivered"
        return outcome

    # ------------------------------------------------------------------------------------- tasks
    async def close(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """Close an unpaid WeChat Pay order so a late scan cannot pay it."""
        try:
            await self.client.close(task["reference"])
        except WeChatPayError as exc:
            if exc.code in _PAID:
                # paid at the last moment: the notification brings the money in (late payment)
                log.warning("payments.close_found_paid", extra={"out_trade_no": task["reference"]})
                return
            if exc.code != "ORDER_NOT_EXIST":  # never reached WeChat Pay: nothing to close
                raise
        payment_id = UUID(task["payload"]["payment_id"])
        await repo.update_payment(
            conn, payment_id, {"status": PaymentStatus.CLOSED.value}, expected=["CREATED"]
        )

    async def refund(
        self, conn: asyncpg.Connection, task: asyncpg.Record, *, give_up: bool
    ) -> None:
        """Execute a refund at WeChat Pay. A refusal fails it with advice; a transient error is
        retried with the same ``out_refund_no`` (raised to the task loop), and before giving up
        the refund is looked up, so a refund WeChat did create is never reported as failed."""
        refund = await repo.get_refund(
            conn, refund_id=UUID(task["payload"]["refund_id"]), for_update=True
        )
        if refund is None or refund["status"] != "pending":
            return
        answer: dict[str, Any] | None
        try:
            answer = await self.client.refund(
                out_refund_no=refund["out_refund_no"],
                out_trade_no=refund["out_trade_no"],
                refund=refund["amount"],
                total=refund["payment_amount"],
                currency=refund["currency"].strip(),
                reason=refund["note"],
            )
        except WeChatPayError as exc:
            if exc.retryable and not give_up:
                raise
            answer = await self._refund_lookup(refund["out_refund_no"]) if exc.retryable else None
            if answer is None:
                if not exc.retryable:
                    log.warning(
                        "payments.refund_refused",
                        extra={"refund_id": str(refund["refund_id"]), "code": exc.code},
                    )
                await record(conn, refund, RefundChange.failed(exc.code, exc.message, PROVIDER))
                return
        change = refund_change(answer, status_field="status")
        if change is not None:
            await record(conn, refund, change)

    async def cancel_refund(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """WeChat Pay has no way to withdraw a refund once sent (none is ever queued)."""
        raise UnknownTask("WeChat Pay cannot withdraw a refund")

    async def _refund_lookup(self, out_refund_no: str) -> dict[str, Any] | None:
        """The refund as WeChat knows it; None when it never got there. Errors propagate."""
        try:
            return await self.client.query_refund(out_refund_no)
        except WeChatPayError as exc:
            if exc.code == "RESOURCE_NOT_EXISTS":
                return None
            raise


def refund_change(obj: dict[str, Any], *, status_field: str) -> RefundChange | None:
    """WeChat's refund object (an API answer or a notification) as our change; None for a
    status we do not know (logged)."""
    raw = str(obj.get(status_field, ""))
    status = WECHAT_REFUND_STATUS.get(raw)
    if status is None:
        log.error("payments.unknown_refund_status", extra={"status": raw})
        return None
    success_time = obj.get("success_time")
    at = datetime.fromisoformat(str(success_time)) if success_time else None
    provider_refund_id = str(obj["refund_id"]) if obj.get("refund_id") else None
    if status == "failed":
        failed = RefundChange.failed(raw, provider=PROVIDER)
        return RefundChange(
            "failed",
            provider_refund_id=provider_refund_id,
            failure_code=failed.failure_code,
            failure_message=failed.failure_message,
            at=at,
        )
    return RefundChange(status, provider_refund_id=provider_refund_id, at=at)
