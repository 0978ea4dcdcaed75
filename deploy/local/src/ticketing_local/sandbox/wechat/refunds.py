"""Refunds: the create/query APIs with WeChat's refund rules, and settlement (automatic after
``auto_settle_ms`` or through the control API) with its ``REFUND.*`` notification."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from .config import LOGGER_NAME
from .errors import ApiError
from .orders import PAID_STATES, Orders
from .state import Notification, Order, Refund
from .validation import (
    currency_field,
    notify_url_field,
    object_field,
    parse_json_object,
    positive_int_field,
    string_field,
)
from .wire import Json, random_digits, rfc3339

log = logging.getLogger(LOGGER_NAME)

REFUND_WINDOW = timedelta(days=365)
REFUND_SPACING_S = 60.0
MAX_REFUNDS_PER_ORDER = 50
REFUND_FINAL_STATES = ("SUCCESS", "ABNORMAL", "CLOSED")
OUT_REFUND_NO_RE = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
REFUND_EVENTS = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
}


class Refunds(Orders):
    """The refund layer of :class:`~.sandbox.WeChatSandbox`."""

    def refund_view(self, refund: Refund) -> Json:
        """The refund object of the create and query APIs (A6)."""
        view: Json = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": rfc3339(refund.create_time),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "from": [],
                "payer_total": refund.total,
                "payer_refund": refund.refund,
                "settlement_refund": refund.refund,
                "settlement_total": refund.total,
                "discount_refund": 0,
                "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        }
        if refund.success_time is not None:
            view["success_time"] = rfc3339(refund.success_time)
        return view

    def refund_notification_plaintext(self, refund: Refund) -> Json:
        """The ``REFUND.*`` plaintext: note ``refund_status``, not ``status`` (A6)."""
        plaintext: Json = {
            "mchid": self.config.mchid,
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "refund_status": refund.status,
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": refund.total,
                "refund": refund.refund,
                "payer_total": refund.total,
                "payer_refund": refund.refund,
            },
        }
        if refund.success_time is not None:
            plaintext["success_time"] = rfc3339(refund.success_time)
        return plaintext

    def create_refund(self, body: bytes) -> Json:
        params = parse_json_object(body)
        out_refund_no = string_field(params, "out_refund_no", "/out_refund_no", required=True)
        assert out_refund_no is not None
        if not OUT_REFUND_NO_RE.fullmatch(out_refund_no):
            raise ApiError(
                "PARAM_ERROR",
                field="/out_refund_no",
                value=out_refund_no,
                issue="must be 1-64 characters of [0-9A-Za-z_-|*@]",
            )
        transaction_id = string_field(params, "transaction_id", "/transaction_id", required=False)
        out_trade_no = string_field(params, "out_trade_no", "/out_trade_no", required=False)
        if transaction_id is None and out_trade_no is None:
            raise ApiError(
                "PARAM_ERROR",
                "transaction_id和out_trade_no必须二选一",
                field="/out_trade_no",
                issue="transaction_id or out_trade_no is required",
            )
        string_field(params, "reason", "/reason", required=False, max_len=80, min_len=0)
        notify_url = notify_url_field(params, "/notify_url", required=False)
        funds_account = string_field(params, "funds_account", "/funds_account", required=False)
        if funds_account is not None and funds_account != "AVAILABLE":
            raise ApiError(
                "PARAM_ERROR",
                field="/funds_account",
                value=funds_account,
                issue="must be AVAILABLE",
            )
        amount = object_field(params, "amount", "/amount", required=True)
        assert amount is not None
        refund_amount = positive_int_field(amount, "refund", "/amount/refund")
        total = positive_int_field(amount, "total", "/amount/total")
        currency_field(amount, "/amount/currency")
        if refund_amount > total:
            raise ApiError(
                "PARAM_ERROR",
                field="/amount/refund",
                value=refund_amount,
                issue="refund must not exceed total",
            )

        order: Order | None = None
        if transaction_id is not None:
            by_id = self._by_transaction_id.get(transaction_id)
            order = self._orders.get(by_id) if by_id is not None else None
            if (
                order is not None
                and out_trade_no is not None
                and order.out_trade_no != out_trade_no
            ):
                raise ApiError(
                    "PARAM_ERROR",
                    field="/out_trade_no",
                    value=out_trade_no,
                    issue="does not belong to transaction_id",
                )
        elif out_trade_no is not None:
            order = self._orders.get(out_trade_no)

        existing = self._refunds.get(out_refund_no)
        if existing is not None:
            same = (
                order is not None
                and existing.out_trade_no == order.out_trade_no
                and existing.refund == refund_amount
                and existing.total == total
            )
            if not same:
                raise ApiError("REFUND_REPLAY_MISMATCH")
            return self.refund_view(existing)

        if order is None:
            raise ApiError("REFUND_ORDER_NOT_EXISTS")
        self._refresh(order)
        if order.trade_state not in PAID_STATES or order.transaction_id is None:
            raise ApiError("REFUND_ORDER_NOT_PAID")
        if total != order.total:
            raise ApiError(
                "REFUND_TOTAL_MISMATCH",
                field="/amount/total",
                value=total,
                issue="must equal the order total",
            )
        now = self.now()
        if (
            order.success_time is not None
            and now > (order.success_time + REFUND_WINDOW).timestamp()
        ):
            raise ApiError("REFUND_TOO_OLD")
        if len(order.refunds) >= MAX_REFUNDS_PER_ORDER:
            raise ApiError("REFUND_COUNT_LIMIT")
        refunded = sum(
            self._refunds[no].refund for no in order.refunds if self._refunds[no].status != "CLOSED"
        )
        if refunded + refund_amount > order.total:
            raise ApiError(
                "REFUND_EXCEEDS",
                field="/amount/refund",
                value=refund_amount,
                issue=f"only {order.total - refunded} fen left to refund",
            )
        if (
            self.config.enforce_refund_spacing
            and order.last_refund_at is not None
            and now - order.last_refund_at < REFUND_SPACING_S
        ):
            raise ApiError("REFUND_TOO_SOON")

        refund = Refund(
            out_refund_no=out_refund_no,
            refund_id="50" + random_digits(27),
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            refund=refund_amount,
            total=total,
            notify_url=notify_url,
            create_time=self.now_dt(),
        )
        self._refunds[out_refund_no] = refund
        order.refunds.append(out_refund_no)
        order.last_refund_at = now
        order.trade_state = "REFUND"
        log.info(
            "refund %s of %d fen on %s accepted", out_refund_no, refund_amount, order.out_trade_no
        )
        if self.config.auto_settle_ms >= 0:
            self._spawn(
                self._auto_settle(out_refund_no, self.config.auto_settle_ms / 1000),
                name=f"wechat-auto-settle-{out_refund_no}",
            )
        return self.refund_view(refund)

    def query_refund(self, out_refund_no: str) -> Json:
        refund = self._refunds.get(out_refund_no)
        if refund is None:
            raise ApiError("REFUND_NOT_EXISTS")
        return self.refund_view(refund)

    async def _auto_settle(self, out_refund_no: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self.lock:
            refund = self._refunds.get(out_refund_no)
            if refund is not None and refund.status == "PROCESSING":
                self.settle_refund(refund, "SUCCESS")

    def settle_refund(self, refund: Refund, status: str) -> Notification | None:
        """Move a PROCESSING refund to ``status`` and notify its ``notify_url``."""
        refund.status = status
        if status == "SUCCESS":
            refund.success_time = self.now_dt()
        log.info("refund %s settled %s", refund.out_refund_no, status)
        url = refund.notify_url or self.config.refund_notify_url
        if url is None:
            return None
        event_type, summary = REFUND_EVENTS[status]
        return self.notify(
            kind="refund",
            event_type=event_type,
            summary=summary,
            url=url,
            plaintext=self.refund_notification_plaintext(refund),
            out_trade_no=refund.out_trade_no,
            out_refund_no=refund.out_refund_no,
        )
