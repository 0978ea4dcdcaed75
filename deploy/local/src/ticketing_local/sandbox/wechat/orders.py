"""Orders: Native/JSAPI prepay with re-entry, query, close, expiry of unpaid orders, and the
buyer paying (control API) with its ``TRANSACTION.SUCCESS`` notification or a SIGNTEST probe."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from datetime import timedelta
from urllib.parse import parse_qs

from ..common import ControlError
from .config import LOGGER_NAME
from .errors import ApiError
from .notify import Notifications
from .state import Notification, Order
from .validation import (
    currency_field,
    notify_url_field,
    object_field,
    parse_json_object,
    parse_rfc3339,
    positive_int_field,
    string_field,
)
from .wire import Json, dumps, random_alnum, random_digits, rfc3339

log = logging.getLogger(LOGGER_NAME)

SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
DEFAULT_ORDER_VALIDITY = timedelta(days=7)
PAID_STATES = ("SUCCESS", "REFUND")
OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
TRADE_STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "CLOSED": "订单已关闭",
}


class Orders(Notifications):
    """The order layer of :class:`~.sandbox.WeChatSandbox`."""

    def _refresh(self, order: Order) -> None:
        """Auto-close an unpaid order whose ``time_expire`` has passed."""
        if order.trade_state == "NOTPAY" and self.now() >= order.time_expire.timestamp():
            order.trade_state = "CLOSED"
            log.info("order %s expired", order.out_trade_no)

    def _check_mchid(self, value: str | None, pointer: str, location: str = "body") -> None:
        if value != self.config.mchid:
            raise ApiError(
                "PARAM_ERROR",
                "mchid与请求签名中的商户号不一致",
                field=pointer,
                value=value,
                issue="must equal the mchid of the Authorization header",
                location=location,
            )

    def prepay(self, trade_type: str, body: bytes) -> Json:
        params = parse_json_object(body)
        appid = string_field(params, "appid", "/appid", required=True, max_len=32)
        mchid = string_field(params, "mchid", "/mchid", required=True, max_len=32)
        self._check_mchid(mchid, "/mchid")
        if appid != self.config.appid:
            raise ApiError("APPID_MCHID_NOT_MATCH", field="/appid", value=appid)
        string_field(params, "description", "/description", required=True, max_len=127)
        out_trade_no = string_field(params, "out_trade_no", "/out_trade_no", required=True)
        assert out_trade_no is not None
        if not OUT_TRADE_NO_RE.fullmatch(out_trade_no):
            raise ApiError(
                "PARAM_ERROR",
                field="/out_trade_no",
                value=out_trade_no,
                issue="must be 6-32 characters of [0-9A-Za-z_-|*]",
            )
        time_expire_text = string_field(params, "time_expire", "/time_expire", required=False)
        attach = string_field(params, "attach", "/attach", required=False, max_len=128, min_len=0)
        notify_url = notify_url_field(params, "/notify_url", required=True)
        assert notify_url is not None
        amount = object_field(params, "amount", "/amount", required=True)
        assert amount is not None
        total = positive_int_field(amount, "total", "/amount/total")
        currency = currency_field(amount, "/amount/currency")
        payer = object_field(params, "payer", "/payer", required=trade_type == "JSAPI")
        openid = None
        if trade_type == "JSAPI":
            assert payer is not None
            openid = string_field(payer, "openid", "/payer/openid", required=True, max_len=128)
        scene_info = object_field(params, "scene_info", "/scene_info", required=False)
        device_id = None
        if scene_info is not None:
            device_id = string_field(
                scene_info, "device_id", "/scene_info/device_id", required=False
            )

        existing = self._orders.get(out_trade_no)
        if existing is not None:
            self._refresh(existing)
            if existing.trade_state in PAID_STATES:
                raise ApiError("ORDER_PAID")
            if existing.trade_state == "CLOSED":
                raise ApiError("ORDER_CLOSED")
            if existing.trade_type != trade_type or existing.request_params != params:
                raise ApiError("REENTRY_MISMATCH")
            return self._prepay_result(existing)

        if time_expire_text is None:
            time_expire = self.now_dt() + DEFAULT_ORDER_VALIDITY
        else:
            time_expire = parse_rfc3339(time_expire_text, "/time_expire")
            if time_expire.timestamp() <= self.now():
                raise ApiError(
                    "PARAM_ERROR",
                    field="/time_expire",
                    value=time_expire_text,
                    issue="time_expire is already past",
                )
        order = Order(
            out_trade_no=out_trade_no,
            trade_type=trade_type,
            appid=self.config.appid,
            mchid=self.config.mchid,
            total=total,
            currency=currency,
            notify_url=notify_url,
            attach=attach,
            time_expire=time_expire,
            request_params=params,
            device_id=device_id,
            payer_openid=openid,
        )
        if trade_type == "NATIVE":
            order.code_url = f"weixin://wxpay/bizpayurl?pr={random_alnum(7)}"
        else:
            stamp = self.now_dt().strftime("%Y%m%d%H%M%S")
            order.prepay_id = f"wx{stamp}{secrets.token_hex(10)}"
        self._orders[out_trade_no] = order
        log.info("order %s placed (%s, %d fen)", out_trade_no, trade_type, total)
        return self._prepay_result(order)

    @staticmethod
    def _prepay_result(order: Order) -> Json:
        if order.trade_type == "NATIVE":
            return {"code_url": order.code_url}
        return {"prepay_id": order.prepay_id}

    def transaction_view(self, order: Order, *, amount_total: int | None = None) -> Json:
        """The query-order object, also the ``TRANSACTION.SUCCESS`` plaintext (A5)."""
        view: Json = {
            "appid": order.appid,
            "mchid": order.mchid,
            "out_trade_no": order.out_trade_no,
        }
        if order.trade_state in PAID_STATES:
            total = order.total if amount_total is None else amount_total
            view.update(
                {
                    "transaction_id": order.transaction_id,
                    "trade_type": order.trade_type,
                    "trade_state": order.trade_state,
                    "trade_state_desc": TRADE_STATE_DESC[order.trade_state],
                    "bank_type": order.bank_type,
                    "attach": order.attach or "",
                    "success_time": rfc3339(order.success_time or self.now_dt()),
                    "payer": {"openid": order.payer_openid},
                    "amount": {
                        "total": total,
                        "payer_total": total,
                        "currency": order.currency,
                        "payer_currency": order.currency,
                    },
                }
            )
        else:
            view.update(
                {
                    "trade_state": order.trade_state,
                    "trade_state_desc": TRADE_STATE_DESC[order.trade_state],
                    "amount": {"total": order.total, "payer_currency": order.currency},
                }
            )
            if order.attach is not None:
                view["attach"] = order.attach
        if order.device_id is not None:
            view["scene_info"] = {"device_id": order.device_id}
        view["promotion_detail"] = []
        return view

    def query_order(
        self, out_trade_no: str | None, transaction_id: str | None, query: bytes
    ) -> Json:
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        mchid_values = params.get("mchid")
        if not mchid_values:
            raise ApiError(
                "PARAM_ERROR", "缺少参数mchid", field="mchid", issue="required", location="query"
            )
        self._check_mchid(mchid_values[0], "mchid", "query")
        if transaction_id is not None:
            out_trade_no = self._by_transaction_id.get(transaction_id)
        order = self._orders.get(out_trade_no) if out_trade_no is not None else None
        if order is None:
            raise ApiError("ORDER_NOT_EXIST")
        self._refresh(order)
        return self.transaction_view(order)

    def close_order(self, out_trade_no: str, body: bytes) -> None:
        params = parse_json_object(body)
        mchid = string_field(params, "mchid", "/mchid", required=True, max_len=32)
        self._check_mchid(mchid, "/mchid")
        order = self._orders.get(out_trade_no)
        if order is None:
            raise ApiError("ORDER_NOT_EXIST")
        self._refresh(order)
        if order.trade_state in PAID_STATES:
            raise ApiError("ORDER_PAID")
        if order.trade_state == "NOTPAY":
            order.trade_state = "CLOSED"
            log.info("order %s closed", out_trade_no)

    # ---- payments (control) ----------------------------------------------------------------

    def pay(self, out_trade_no: str, options: Json) -> tuple[Json, Notification]:
        order = self._orders.get(out_trade_no)
        if order is None:
            raise ControlError(404, "ORDER_NOT_EXIST", "订单不存在")
        self._refresh(order)
        if order.trade_state != "NOTPAY":
            raise ControlError(409, "INVALID_STATE", f"order is {order.trade_state}, not NOTPAY")
        amount_total = options.get("amount_total")
        delay_ms = options.get("delay_ms", 0)
        openid = options.get("openid")
        bank_type = options.get("bank_type", "OTHERS")
        if amount_total is not None and type(amount_total) is not int:
            raise ControlError(400, "PARAM_ERROR", "amount_total must be an integer")
        if type(delay_ms) is not int or delay_ms < 0:
            raise ControlError(400, "PARAM_ERROR", "delay_ms must be a non-negative integer")
        if openid is not None and not isinstance(openid, str):
            raise ControlError(400, "PARAM_ERROR", "openid must be a string")
        if not isinstance(bank_type, str):
            raise ControlError(400, "PARAM_ERROR", "bank_type must be a string")
        order.trade_state = "SUCCESS"
        order.success_time = self.now_dt()
        order.transaction_id = "4200" + order.success_time.strftime("%Y%m%d") + random_digits(16)
        order.payer_openid = openid or order.payer_openid or "o" + random_alnum(27)
        order.bank_type = bank_type
        self._by_transaction_id[order.transaction_id] = out_trade_no
        log.info("order %s paid (%s)", out_trade_no, order.transaction_id)
        note = self.notify(
            kind="transaction",
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            url=order.notify_url,
            plaintext=self.transaction_view(order, amount_total=amount_total),
            out_trade_no=out_trade_no,
            out_refund_no=None,
            delay_s=delay_ms / 1000,
        )
        return self.transaction_view(order), note

    async def signtest(self, out_trade_no: str) -> Json:
        async with self.lock:
            order = self._orders.get(out_trade_no)
            if order is None:
                raise ControlError(404, "ORDER_NOT_EXIST", "订单不存在")
            if order.trade_state not in PAID_STATES:
                raise ControlError(409, "INVALID_STATE", "the order is not paid")
            envelope = self._envelope(
                "transaction", "TRANSACTION.SUCCESS", "支付成功", self.transaction_view(order)
            )
        probe = Notification(
            id=envelope["id"],
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            url=order.notify_url,
            out_trade_no=out_trade_no,
            out_refund_no=None,
            body=dumps(envelope),
            resource={},
            created_at=self.now_dt(),
        )
        bogus = SIGNTEST_PREFIX + base64.b64encode(secrets.token_bytes(192)).decode("ascii")
        delivered = await self._attempt(probe, "probe", signature=bogus)
        record = probe.attempts[-1]
        return {
            "url": order.notify_url,
            "status_code": record["status_code"],
            "error": record["error"],
            "rejected": not delivered,
        }
