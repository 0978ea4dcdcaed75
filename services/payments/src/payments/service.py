"""Use cases of the payments service: checkout, provider notifications, order read model, tasks.

Provider calls are never made inside a database transaction: checkout records the attempt,
calls the provider, then stores its answer; closes (and refunds) are tasks written in the
transaction that decides them and executed by the worker afterwards, with retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from ticketing_shared import db, outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import (
    OrderCreated,
    PaymentRefundUpdated,
    PaymentSucceeded,
    RefundCancelRequested,
    RefundRequested,
)
from ticketing_shared.errors import NotFound

from . import repository as repo
from .domain import (
    REFUND_OPEN,
    WECHAT_REFUND_STATUS,
    PaymentMethod,
    PaymentStatus,
    fee,
    out_trade_no,
    provider_for_currency,
    refund_failure_message,
    transition,
    wechat_method,
)
from .errors import (
    OpenIdRequired,
    OrderNotPayable,
    PaymentMethodConflict,
    ProviderNotSupported,
    ProviderUnavailable,
)
from .providers.wechatpay import Notification, WeChatPayClient, WeChatPayError

log = logging.getLogger(__name__)
SOURCE = "payments"

AMOUNT_MISMATCH = Counter(
    "payments_amount_mismatch_total",
    "Provider confirmations whose amount or currency differ from the order (never marked paid)",
    ["provider"],
)
NOTIFICATIONS = Counter(
    "payments_notifications_total", "Verified provider notifications", ["provider", "outcome"]
)


def _new_id() -> UUID:
    return outbox.new_event_id()


# ------------------------------------------------------------------------------------ read model
async def on_orders_created(conn: asyncpg.Connection, orders: list[OrderCreated]) -> None:
    """Remember what each order costs: checkout takes amounts from here, never from a request."""
    await repo.insert_orders(conn, [data.model_dump(mode="json") for data in orders])


async def on_order_paid(conn: asyncpg.Connection, order_id: UUID) -> None:
    await repo.set_order_status(conn, order_id, "PAID")


async def on_order_ended(conn: asyncpg.Connection, order_id: UUID) -> None:
    """Cancelled or expired: close every open provider transaction so a late scan cannot pay."""
    await repo.set_order_status(conn, order_id, "CANCELLED")
    for payment in await repo.open_payments(conn, order_id):
        await repo.add_task(
            conn,
            task_id=_new_id(),
            kind="close",
            provider=payment["provider"],
            reference=payment["out_trade_no"],
            payload={"payment_id": str(payment["id"])},
            tenant_id=payment["tenant_id"],
        )


# -------------------------------------------------------------------------------------- checkout
def payment_public(
    p: asyncpg.Record | dict[str, Any], wechat: WeChatPayClient | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "payment_id": p["id"],
        "order_id": p["order_id"],
        "provider": p["provider"],
        "payment_method": p["payment_method"],
        "out_trade_no": p["out_trade_no"],
        "status": p["status"],
        "amount": p["amount"],
        "currency": p["currency"].strip(),
        "transaction_id": p["transaction_id"],
        "paid_at": p["paid_at"],
        "created_at": p["created_at"],
    }
    if p["code_url"]:
        out["code_url"] = p["code_url"]
    if p["prepay_id"] and wechat is not None:
        out["jsapi"] = wechat.jsapi_params(p["prepay_id"])
    if p["checkout_url"]:
        out["checkout_url"] = p["checkout_url"]
    if p["provider_payment_id"]:
        out["provider_payment_id"] = p["provider_payment_id"]
    return out


def check_provider(
    order: asyncpg.Record | None, principal: Principal, provider: str
) -> asyncpg.Record:
    """The caller's own order, paid with the provider of its currency."""
    if order is None or order["buyer_id"] != principal.sub:
        raise NotFound("order not found")
    expected = provider_for_currency(order["currency"])
    if provider != expected:
        raise ProviderNotSupported(
            f"this order is priced in {order['currency'].strip()}, which is paid with {expected}"
        )
    if order["status"] != "PENDING" or order["expires_at"] <= datetime.now(UTC):
        raise OrderNotPayable(f"the order is {order['status'].lower()} and cannot be paid")
    return order


