"""Local emulator of the WeChat Pay API v3 (direct merchant, "WeChat Pay public key" mode).

It follows ``PROVIDERS.md`` Part A (protocol), Part D (fidelity checks) and Part F (control API).
One process runs one asyncio loop with a Starlette app served by uvicorn. All state is in memory.

Provider API (every response, errors and ``204`` included, is signed like WeChat's):

* ``POST /v3/pay/transactions/native`` → ``{"code_url"}``; ``POST /v3/pay/transactions/jsapi`` →
  ``{"prepay_id"}`` (``payer.openid`` required). Re-posting the same ``out_trade_no`` with the same
  body returns the same ``code_url``/``prepay_id``; a different body → ``400 INVALID_REQUEST``; a
  paid order → ``ORDER_PAID``; a closed one → ``ORDER_CLOSED``.
* ``GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=…`` and
  ``GET /v3/pay/transactions/id/{transaction_id}?mchid=…`` → the transaction object.
* ``POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close`` ``{"mchid"}`` → ``204``
  (re-entrant; a paid order → ``ORDER_PAID``).
* ``POST /v3/refund/domestic/refunds`` → the refund object (``PROCESSING``);
  ``GET /v3/refund/domestic/refunds/{out_refund_no}``.

Requests must carry ``Authorization: WECHATPAY2-SHA256-RSA2048 k="v",…`` (pairs in any order),
signed with the merchant private key over
``METHOD\\nRAW_PATH[?RAW_QUERY]\\nTS\\nNONCE\\nRAW_BODY\\n``; ``serial_no`` must be the merchant
serial, ``mchid`` ours and the timestamp within 5 minutes, otherwise ``401 SIGN_ERROR``.
Responses carry ``Wechatpay-Timestamp/-Nonce/-Signature/-Serial`` (``Wechatpay-Serial`` = the
public key id), ``Wechatpay-Signature-Type`` and ``Request-ID``, the signature being over
``TS\\nNONCE\\nBODY\\n`` with the platform private key.

Notifications (``TRANSACTION.SUCCESS``, ``REFUND.SUCCESS|ABNORMAL|CLOSED``) are AES-256-GCM
encrypted with the APIv3 key and POSTed, signed, to the order's or refund's ``notify_url``. Only an
HTTP 200/204 within ``notify_timeout_s`` (5 s) counts as delivered (a 200 carrying
``{"code":"FAIL"}`` does count); otherwise they are re-sent on WeChat's schedule (15s, 15s, 30s,
3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h) multiplied by ``time_scale``
(``SANDBOX_TIME_SCALE``, default 0.001), then given up. Every attempt has a fresh timestamp,
nonce and signature; the body (and so the notification ``id``) stays the same.

Control API (not WeChat's; Part F): ``POST /sandbox/pay/{out_trade_no}`` (the buyer pays; optional
``{"amount_total": int, "delay_ms": int, "openid": str, "bank_type": str}``),
``POST /sandbox/refunds/{out_refund_no}/settle`` ``{"status": "SUCCESS"|"ABNORMAL"|"CLOSED"}``,
``POST|GET|DELETE /sandbox/faults``, ``POST /sandbox/notifications/redeliver`` ``{"id", "times"}``,
``GET /sandbox/notifications``, ``POST /sandbox/signtest/{out_trade_no}`` (a ``WECHATPAY/SIGNTEST/``
probe), ``GET|POST /sandbox/clock`` (``{"advance_seconds": n}`` moves the *business* clock used for
``time_expire``, timestamps and refund rules; request signatures are always checked against real
time) and ``GET /healthz``. With ``SANDBOX_AUTO_SETTLE_MS=n`` (default 200; ``-1`` = off)
``PROCESSING`` refunds settle ``SUCCESS`` by themselves after n ms.

Deliberate deviations: WeChat's "successive refunds of one order at least 1 minute apart" rule is
off unless ``enforce_refund_spacing`` is set (our tests refund quickly); ``prepay_id``/``code_url``
never expire (WeChat: 2 hours); nonces are not checked for replay. Refunds without a
``notify_url`` notify ``refund_notify_url`` (the "portal setting"), or nobody. The HTTP status and
code of each business refusal live in :data:`ERRORS` (several are unverified, see Part E).

Run it with ``python -m ticketing_local.sandbox.wechat --host 127.0.0.1 --port 8101 --keys DIR``
(port also from ``WECHAT_SANDBOX_PORT``, keys from ``TICKETING_KEYS_DIR``; the key files under
``DIR/wechat/`` are created when missing), or in-process with :func:`serve`. SIGTERM and SIGINT
shut it down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import string
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import httpx
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ticketing_local.keys import ensure_wechat_keys

__all__ = [
    "ERRORS",
    "RETRY_SCHEDULE_S",
    "ErrorSpec",
    "SandboxConfig",
    "WeChatSandbox",
    "create_app",
    "main",
    "serve",
]

log = logging.getLogger("ticketing_local.sandbox.wechat")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8101
DEFAULT_TIME_SCALE = 0.001
DEFAULT_AUTO_SETTLE_MS = 200
AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
MAX_CLOCK_SKEW_S = 300
NOTIFY_TIMEOUT_S = 5.0
DEFAULT_ORDER_VALIDITY = timedelta(days=7)
REFUND_WINDOW = timedelta(days=365)
REFUND_SPACING_S = 60.0
MAX_REFUNDS_PER_ORDER = 50
#: WeChat's re-send delays after a failed notification (A3), in seconds, before time scaling.
RETRY_SCHEDULE_S: tuple[float, ...] = (
    15,
    15,
    30,
    3 * 60,
    10 * 60,
    20 * 60,
    30 * 60,
    30 * 60,
    30 * 60,
    60 * 60,
    3 * 3600,
    3 * 3600,
    3 * 3600,
    6 * 3600,
    6 * 3600,
)
CST = timezone(timedelta(hours=8), "CST")
PAID_STATES = ("SUCCESS", "REFUND")
REFUND_FINAL_STATES = ("SUCCESS", "ABNORMAL", "CLOSED")
FAULT_ENDPOINTS = ("prepay", "query", "close", "refund", "refund_query")

OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_\-|*]{6,32}")
OUT_REFUND_NO_RE = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
AUTH_PAIR_RE = re.compile(r'\s*([A-Za-z_]+)="([^"]*)"\s*')
AUTH_KEYS = frozenset({"mchid", "nonce_str", "signature", "timestamp", "serial_no"})
ALNUM = string.ascii_letters + string.digits

Json = dict[str, Any]


class ErrorSpec(NamedTuple):
    """One error answer: HTTP status, WeChat ``code`` and the default ``message``."""

    status: int
    code: str
    message: str


#: Every error the sandbox can answer, keyed by situation. The generic four (PARAM_ERROR,
#: INVALID_REQUEST, SIGN_ERROR, SYSTEM_ERROR) are documented; the per-API business codes and their
#: HTTP statuses are marked ⚠ in PROVIDERS.md (Part E) — adjust them here, in this one table.
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

TRADE_STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "CLOSED": "订单已关闭",
}
REFUND_EVENTS = {
    "SUCCESS": ("REFUND.SUCCESS", "退款成功"),
    "ABNORMAL": ("REFUND.ABNORMAL", "退款异常"),
    "CLOSED": ("REFUND.CLOSED", "退款关闭"),
}


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SandboxConfig:
    """Keys, identities and knobs of one sandbox instance."""

    mchid: str
    appid: str
    merchant_serial: str
    public_key_id: str
    merchant_public_key: rsa.RSAPublicKey
    platform_private_key: rsa.RSAPrivateKey
    apiv3_key: str
    #: multiplies the notification retry delays (``SANDBOX_TIME_SCALE``)
    time_scale: float = DEFAULT_TIME_SCALE
    #: PROCESSING refunds settle SUCCESS after this many ms; negative = never
    auto_settle_ms: int = DEFAULT_AUTO_SETTLE_MS
    #: enforce WeChat's "refunds of one order at least 1 minute apart" (off: tests refund fast)
    enforce_refund_spacing: bool = False
    #: where refunds without their own ``notify_url`` are notified (WeChat's portal setting)
    refund_notify_url: str | None = None
    #: an acknowledgement slower than this counts as failed (WeChat: 5 s; not time-scaled)
    notify_timeout_s: float = NOTIFY_TIMEOUT_S
    max_clock_skew_s: int = MAX_CLOCK_SKEW_S
    retry_schedule_s: tuple[float, ...] = RETRY_SCHEDULE_S

    @classmethod
    def from_keys_dir(cls, keys_dir: Path | str, **overrides: Any) -> SandboxConfig:
        """Load (creating when missing) ``keys_dir/wechat/*``; ``overrides`` set the knobs."""
        paths = ensure_wechat_keys(Path(keys_dir))
        ids = json.loads(paths["config"].read_text(encoding="utf-8"))
        merchant_public = serialization.load_pem_public_key(paths["merchant_public"].read_bytes())
        platform_private = serialization.load_pem_private_key(
            paths["platform_private"].read_bytes(), password=None
        )
        if not isinstance(merchant_public, rsa.RSAPublicKey):
            raise ValueError(f"{paths['merchant_public']} is not an RSA public key")
        if not isinstance(platform_private, rsa.RSAPrivateKey):
            raise ValueError(f"{paths['platform_private']} is not an RSA private key")
        apiv3_key = paths["apiv3_key"].read_text(encoding="ascii").strip()
        if len(apiv3_key.encode("ascii")) != 32:
            raise ValueError(f"{paths['apiv3_key']} must hold exactly 32 ASCII characters")
        return cls(
            mchid=str(ids["mchid"]),
            appid=str(ids["appid"]),
            merchant_serial=str(ids["merchant_serial"]),
            public_key_id=str(ids["public_key_id"]),
            merchant_public_key=merchant_public,
            platform_private_key=platform_private,
            apiv3_key=apiv3_key,
            **overrides,
        )


# --------------------------------------------------------------------------------------------
# state


@dataclass
class Order:
    out_trade_no: str
    trade_type: str  # NATIVE | JSAPI
    appid: str
    mchid: str
    total: int
    currency: str
    notify_url: str
    attach: str | None
    time_expire: datetime
    request_params: Json  # the parsed first request body, for re-entry checks
    prepay_id: str | None = None
    code_url: str | None = None
    device_id: str | None = None
    trade_state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: datetime | None = None
    payer_openid: str | None = None
    bank_type: str | None = None
    refunds: list[str] = field(default_factory=list)
    last_refund_at: float | None = None


@dataclass
class Refund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    transaction_id: str
    refund: int
    total: int
    notify_url: str | None
    create_time: datetime
    status: str = "PROCESSING"
    success_time: datetime | None = None


@dataclass
class Notification:
    id: str
    event_type: str
    summary: str
    url: str
    out_trade_no: str
    out_refund_no: str | None
    body: bytes
    resource: Json  # the plaintext, for the control API listing
    created_at: datetime
    state: str = "pending"  # pending | delivered | failed
    attempts: list[Json] = field(default_factory=list)


@dataclass
class Fault:
    endpoint: str
    spec: ErrorSpec
    remaining: int


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


class ControlError(Exception):
    """An error of the sandbox control API (plain JSON, unsigned)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------------
# helpers


def _dumps(obj: Any) -> bytes:
    """Serialize like WeChat: compact, UTF-8, non-ASCII kept."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(CST).isoformat(timespec="seconds")


def _random_digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


def _random_alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def _pointer(parent: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def _find_null(value: Any, pointer: str = "") -> str | None:
    """Return the JSON pointer of the first ``null`` in ``value`` (WeChat forbids them)."""
    if value is None:
        return pointer
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_null(item, _pointer(pointer, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_null(item, _pointer(pointer, index))
            if found is not None:
                return found
    return None


def _has_unsupported_chars(text: str) -> bool:
    """True for characters outside the 1–3-byte UTF-8 range (emoji, surrogates)."""
    return any(ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def _parse_json_object(body: bytes) -> Json:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(
            "PARAM_ERROR", "请求体不是合法的JSON", issue=f"invalid JSON: {exc}", field=""
        ) from None
    if not isinstance(data, dict):
        raise ApiError("PARAM_ERROR", "请求体必须是JSON对象", field="", issue="not an object")
    null_at = _find_null(data)
    if null_at is not None:
        raise ApiError("PARAM_ERROR", field=null_at, issue="null is not allowed; omit the key")
    return data


def _string(
    obj: Json,
    key: str,
    pointer: str,
    *,
    required: bool,
    max_len: int | None = None,
    min_len: int = 1,
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
        return None
    if not isinstance(value, str):
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be a string")
    if _has_unsupported_chars(value):
        raise ApiError(
            "PARAM_ERROR",
            "字符集错误，仅支持UTF-8编码为1至3字节的字符",
            field=pointer,
            value=value,
            issue="characters outside 1-3-byte UTF-8 are not supported",
        )
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        raise ApiError(
            "PARAM_ERROR",
            field=pointer,
            value=value,
            issue=f"length must be between {min_len} and {max_len}",
        )
    return value


def _positive_int(obj: Json, key: str, pointer: str) -> int:
    value = obj.get(key)
    if value is None:
        raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
    if type(value) is not int:
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be an integer (fen)")
    if value < 1:
        raise ApiError("PARAM_ERROR", field=pointer, value=value, issue="must be at least 1")
    return value


def _currency(obj: Json, pointer: str) -> str:
    currency = obj.get("currency", "CNY")
    if currency != "CNY":
        raise ApiError(
            "PARAM_ERROR",
            field=pointer,
            value=currency if isinstance(currency, str) else None,
            issue="Currency code is invalid",
        )
    return "CNY"


def _notify_url(obj: Json, pointer: str, *, required: bool) -> str | None:
    url = _string(obj, "notify_url", pointer, required=required, max_len=256)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError("PARAM_ERROR", field=pointer, value=url, issue="must be an absolute URL")
    if "?" in url or "#" in url:
        raise ApiError(
            "PARAM_ERROR",
            "notify_url不能携带查询参数",
            field=pointer,
            value=url,
            issue="must not carry a query string",
        )
    return url


def _object(obj: Json, key: str, pointer: str, *, required: bool) -> Json | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
        return None
    if not isinstance(value, dict):
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be an object")
    return value


def _parse_rfc3339(text: str, pointer: str) -> datetime:
    if not RFC3339_RE.fullmatch(text):
        raise ApiError(
            "PARAM_ERROR", field=pointer, value=text, issue="must be RFC 3339 with an offset"
        )
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("PARAM_ERROR", field=pointer, value=text, issue="invalid time") from None


def _errno(code: str) -> int:
    """A stable fake internal error number for the ``Request-ID`` suffix (``-0`` = success)."""
    return 268_435_456 + zlib.crc32(code.encode()) % 65_536


# --------------------------------------------------------------------------------------------
# the sandbox


class WeChatSandbox:
    """State, protocol and background deliveries of one emulated merchant account."""

    def __init__(self, config: SandboxConfig) -> None:
        """Create an empty sandbox for ``config`` (one shared HTTP client for notifications)."""
        self.config = config
        self._aes = AESGCM(config.apiv3_key.encode("ascii"))
        self.lock = asyncio.Lock()
        self._orders: dict[str, Order] = {}
        self._by_transaction_id: dict[str, str] = {}
        self._refunds: dict[str, Refund] = {}
        self._notifications: dict[str, Notification] = {}
        self._faults: list[Fault] = []
        self._clock_offset = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.notify_timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": "Mozilla/4.0"},
        )

    # ---- clocks and background tasks -------------------------------------------------------

    def now(self) -> float:
        """Business time (Unix seconds): real time plus the ``/sandbox/clock`` offset."""
        return time.time() + self._clock_offset

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), CST)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def aclose(self) -> None:
        """Cancel pending deliveries and settlements and close the HTTP client (idempotent)."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    # ---- signatures ------------------------------------------------------------------------

    def sign_headers(self, body: bytes, *, signature: str | None = None) -> dict[str, str]:
        """The ``Wechatpay-*`` headers for ``body``, freshly timestamped and signed."""
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        if signature is None:
            message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
            raw = self.config.platform_private_key.sign(
                message, padding.PKCS1v15(), hashes.SHA256()
            )
            signature = base64.b64encode(raw).decode("ascii")
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": self.config.public_key_id,
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }

    def signed_response(
        self, status: int, payload: Any | None, *, code: str | None = None
    ) -> Response:
        """A response signed like WeChat's; ``payload`` None means an empty body."""
        body = b"" if payload is None else _dumps(payload)
        headers = self.sign_headers(body)
        errno = 0 if code is None else _errno(code)
        headers["Request-ID"] = f"{secrets.token_hex(20).upper()}-{errno}"
        media_type = "application/json" if payload is not None else None
        return Response(content=body, status_code=status, headers=headers, media_type=media_type)

    def error_response(self, err: ApiError) -> Response:
        payload: Json = {"code": err.spec.code, "message": err.message}
        if err.detail is not None:
            payload["detail"] = err.detail
        return self.signed_response(err.spec.status, payload, code=err.spec.code)

    def authenticate(self, method: str, target: bytes, body: bytes, header: str | None) -> None:
        """Check a request's ``Authorization``; raise ``SIGN_ERROR`` when it does not hold."""

        def fail(issue: str) -> ApiError:
            return ApiError("SIGN_ERROR", issue=issue, location="header")

        if not header:
            raise fail("Authorization header is missing")
        scheme, _, rest = header.partition(" ")
        if scheme != AUTH_SCHEME:
            raise fail(f"unsupported authorization scheme {scheme!r}")
        pairs: dict[str, str] = {}
        for part in rest.split(","):
            match = AUTH_PAIR_RE.fullmatch(part)
            if match is None:
                raise fail("malformed Authorization parameters")
            key, value = match.groups()
            if key in pairs:
                raise fail(f"duplicate Authorization parameter {key}")
            pairs[key] = value
        missing = sorted(AUTH_KEYS - pairs.keys())
        if missing:
            raise fail(f"Authorization lacks {', '.join(missing)}")
        if pairs["mchid"] != self.config.mchid:
            raise fail("unknown mchid")
        if pairs["serial_no"].upper() != self.config.merchant_serial.upper():
            raise fail("serial_no is not a known merchant certificate serial")
        timestamp = pairs["timestamp"]
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise fail("timestamp must be Unix seconds")
        if abs(time.time() - int(timestamp)) > self.config.max_clock_skew_s:
            raise fail("timestamp is more than 5 minutes off")
        if not pairs["nonce_str"]:
            raise fail("nonce_str is empty")
        try:
            signature = base64.b64decode(pairs["signature"], validate=True)
        except binascii.Error:
            raise fail("signature is not Base64") from None
        message = (
            f"{method}\n".encode()
            + target
            + f"\n{timestamp}\n{pairs['nonce_str']}\n".encode()
            + body
            + b"\n"
        )
        try:
            self.config.merchant_public_key.verify(
                signature, message, padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise fail("signature verification failed") from None

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(self, endpoint: str, spec: ErrorSpec, times: int) -> None:
        self._faults.append(Fault(endpoint, spec, times))

    def take_fault(self, endpoint: str) -> ErrorSpec | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.spec
        return None

    def list_faults(self) -> list[Json]:
        return [
            {
                "endpoint": f.endpoint,
                "code": f.spec.code,
                "status": f.spec.status,
                "times": f.remaining,
            }
            for f in self._faults
        ]

    # ---- orders ----------------------------------------------------------------------------

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
        params = _parse_json_object(body)
        appid = _string(params, "appid", "/appid", required=True, max_len=32)
        mchid = _string(params, "mchid", "/mchid", required=True, max_len=32)
        self._check_mchid(mchid, "/mchid")
        if appid != self.config.appid:
            raise ApiError("APPID_MCHID_NOT_MATCH", field="/appid", value=appid)
        _string(params, "description", "/description", required=True, max_len=127)
        out_trade_no = _string(params, "out_trade_no", "/out_trade_no", required=True)
        assert out_trade_no is not None
        if not OUT_TRADE_NO_RE.fullmatch(out_trade_no):
            raise ApiError(
                "PARAM_ERROR",
                field="/out_trade_no",
                value=out_trade_no,
                issue="must be 6-32 characters of [0-9A-Za-z_-|*]",
            )
        time_expire_text = _string(params, "time_expire", "/time_expire", required=False)
        attach = _string(params, "attach", "/attach", required=False, max_len=128, min_len=0)
        notify_url = _notify_url(params, "/notify_url", required=True)
        assert notify_url is not None
        amount = _object(params, "amount", "/amount", required=True)
        assert amount is not None
        total = _positive_int(amount, "total", "/amount/total")
        currency = _currency(amount, "/amount/currency")
        payer = _object(params, "payer", "/payer", required=trade_type == "JSAPI")
        openid = None
        if trade_type == "JSAPI":
            assert payer is not None
            openid = _string(payer, "openid", "/payer/openid", required=True, max_len=128)
        scene_info = _object(params, "scene_info", "/scene_info", required=False)
        device_id = None
        if scene_info is not None:
            device_id = _string(scene_info, "device_id", "/scene_info/device_id", required=False)

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
            time_expire = _parse_rfc3339(time_expire_text, "/time_expire")
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
            order.code_url = f"weixin://wxpay/bizpayurl?pr={_random_alnum(7)}"
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
                    "success_time": _rfc3339(order.success_time or self.now_dt()),
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
        params = _parse_json_object(body)
        mchid = _string(params, "mchid", "/mchid", required=True, max_len=32)
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

    # ---- refunds ---------------------------------------------------------------------------

    def refund_view(self, refund: Refund) -> Json:
        """The refund object of the create and query APIs (A6)."""
        view: Json = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": _rfc3339(refund.create_time),
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
            view["success_time"] = _rfc3339(refund.success_time)
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
            plaintext["success_time"] = _rfc3339(refund.success_time)
        return plaintext

    def create_refund(self, body: bytes) -> Json:
        params = _parse_json_object(body)
        out_refund_no = _string(params, "out_refund_no", "/out_refund_no", required=True)
        assert out_refund_no is not None
        if not OUT_REFUND_NO_RE.fullmatch(out_refund_no):
            raise ApiError(
                "PARAM_ERROR",
                field="/out_refund_no",
                value=out_refund_no,
                issue="must be 1-64 characters of [0-9A-Za-z_-|*@]",
            )
        transaction_id = _string(params, "transaction_id", "/transaction_id", required=False)
        out_trade_no = _string(params, "out_trade_no", "/out_trade_no", required=False)
        if transaction_id is None and out_trade_no is None:
            raise ApiError(
                "PARAM_ERROR",
                "transaction_id和out_trade_no必须二选一",
                field="/out_trade_no",
                issue="transaction_id or out_trade_no is required",
            )
        _string(params, "reason", "/reason", required=False, max_len=80, min_len=0)
        notify_url = _notify_url(params, "/notify_url", required=False)
        funds_account = _string(params, "funds_account", "/funds_account", required=False)
        if funds_account is not None and funds_account != "AVAILABLE":
            raise ApiError(
                "PARAM_ERROR",
                field="/funds_account",
                value=funds_account,
                issue="must be AVAILABLE",
            )
        amount = _object(params, "amount", "/amount", required=True)
        assert amount is not None
        refund_amount = _positive_int(amount, "refund", "/amount/refund")
        total = _positive_int(amount, "total", "/amount/total")
        _currency(amount, "/amount/currency")
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
            refund_id="50" + _random_digits(27),
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
        order.transaction_id = "4200" + order.success_time.strftime("%Y%m%d") + _random_digits(16)
        order.payer_openid = openid or order.payer_openid or "o" + _random_alnum(27)
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

    # ---- notifications ---------------------------------------------------------------------

    def _envelope(self, kind: str, event_type: str, summary: str, plaintext: Json) -> Json:
        nonce = _random_alnum(12)
        sealed = self._aes.encrypt(nonce.encode("ascii"), _dumps(plaintext), kind.encode("ascii"))
        return {
            "id": str(uuid.uuid4()),
            "create_time": _rfc3339(self.now_dt()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": kind,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode("ascii"),
                "associated_data": kind,
                "nonce": nonce,
            },
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
            body=_dumps(envelope),
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
        headers = self.sign_headers(note.body, signature=signature)
        headers["Content-Type"] = "application/json"
        record: Json = {
            "n": len(note.attempts) + 1,
            "kind": kind,
            "at": _rfc3339(self.now_dt()),
            "status_code": None,
            "error": None,
            "elapsed_ms": None,
            "delivered": False,
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.notify_timeout_s):
                response = await self._client.post(note.url, content=note.body, headers=headers)
        except TimeoutError:
            record["error"] = f"no answer within {self.config.notify_timeout_s:g} s"
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        else:
            record["status_code"] = response.status_code
            record["delivered"] = response.status_code in (200, 204)
        record["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
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
            body=_dumps(envelope),
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

    def notification_view(self, note: Notification) -> Json:
        return {
            "id": note.id,
            "event_type": note.event_type,
            "summary": note.summary,
            "url": note.url,
            "out_trade_no": note.out_trade_no,
            "out_refund_no": note.out_refund_no,
            "created_at": _rfc3339(note.created_at),
            "state": note.state,
            "attempts": list(note.attempts),
            "resource": note.resource,
        }

    def list_notifications(self, filters: dict[str, str]) -> list[Json]:
        views = [self.notification_view(n) for n in self._notifications.values()]
        return [v for v in views if all(str(v.get(k)) == val for k, val in filters.items())]

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds


# --------------------------------------------------------------------------------------------
# the ASGI app


def create_app(config: SandboxConfig) -> Starlette:
    """Build the Starlette app of a fresh sandbox (``app.state.sandbox``) for ``config``."""
    sandbox = WeChatSandbox(config)

    def raw_target(request: Request) -> bytes:
        raw_path = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        query: bytes = request.scope.get("query_string", b"")
        return bytes(raw_path) + (b"?" + query if query else b"")

    def api(
        endpoint: str | None,
        run: Callable[[Request, bytes], tuple[int, Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a sync provider handler: auth, faults, lock, signed answer."""

        async def handle(request: Request) -> Response:
            try:
                body = await request.body()
                sandbox.authenticate(
                    request.method, raw_target(request), body, request.headers.get("authorization")
                )
                serial = request.headers.get("wechatpay-serial")
                if serial is not None and serial != config.public_key_id:
                    raise ApiError(
                        "PARAM_ERROR",
                        "Wechatpay-Serial 不正确",
                        field="Wechatpay-Serial",
                        value=serial,
                        issue="unknown platform key id",
                        location="header",
                    )
                if endpoint is not None:
                    fault = sandbox.take_fault(endpoint)
                    if fault is not None:
                        log.info("fault injected on %s: %s", endpoint, fault.code)
                        return sandbox.signed_response(
                            fault.status,
                            {"code": fault.code, "message": fault.message},
                            code=fault.code,
                        )
                async with sandbox.lock:
                    status, payload = run(request, body)
                return sandbox.signed_response(status, payload)
            except ApiError as err:
                return sandbox.error_response(err)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return sandbox.error_response(ApiError("SYSTEM_ERROR"))

        return handle

    def native(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.prepay("NATIVE", body)

    def jsapi(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.prepay("JSAPI", body)

    def query_by_out_trade_no(request: Request, body: bytes) -> tuple[int, Any]:
        no = request.path_params["out_trade_no"]
        return 200, sandbox.query_order(no, None, request.scope.get("query_string", b""))

    def query_by_id(request: Request, body: bytes) -> tuple[int, Any]:
        tid = request.path_params["transaction_id"]
        return 200, sandbox.query_order(None, tid, request.scope.get("query_string", b""))

    def close(request: Request, body: bytes) -> tuple[int, Any]:
        sandbox.close_order(request.path_params["out_trade_no"], body)
        return 204, None

    def refund(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.create_refund(body)

    def query_refund(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.query_refund(request.path_params["out_refund_no"])

    # ---- control API ----

    async def control_body(request: Request) -> Json:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ControlError(400, "PARAM_ERROR", "body must be JSON") from None
        if not isinstance(data, dict):
            raise ControlError(400, "PARAM_ERROR", "body must be a JSON object")
        return data

    def control(
        run: Callable[[Request], Awaitable[tuple[int, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                status, payload = await run(request)
            except ControlError as err:
                return JSONResponse({"code": err.code, "message": err.message}, err.status)
            if payload is None:
                return Response(status_code=status)
            return JSONResponse(payload, status)

        return handle

    async def sandbox_pay(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        async with sandbox.lock:
            transaction, note = sandbox.pay(request.path_params["out_trade_no"], options)
        return 200, {"transaction": transaction, "notification_id": note.id}

    async def sandbox_settle(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        status = options.get("status", "SUCCESS")
        if status not in REFUND_FINAL_STATES:
            raise ControlError(400, "PARAM_ERROR", "status must be SUCCESS, ABNORMAL or CLOSED")
        async with sandbox.lock:
            refund = sandbox._refunds.get(request.path_params["out_refund_no"])
            if refund is None:
                raise ControlError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            if refund.status != "PROCESSING":
                raise ControlError(409, "INVALID_STATE", f"refund is {refund.status}")
            note = sandbox.settle_refund(refund, status)
            view = sandbox.refund_view(refund)
        return 200, {"refund": view, "notification_id": note.id if note else None}

    async def sandbox_add_fault(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        endpoint = options.get("endpoint")
        code = options.get("code")
        times = options.get("times", 1)
        if endpoint not in FAULT_ENDPOINTS:
            raise ControlError(400, "PARAM_ERROR", f"endpoint must be one of {FAULT_ENDPOINTS}")
        if not isinstance(code, str) or code not in ERRORS:
            raise ControlError(400, "PARAM_ERROR", f"code must be one of {sorted(ERRORS)}")
        if type(times) is not int or times < 1:
            raise ControlError(400, "PARAM_ERROR", "times must be a positive integer")
        spec = ERRORS[code]
        status = options.get("status", spec.status)
        message = options.get("message", spec.message)
        if type(status) is not int or not 400 <= status <= 599 or not isinstance(message, str):
            raise ControlError(400, "PARAM_ERROR", "status must be 4xx/5xx, message a string")
        async with sandbox.lock:
            sandbox.add_fault(endpoint, ErrorSpec(status, spec.code, message), times)
            return 201, {"faults": sandbox.list_faults()}

    async def sandbox_list_faults(request: Request) -> tuple[int, Any]:
        return 200, {"faults": sandbox.list_faults()}

    async def sandbox_clear_faults(request: Request) -> tuple[int, Any]:
        async with sandbox.lock:
            sandbox._faults.clear()
        return 204, None

    async def sandbox_notifications(request: Request) -> tuple[int, Any]:
        keys = ("id", "event_type", "out_trade_no", "out_refund_no", "state")
        filters = {k: v for k, v in request.query_params.items() if k in keys}
        return 200, sandbox.list_notifications(filters)

    async def sandbox_redeliver(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        note = sandbox._notifications.get(str(options.get("id")))
        times = options.get("times", 1)
        if note is None:
            raise ControlError(404, "NOT_FOUND", "unknown notification id")
        if type(times) is not int or not 1 <= times <= 100:
            raise ControlError(400, "PARAM_ERROR", "times must be an integer in 1..100")
        attempts = await sandbox.redeliver(note, times)
        return 200, {"id": note.id, "attempts": attempts}

    async def sandbox_signtest(request: Request) -> tuple[int, Any]:
        return 200, await sandbox.signtest(request.path_params["out_trade_no"])

    async def sandbox_clock(request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            options = await control_body(request)
            seconds = options.get("advance_seconds", 0)
            if type(seconds) not in (int, float) or seconds < 0:
                raise ControlError(400, "PARAM_ERROR", "advance_seconds must be >= 0")
            async with sandbox.lock:
                sandbox.advance_clock(float(seconds))
        return 200, {"offset_seconds": sandbox._clock_offset, "now": _rfc3339(sandbox.now_dt())}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        key = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "SYSTEM_ERROR")
        return sandbox.error_response(ApiError(key))

    routes = [
        Route("/v3/pay/transactions/native", api("prepay", native), methods=["POST"]),
        Route("/v3/pay/transactions/jsapi", api("prepay", jsapi), methods=["POST"]),
        Route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            api("query", query_by_out_trade_no),
            methods=["GET"],
        ),
        Route(
            "/v3/pay/transactions/id/{transaction_id}",
            api("query", query_by_id),
            methods=["GET"],
        ),
        Route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            api("close", close),
            methods=["POST"],
        ),
        Route("/v3/refund/domestic/refunds", api("refund", refund), methods=["POST"]),
        Route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            api("refund_query", query_refund),
            methods=["GET"],
        ),
        Route("/sandbox/pay/{out_trade_no}", control(sandbox_pay), methods=["POST"]),
        Route("/sandbox/refunds/{out_refund_no}/settle", control(sandbox_settle), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_add_fault), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_list_faults), methods=["GET"]),
        Route("/sandbox/faults", control(sandbox_clear_faults), methods=["DELETE"]),
        Route("/sandbox/notifications", control(sandbox_notifications), methods=["GET"]),
        Route("/sandbox/notifications/redeliver", control(sandbox_redeliver), methods=["POST"]),
        Route("/sandbox/signtest/{out_trade_no}", control(sandbox_signtest), methods=["POST"]),
        Route("/sandbox/clock", control(sandbox_clock), methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await sandbox.aclose()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app


# --------------------------------------------------------------------------------------------
# serving


class _HTTPServer(uvicorn.Server):
    """uvicorn server that leaves signals to :func:`serve` and reports when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket, so that bind errors surface as plain OSError.

    ``socket.create_server`` leaves ``proto`` 0, so asyncio would not set TCP_NODELAY on the
    accepted connections (it checks ``proto == IPPROTO_TCP``) and every response would stall
    ~40 ms on Nagle + delayed ACK; set it on the listener, which accepted sockets inherit.
    """
    family, _, _, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(addr[:2], family=family)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, http: _HTTPServer
) -> list[tuple[signal.Signals, Any]]:
    if threading.current_thread() is not threading.main_thread():
        return []

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        if http.should_exit:
            http.force_exit = True
        http.should_exit = True

    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append((sig, previous))
    return installed


def _restore_signal_handlers(
    loop: asyncio.AbstractEventLoop, installed: list[tuple[signal.Signals, Any]]
) -> None:
    for sig, previous in installed:
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)


async def serve(
    config: SandboxConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ready: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
    on_app: Callable[[Starlette], None] | None = None,
) -> None:
    """Run the sandbox on the current loop until signalled or cancelled.

    ``ready`` is set once the port is listening; ``on_app`` receives the app first (tests use
    ``app.state.sandbox``).
    """
    loop = asyncio.get_running_loop()
    app = create_app(config)
    sandbox: WeChatSandbox = app.state.sandbox
    if on_app is not None:
        on_app(app)
    try:
        sock = _bind(host, port)
    except BaseException:
        await sandbox.aclose()
        raise
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    http = _HTTPServer(uv_config)
    http_task = asyncio.create_task(http.serve(sockets=[sock]), name="wechat-sandbox-http")
    listening = asyncio.create_task(http.listening.wait(), name="wechat-sandbox-listening")
    installed = _install_signal_handlers(loop, http) if handle_signals else []
    try:
        await asyncio.wait({http_task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if http.listening.is_set():
            addr = sock.getsockname()
            log.info(
                "wechat sandbox listening on http://%s:%d (mchid %s, %s)",
                addr[0],
                addr[1],
                config.mchid,
                config.public_key_id,
            )
            if ready is not None:
                ready.set()
        try:
            await asyncio.shield(http_task)
        except asyncio.CancelledError:
            http.should_exit = True
            await http_task
            raise
    finally:
        listening.cancel()
        _restore_signal_handlers(loop, installed)
        if not http_task.done():
            http.should_exit = True
            with contextlib.suppress(Exception):
                await http_task
        sock.close()
        await sandbox.aclose()
        log.info("wechat sandbox stopped")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse command-line options and run the sandbox until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m ticketing_local.sandbox.wechat",
        description="Local emulator of the WeChat Pay API v3 (direct merchant, public-key mode).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int("WECHAT_SANDBOX_PORT", DEFAULT_PORT),
        help="port (env WECHAT_SANDBOX_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=os.environ.get("TICKETING_KEYS_DIR") or None,
        help="key directory holding wechat/ (env TICKETING_KEYS_DIR; required)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=_env_float("SANDBOX_TIME_SCALE", DEFAULT_TIME_SCALE),
        help="factor on notification retry delays (env SANDBOX_TIME_SCALE, default %(default)s)",
    )
    parser.add_argument(
        "--auto-settle-ms",
        type=int,
        default=_env_int("SANDBOX_AUTO_SETTLE_MS", DEFAULT_AUTO_SETTLE_MS),
        help="refunds settle SUCCESS after this many ms, -1 = never "
        "(env SANDBOX_AUTO_SETTLE_MS, default %(default)s)",
    )
    parser.add_argument(
        "--enforce-refund-spacing",
        action="store_true",
        default=os.environ.get("WECHAT_SANDBOX_ENFORCE_REFUND_SPACING", "") in ("1", "true"),
        help="refuse refunds of one order less than 1 minute apart "
        "(env WECHAT_SANDBOX_ENFORCE_REFUND_SPACING=1)",
    )
    parser.add_argument(
        "--refund-notify-url",
        default=os.environ.get("WECHAT_SANDBOX_REFUND_NOTIFY_URL") or None,
        help="notify_url for refunds that carry none (env WECHAT_SANDBOX_REFUND_NOTIFY_URL)",
    )
    args = parser.parse_args(argv)
    if args.keys is None:
        parser.error("the key directory is required: pass --keys DIR or set TICKETING_KEYS_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = SandboxConfig.from_keys_dir(
        args.keys,
        time_scale=args.time_scale,
        auto_settle_ms=args.auto_settle_ms,
        enforce_refund_spacing=args.enforce_refund_spacing,
        refund_notify_url=args.refund_notify_url,
    )
    asyncio.run(serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
