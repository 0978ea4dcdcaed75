"""What the payments service does whatever the provider: the read model of orders, what a
payment attempt looks like to its buyer, which orders may be paid, and an amount that does not
match. Each provider's own flow is in :mod:`payments.flows`; refunds in :mod:`payments.refunds`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from ticketing_shared import outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import OrderCreated
from ticketing_shared.errors import NotFound

from . import repository as repo
from .domain import PaymentStatus, provider_for_currency, transition
from .errors import OrderNotPayable, ProviderNotSupported
from .providers.wechatpay import WeChatPayClient

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