async def checkout(
    pool: asyncpg.Pool,
    principal: Principal,
    order_id: UUID,
    *,
    openid: str | None,
    user_agent: str | None,
    wechat: WeChatPayClient,
) -> dict[str, Any]:
    """Start (or resume) paying a PENDING CNY order of the caller's with WeChat Pay."""
    method = wechat_method(user_agent)
    openid = openid or principal.wechat_openid
    if method is PaymentMethod.JSAPI and not openid:
        raise OpenIdRequired("paying inside WeChat needs the buyer's openid (body or token claim)")
    async with db.transaction(pool) as conn:
        await repo.scope_to_order(conn, order_id)
        order = check_provider(await repo.get_order(conn, order_id), principal, "wechatpay")
        payment = await repo.insert_payment(
            conn,
            {
                "id": _new_id(),
                "order_id": order_id,
                "tenant_id": order["tenant_id"],
                "provider": "wechatpay",
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
        return payment_public(payment, wechat)
    description = (order["event_title"] or "Tickets")[:100]
    try:
        if method is PaymentMethod.NATIVE:
            fields = {
                "code_url": await wechat.prepay_native(
                    out_trade_no=payment["out_trade_no"],
                    description=description,
                    total=order["total_amount"],
                    currency=order["currency"].strip(),
                    time_expire=order["expires_at"],
                )
            }
        else:
            assert openid is not None
            fields = {
                "prepay_id": await wechat.prepay_jsapi(
                    out_trade_no=payment["out_trade_no"],
                    description=description,
                    total=order["total_amount"],
                    currency=order["currency"].strip(),
                    time_expire=order["expires_at"],
                    openid=openid,
                )
            }
    except WeChatPayError as exc:
        log.warning("payments.prepay_failed", extra={"order_id": str(order_id), "code": exc.code})
        if exc.code in ("ORDER_PAID", "ORDERPAID"):
            raise OrderNotPayable("this order has already been paid") from exc
        if exc.code == "ORDER_CLOSED":
            raise OrderNotPayable("this order's payment was closed") from exc
        raise ProviderUnavailable(f"WeChat Pay: {exc.code} {exc.message}") from exc
    async with db.transaction(pool, tenant_id=order["tenant_id"]) as conn:
        stored = await repo.update_payment(conn, payment["id"], fields)
    assert stored is not None
    return payment_public(stored, wechat)


async def list_payments(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID, wechat: WeChatPayClient | None
) -> list[dict[str, Any]]:
    """The payment attempts of an order (its buyer, or the tenant's staff)."""
    await repo.scope_to_order(conn, order_id)
    order = await repo.get_order(conn, order_id)
    if order is None or not (
        order["buyer_id"] == principal.sub or principal.is_staff_of(order["tenant_id"])
    ):
        raise NotFound("order not found")
    return [payment_public(p, wechat) for p in await repo.list_payments(conn, order_id)]


# --------------------------------------------------------------------------------- notifications
async def apply_wechat_payment(
    conn: asyncpg.Connection,
    note: Notification,
    *,
    mchid: str,
    appid: str,
    fee_bps: int,
    app_fee_bps: int,
) -> str:
    """A verified, decrypted TRANSACTION.SUCCESS: mark paid and announce it, once.

    Two round trips and no explicit transaction: the payment row, then ONE statement writing the
    outcome (payment, outbox event and notification record together) whose UPDATE is guarded on
    the state read. Two deliveries racing for one payment serialize on its row lock, and the
    second finds it SUCCEEDED and writes nothing but its record; so does any redelivery.
    """
    tx = note.resource
    ref = str(tx.get("out_trade_no", ""))
    record: dict[str, Any] = {
        "provider": "wechatpay",
        "notification_id": note.id,
        "event_type": note.event_type,
        "reference": ref,
        "payload": tx,
        "tenant_id": None,
    }
    outcome, payment, fields = await _wechat_outcome(
        conn, tx, mchid=mchid, appid=appid, fee_bps=fee_bps, app_fee_bps=app_fee_bps
    )
    if payment is not None:
        record["tenant_id"] = payment["tenant_id"]
    if fields is not None:
        assert payment is not None
        event = PaymentSucceeded(
            order_id=payment["order_id"],
            tenant_id=payment["tenant_id"],
            payment_id=payment["id"],
            provider="wechatpay",
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
            notification=record,
            outbox_row=outbox.outbox_values(event, subject=payment["order_id"], source=SOURCE),
        ):
            outcome = "duplicate"
    elif not await repo.record_notification(conn, outcome=outcome, **record):
        outcome = "redelivered"
    NOTIFICATIONS.labels("wechatpay", outcome).inc()
    return outcome


async def reject_amount_mismatch(
    conn: asyncpg.Connection,
    payment: asyncpg.Record,
    *,
    provider: str,
    got: Any,
    currency: Any,
    transaction_id: Any,
) -> None:
    """A provider confirmed a payment for another amount or currency than the order's: never
    paid; the attempt becomes REJECTED, alerted in the logs and counted in /metrics."""
    AMOUNT_MISMATCH.labels(provider).inc()
    log.error(
        "payments.alert_amount_mismatch",
        extra={
            "payment_id": str(payment["id"]),
            "expected": payment["amount"],
            "got": got,
            "currency": currency,
            "transaction_id": transaction_id,
        },
    )
    await repo.update_payment(
        conn,
        payment["id"],
        {
            "status": transition(PaymentStatus(payment["status"]), PaymentStatus.REJECTED).value,
            "failure_reason": f"amount mismatch: {got} {currency}",
        },
        expected=[payment["status"]],
    )


async def _wechat_outcome(
    conn: asyncpg.Connection,
    tx: dict[str, Any],
    *,
    mchid: str,
    appid: str,
    fee_bps: int,
    app_fee_bps: int,
) -> tuple[str, asyncpg.Record | None, dict[str, Any] | None]:
    """(outcome, the payment it is about if ours, the fields to mark it paid if it pays it)."""
    if tx.get("mchid") != mchid or tx.get("appid") != appid:
        log.error(
            "payments.alert_foreign_notification",
            extra={"mchid": tx.get("mchid"), "appid": tx.get("appid")},
        )
        return "foreign_merchant", None, None
    if tx.get("trade_state") != "SUCCESS":
        return f"ignored_{str(tx.get('trade_state', '')).lower()}", None, None
    payment = await repo.get_payment(
        conn, provider="wechatpay", out_trade_no=str(tx.get("out_trade_no"))
    )
    if payment is None:
        log.error("payments.alert_unknown_payment", extra={"out_trade_no": tx.get("out_trade_no")})
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
            provider="wechatpay",
            got=amount.get("total"),
            currency=amount.get("currency"),
            transaction_id=tx.get("transaction_id"),
        )
        return "amount_mismatch", payment, None
    transition(PaymentStatus(payment["status"]), PaymentStatus.SUCCEEDED)
    paid_at = (
        datetime.fromisoformat(str(tx.get("success_time")))
        if tx.get("success_time")
        else datetime.now(UTC)
    )
    fields = {
        "transaction_id": str(tx.get("transaction_id")),
        "paid_at": paid_at,
        "transaction_fee": fee(payment["amount"], fee_bps),
        "app_fee": fee(payment["amount"], app_fee_bps),
    }
    return "paid", payment, fields


# ------------------------------------------------------------------------------------------ tasks
async def close_wechat(
    conn: asyncpg.Connection, task: asyncpg.Record, wechat: WeChatPayClient
) -> None:
    """Close an unpaid WeChat Pay order so a late scan cannot pay it."""
    try:
        await wechat.close(task["reference"])
    except WeChatPayError as exc:
        if exc.code in ("ORDER_PAID", "ORDERPAID"):
            # paid at the last moment: the notification brings the money in (late-payment path)
            log.warning("payments.close_found_paid", extra={"out_trade_no": task["reference"]})
            return
        if exc.code != "ORDER_NOT_EXIST":  # never reached the provider: nothing to close
            raise
    payment_id = UUID(task["payload"]["payment_id"])
    await repo.update_payment(
        conn, payment_id, {"status": PaymentStatus.CLOSED.value}, expected=["CREATED"]
    )


# ---------------------------------------------------------------------------------------- refunds
async def on_refund_requested(conn: asyncpg.Connection, data: RefundRequested) -> str:
    """Queue the provider call for a refund (made after the commit, retried with the same
    ``out_refund_no``); a refund of an order without a paid transaction fails at once."""
    payment = await repo.refundable_payment(conn, data.order_id, data.payment_id)
    if payment is None:
        log.error("payments.refund_without_payment", extra={"order_id": str(data.order_id)})
        await refund_update(
            conn,
            data.refund_id,
            data.order_id,
            data.tenant_id,
            provider="unknown",
            status="failed",
            failure_code="no_payment",
            failure_message=refund_failure_message("no_payment"),
        )
        return "no_payment"
    known = not await repo.insert_refund(
        conn,
        {
            "refund_id": data.refund_id,
            "order_id": data.order_id,
            "tenant_id": data.tenant_id,
            "payment_id": payment["id"],
            "provider": payment["provider"],
            "out_refund_no": data.refund_id.hex,
            "amount": data.amount,
            "currency": data.currency,
            "note": data.note,
        },
    )
    if known:
        return "duplicate"
    await repo.add_task(
        conn,
        task_id=_new_id(),
        kind="refund",
        provider=payment["provider"],
        reference=data.refund_id.hex,
        payload={"refund_id": str(data.refund_id)},
        tenant_id=data.tenant_id,
    )
    return "queued"


async def on_refund_cancel_requested(conn: asyncpg.Connection, data: RefundCancelRequested) -> str:
    """Withdraw a refund. Not sent to the provider yet: the task is withdrawn and the refund is
    ``canceled`` now. Sent to Mollie and still ``pending``/``queued`` there (or being sent right
    now): Mollie is asked to cancel it, after this commit. WeChat Pay has no way back: once sent,
    the refund carries on."""
    refund = await repo.get_refund(conn, refund_id=data.refund_id, for_update=True)
    if refund is None or refund["status"] not in ("pending", "queued"):
        return "too_late"
    if refund["provider_refund_id"] is None and await repo.cancel_task(
        conn, kind="refund", provider=refund["provider"], reference=refund["out_refund_no"]
    ):
        await repo.update_refund(conn, data.refund_id, {"status": "canceled"}, expected=["pending"])
        await refund_update(
            conn,
            data.refund_id,
            data.order_id,
            data.tenant_id,
            provider=refund["provider"],
            status="canceled",
        )
        return "canceled"
    if refund["provider"] != "mollie":
        return "too_late"
    await repo.add_task(
        conn,
        task_id=_new_id(),
        kind="cancel_refund",
        provider="mollie",
        reference=refund["out_refund_no"],
        payload={"refund_id": str(data.refund_id)},
        tenant_id=data.tenant_id,
    )
    return "cancel_queued"


def refund_updated_event(
    refund_id: UUID,
    order_id: UUID,
    tenant_id: str,
    *,
    provider: str,
    status: str,
    provider_refund_id: str | None = None,
    failure_code: str | None = None,
    failure_message: str | None = None,
    at: datetime | None = None,
) -> PaymentRefundUpdated:
    """``payment.refund_updated``: a provider's refund status, announced to refunds."""
    return PaymentRefundUpdated(
        refund_id=refund_id,
        order_id=order_id,
        tenant_id=tenant_id,
        provider=provider,
        status=status,
        provider_refund_id=provider_refund_id,
        failure_code=failure_code,
        failure_message=failure_message,
        at=at or datetime.now(UTC),
    )


async def refund_update(
    conn: asyncpg.Connection, refund_id: UUID, order_id: UUID, tenant_id: str, **change: Any
) -> None:
    """Write :func:`refund_updated_event` to the outbox."""
    await outbox.emit(
        conn,
        refund_updated_event(refund_id, order_id, tenant_id, **change),
        subject=order_id,
        source=SOURCE,
    )


def refund_fields(
    status: str,
    *,
    provider_refund_id: str | None,
    failure_code: str | None,
    failure_message: str | None,
    at: datetime | None,
) -> dict[str, Any]:
    """The provider_refunds columns a status change sets."""
    fields: dict[str, Any] = {"status": status}
    if provider_refund_id:
        fields["provider_refund_id"] = provider_refund_id
    if status == "failed":
        fields["failure_code"], fields["failure_message"] = failure_code, failure_message
    if status == "refunded":
        fields["settled_at"] = at or datetime.now(UTC)
    return fields


async def apply_refund_status(
    conn: asyncpg.Connection,
    refund: asyncpg.Record,
    status: str,
    *,
    provider_refund_id: str | None,
    failure_code: str | None = None,
    failure_message: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Record the provider's refund status and announce it, once per change."""
    fields = refund_fields(
        status,
        provider_refund_id=provider_refund_id,
        failure_code=failure_code,
        failure_message=failure_message,
        at=at,
    )
    expected = [s for s in REFUND_OPEN if s != status]
    updated = await repo.update_refund(conn, refund["refund_id"], fields, expected=expected)
    if updated is None:
        return False
    await refund_update(
        conn,
        refund["refund_id"],
        refund["order_id"],
        refund["tenant_id"],
        provider=refund["provider"],
        status=status,
        provider_refund_id=updated["provider_refund_id"],
        failure_code=failure_code,
        failure_message=failure_message,
        at=at,
    )
    return True


async def refund_wechat(
    conn: asyncpg.Connection, task: asyncpg.Record, wechat: WeChatPayClient, *, give_up: bool
) -> None:
    """Execute a refund at WeChat Pay. A refusal fails it with advice; a transient error is
    retried with the same ``out_refund_no`` (raised to the task loop), and before giving up the
    refund is looked up, so a refund WeChat did create is never reported as failed."""
    refund = await repo.get_refund(
        conn, refund_id=UUID(task["payload"]["refund_id"]), for_update=True
    )
    if refund is None or refund["status"] != "pending":
        return
    answer: dict[str, Any] | None
    try:
        answer = await wechat.refund(
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
        if exc.retryable:
            answer = await _refund_lookup(wechat, refund["out_refund_no"])
            if answer is None:
                await apply_refund_status(
                    conn,
                    refund,
                    "failed",
                    provider_refund_id=None,
                    failure_code=exc.code,
                    failure_message=refund_failure_message(exc.code, exc.message, "wechatpay"),
                )
                return
        else:
            log.warning(
                "payments.refund_refused",
                extra={"refund_id": str(refund["refund_id"]), "code": exc.code},
            )
            await apply_refund_status(
                conn,
                refund,
                "failed",
                provider_refund_id=None,
                failure_code=exc.code,
                failure_message=refund_failure_message(exc.code, exc.message, "wechatpay"),
            )
            return
    await _apply_wechat_refund_object(conn, refund, answer, status_field="status")


async def _refund_lookup(wechat: WeChatPayClient, out_refund_no: str) -> dict[str, Any] | None:
    """The refund as WeChat knows it; None when it never got there. Errors propagate (retry)."""
    try:
        return await wechat.query_refund(out_refund_no)
    except WeChatPayError as exc:
        if exc.code == "RESOURCE_NOT_EXISTS":
            return None
        raise


def _wechat_refund_change(
    obj: dict[str, Any], *, status_field: str
) -> tuple[str, dict[str, Any]] | None:
    """WeChat's refund object as our change: (status, the provider_refund_id, failure_code,
    failure_message and at that :func:`apply_refund_status` takes); None for a status we do
    not know (logged)."""
    raw = str(obj.get(status_field, ""))
    status = WECHAT_REFUND_STATUS.get(raw)
    if status is None:
        log.error("payments.unknown_refund_status", extra={"status": raw})
        return None
    failed = status == "failed"
    return status, {
        "provider_refund_id": str(obj["refund_id"]) if obj.get("refund_id") else None,
        "failure_code": raw if failed else None,
        "failure_message": refund_failure_message(raw, provider="wechatpay") if failed else None,
        "at": datetime.fromisoformat(str(obj["success_time"])) if obj.get("success_time") else None,
    }


async def _apply_wechat_refund_object(
    conn: asyncpg.Connection, refund: asyncpg.Record, obj: dict[str, Any], *, status_field: str
) -> bool:
    change = _wechat_refund_change(obj, status_field=status_field)
    if change is None:
        return False
    status, values = change
    return await apply_refund_status(conn, refund, status, **values)


async def apply_wechat_refund(conn: asyncpg.Connection, note: Notification, *, mchid: str) -> str:
    """A verified, decrypted REFUND.SUCCESS / ABNORMAL / CLOSED: settle or fail the refund, once.

    Like a payment's notification: two round trips and no explicit transaction. The refund is
    read, then ONE statement moves it on (guarded on the states it may leave) and writes its
    outbox event and the notification record; a redelivery writes only its record.
    """
    res = note.resource
    record: dict[str, Any] = {
        "provider": "wechatpay",
        "notification_id": note.id,
        "event_type": note.event_type,
        "reference": str(res.get("out_refund_no", "")),
        "payload": res,
        "tenant_id": None,
    }
    refund = change = None
    if res.get("mchid") != mchid:
        log.error("payments.alert_foreign_notification", extra={"mchid": res.get("mchid")})
        outcome = "foreign_merchant"
    elif (
        refund := await repo.get_refund(
            conn, provider="wechatpay", out_refund_no=record["reference"]
        )
    ) is None:
        log.error("payments.alert_unknown_refund", extra={"out_refund_no": record["reference"]})
        outcome = "unknown_refund"
    elif (change := _wechat_refund_change(res, status_field="refund_status")) is None:
        outcome = "duplicate"  # a status we do not know: recorded and alerted, not applied
    else:
        outcome = f"refund_{str(res.get('refund_status', '')).lower()}"
    if refund is not None:
        record["tenant_id"] = refund["tenant_id"]
    if refund is not None and change is not None:
        status, values = change
        event = refund_updated_event(
            refund["refund_id"],
            refund["order_id"],
            refund["tenant_id"],
            provider=refund["provider"],
            status=status,
            **{
                **values,
                "provider_refund_id": values["provider_refund_id"] or refund["provider_refund_id"],
            },
        )
        if not await repo.settle_refund_once(
            conn,
            refund_id=refund["refund_id"],
            expected=[s for s in REFUND_OPEN if s != status],
            fields=refund_fields(status, **values),
            outbox_row=outbox.outbox_values(event, subject=refund["order_id"], source=SOURCE),
            notification=record,
            outcome=outcome,
        ):
            outcome = "duplicate"
    elif not await repo.record_notification(conn, outcome=outcome, **record):
        outcome = "redelivered"
    NOTIFICATIONS.labels("wechatpay", outcome).inc()
    return outcome
