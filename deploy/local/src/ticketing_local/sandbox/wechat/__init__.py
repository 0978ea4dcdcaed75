"""Local emulator of the WeChat Pay API v3 (direct merchant, "WeChat Pay public key" mode).

It follows WeChat Pay's published API v3 protocol, with a control API for tests.
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
``POST|GET|DELETE /sandbox/faults`` (``{"endpoint": "prepay"|"query"|"close"|"refund"|
"refund_query", "code": an ERRORS key, "status"?, "message"?, "retry_after"?, "times": n}``: the
next n calls answer that signed error, with a ``Retry-After`` header when ``retry_after`` is given,
seconds 0..3600 or an HTTP date), ``POST /sandbox/notifications/redeliver`` ``{"id", "times"}``,
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

Layout: :mod:`.config` (keys and knobs), :mod:`.wire` (JSON, timestamps, ids), :mod:`.errors`
(the :data:`ERRORS` table), :mod:`.crypto` (signatures, AES-GCM), :mod:`.validation` (request
bodies), :mod:`.state` (records, clock, faults), :mod:`.notify` (deliveries and retries),
:mod:`.orders` and :mod:`.refunds` (the state machines and their rules), :mod:`.sandbox` (the
assembled :class:`WeChatSandbox`), :mod:`.app` (routes) and :mod:`.server` (:func:`serve`,
:func:`main`).
"""

from .app import create_app
from .config import RETRY_SCHEDULE_S, SandboxConfig
from .errors import ERRORS, ErrorSpec
from .sandbox import WeChatSandbox
from .server import main, serve

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
