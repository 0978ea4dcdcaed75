"""Every error answer of the sandbox: the :data:`ERRORS` table and the exceptions handlers raise."""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

from .wire import Json


class ErrorSpec(NamedTuple):
    """One error answer: HTTP status, WeChat ``code`` and the default ``message``."""

    status: int
    code: str
    message: str


#: Every error the sandbox can answer, keyed by situation. The generic four (PARAM_ERROR,
#: INVALID_REQUEST, SIGN_ERROR, SYSTEM_ERROR) are documented; the per-API business codes and their
#: HTTP statuses WeChat does not document for certain: adjust them here, in this one table.
#: ``POST /sandbox/faults`` accepts any key of this table as ``code``.
ERRORS: dict[str, ErrorSpec] = {
    # generic rules
    "PARAM_ERROR": ErrorSpec(400, "PARAM_ERROR", "参数错误"),
    "INVALID_REQUEST": ErrorSpec(400, "INVALID_REQUEST", "HTTP 请求不符合微信支付 APIv3 接口规则"),
    "SIGN_ERROR": ErrorSpec(401, "SIGN_ERROR", "签名错误"),
    "SYSTEM_ERROR": ErrorSpec(500, "SYSTEM_ERROR", "系统异常，请稍后重试"),
    "NOT_FOUND": ErrorSpec(404, "NOT_FOUND", "请求的资源不存在"),
    "METHOD_NOT_ALLOWED": ErrorSpec(405, "METHOD_NOT_ALLOWED", "请求方法不被允许"),
    # merchant binding
    "APPID_MCHID_NOT_MATCH": ErrorSpec(400, "APPID_MCHID_NOT_MATCH", "AppID和mch_id不匹配"),
    "MCH_NOT_EXISTS": ErrorSpec(400, "MCH_NOT_EXISTS", "商户号不存在"),
    # orders
    "ORDER_NOT_EXIST": ErrorSpec(404, "ORDER_NOT_EXIST", "订单不存在"),
    "ORDER_PAID": ErrorSpec(403, "ORDER_PAID", "订单已支付"),
    "ORDER_CLOSED": ErrorSpec(400, "ORDER_CLOSED", "订单已关闭"),
    "REENTRY_MISMATCH": ErrorSpec(400, "INVALID_REQUEST", "请求重入时，参数与首次请求时不一致"),
    # refunds
    "REFUND_NOT_EXISTS": ErrorSpec(404, "RESOURCE_NOT_EXISTS", "退款单不存在"),
    "REFUND_ORDER_NOT_EXISTS": ErrorSpec(404, "RESOURCE_NOT_EXISTS", "订单不存在"),
    "REFUND_ORDER_NOT_PAID": ErrorSpec(400, "INVALID_REQUEST", "订单未支付，不能发起退款"),
    "REFUND_TOTAL_MISMATCH": ErrorSpec(400, "INVALID_REQUEST", "订单金额与原订单金额不一致"),
    "REFUND_EXCEEDS": ErrorSpec(400, "INVALID_REQUEST", "申请退款金额超过订单可退金额"),
    "REFUND_REPLAY_MISMATCH": ErrorSpec(
        400, "INVALID_REQUEST", "退款单号重复，参数与首次请求时不一致"
    ),
    "REFUND_TOO_OLD": ErrorSpec(400, "INVALID_REQUEST", "订单已超过退款期限"),
    "REFUND_COUNT_LIMIT": ErrorSpec(403, "RULE_LIMIT", "同一笔订单的退款次数超过限制"),
    "REFUND_TOO_SOON": ErrorSpec(429, "FREQUENCY_LIMITED", "同一笔订单的两次退款需间隔1分钟"),
    # per-API refusals, mainly for fault injection
    "NO_AUTH": ErrorSpec(403, "NO_AUTH", "商户无权限"),
    "NOT_ENOUGH": ErrorSpec(403, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起"),
    "USER_ACCOUNT_ABNORMAL": ErrorSpec(403, "USER_ACCOUNT_ABNORMAL", "退款请求失败，用户账号异常"),
    "OUT_TRADE_NO_USED": ErrorSpec(403, "OUT_TRADE_NO_USED", "商户订单号重复"),
    "RULE_LIMIT": ErrorSpec(403, "RULE_LIMIT", "业务规则限制"),
    "TRADE_ERROR": ErrorSpec(403, "TRADE_ERROR", "交易错误"),
    "ACCOUNT_ERROR": ErrorSpec(403, "ACCOUNT_ERROR", "账号异常"),
    "ORDERPAID": ErrorSpec(403, "ORDERPAID", "该订单已支付"),
    "FREQUENCY_LIMITED": ErrorSpec(429, "FREQUENCY_LIMITED", "频率超限，请降低请求接口频率"),
    "RATELIMIT_EXCEEDED": ErrorSpec(429, "RATELIMIT_EXCEEDED", "请求超过频率限制"),
    "BANK_ERROR": ErrorSpec(500, "BANK_ERROR", "银行系统异常"),
    "INVALID_TRANSACTIONID": ErrorSpec(500, "INVALID_TRANSACTIONID", "订单号非法"),
    "OPENID_MISMATCH": ErrorSpec(500, "OPENID_MISMATCH", "openid和appid不匹配"),
    "SERVICE_UNAVAILABLE": ErrorSpec(503, "SERVICE_UNAVAILABLE", "服务不可用，请稍后重试"),
}


class ApiError(Exception):
    """A WeChat-style error answer raised inside a handler."""

    def __init__(
        self,
        key: str,
        message: str | None = None,
        *,
        field: str | None = None,
        value: Any = None,
        issue: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(key)
        self.spec = ERRORS[key]
        self.message = message or self.spec.message
        self.detail: Json | None = None
        if field is not None or issue is not None:
            detail: Json = {}
            if field is not None:
                detail["field"] = field
            if value is not None and isinstance(value, str | int | float | bool):
                detail["value"] = value
            if issue is not None:
                detail["issue"] = issue
            detail["location"] = location or "body"
            self.detail = detail


def internal_errno(code: str) -> int:
    """A stable fake internal error number for the ``Request-ID`` suffix (``-0`` = success)."""
    return 268_435_456 + zlib.crc32(code.encode()) % 65_536
