"""WeChat Pay API v3 client (direct merchant, public-key mode), on httpx and cryptography.

- Requests are signed over the exact bytes sent (``METHOD\\nPATH?QUERY\\nTS\\nNONCE\\nBODY\\n``,
  SHA256withRSA with the merchant API key); the body is serialized once and sent as is.
- Every 2xx response must carry a valid platform signature (``TS\\nNONCE\\nBODY\\n``) from the
  configured ``PUB_KEY_ID_…``; an unsigned or badly signed success is treated as forged.
- Errors are mapped by HTTP class first, then ``code``. ``SYSTEM_ERROR``, ``FREQUENCY_LIMITED``,
  5xx and transport failures are retried with the same ``out_trade_no`` / ``out_refund_no``
  (WeChat's idempotency handles), so a retry can never pay or refund twice; a ``Retry-After``
  on a 429 or 503 is waited out first.
- Notifications: signature verified over the raw body with the platform key, timestamp within
  5 minutes, ``WECHATPAY/SIGNTEST/`` probes refused, resource decrypted with the APIv3 key.

Exception tree::

    WeChatPayError            code, status, message, retryable
    └── SignatureError        a response or notification that fails verification
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .base import ProviderClient, ProviderError

__all__ = ["Notification", "SignatureError", "WeChatPayClient", "WeChatPayConfig", "WeChatPayError"]

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
MAX_CLOCK_SKEW_S = 300
RETRYABLE_CODES = frozenset(
    {"SYSTEM_ERROR", "FREQUENCY_LIMITED", "RATELIMIT_EXCEEDED", "BANK_ERROR", "SERVICE_UNAVAILABLE"}
)


class WeChatPayError(ProviderError):
    """WeChat Pay answered with an error (or could not be reached)."""

    provider = "wechatpay"

    @property
    def retryable(self) -> bool:
        return super().retryable or self.code in RETRYABLE_CODES


class SignatureError(WeChatPayError):
    """A response or notification whose signature, serial or timestamp does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__("SIGN_ERROR", message, status=401)


@dataclass(frozen=True)
class WeChatPayConfig:
    base_url: str
    mchid: str
    appid: str
    merchant_serial: str
    merchant_private_key: rsa.RSAPrivateKey
    platform_public_key: rsa.RSAPublicKey
    platform_public_key_id: str
    apiv3_key: bytes
    notify_url: str

    @classmethod
    def from_pem(
        cls,
        *,
        base_url: str,
        mchid: str,
        appid: str,
        merchant_serial: str,
        merchant_private_pem: bytes,
        platform_public_pem: bytes,
        platform_public_key_id: str,
        apiv3_key: str,
        notify_url: str,
    ) -> WeChatPayConfig:
        private = serialization.load_pem_private_key(merchant_private_pem, password=None)
        public = serialization.load_pem_public_key(platform_public_pem)
        if not isinstance(private, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("WeChat Pay keys must be RSA")
        key = apiv3_key.strip().encode()
        if len(key) != 32:
            raise ValueError("the APIv3 key must be 32 characters")
        return cls(
            base_url.rstrip("/"),
            mchid,
            appid,
            merchant_serial,
            private,
            public,
            platform_public_key_id,
            key,
            notify_url,
        )


@dataclass(frozen=True)
class Notification:
    id: str
    event_type: str
    resource_type: str
    original_type: str
    resource: dict[str, Any]


# The signature headers as WeChat Pay sends them (a Unix time, a nonce of 32 characters, an RSA
# signature in base64); anything else is refused before it is parsed.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{1,1400}={0,2}")


def _nonce() -> str:
    return secrets.token_hex(16).upper()


class WeChatPayClient(ProviderClient):
    def __init__(
        self,
        config: WeChatPayConfig,
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        budget_s: float = 5.0,
    ) -> None:
        super().__init__(http, max_attempts=max_attempts, backoff_s=backoff_s, budget_s=budget_s)
        self.config = config

    # ------------------------------------------------------------------------------- signing
    def _sign(self, message: str) -> str:
        signature = self.config.merchant_private_key.sign(
            message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(signature).decode()

    def _authorization(self, method: str, url_path: str, body: bytes) -> str:
        ts, nonce = str(int(time.time())), _nonce()
        signature = self._sign(f"{method}\n{url_path}\n{ts}\n{nonce}\n{body.decode()}\n")
        return (
            f'{SIGNATURE_TYPE} mchid="{self.config.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{ts}",serial_no="{self.config.merchant_serial}"'
        )

    def verify(
        self, headers: httpx.Headers | dict[str, str], body: bytes, *, now: float | None = None
    ) -> None:
        """Check a platform signature (responses and notifications alike)."""
        h = {k.lower(): v for k, v in headers.items()}
        signature = h.get("wechatpay-signature", "")
        if signature.startswith(SIGNTEST_PREFIX):
            raise SignatureError("signature probe (WECHATPAY/SIGNTEST) refused")
        if h.get("wechatpay-signature-type", SIGNATURE_TYPE) != SIGNATURE_TYPE:
            raise SignatureError(
                f"unsupported signature type {h.get('wechatpay-signature-type')!r}"
            )
        if h.get("wechatpay-serial") != self.config.platform_public_key_id:
            raise SignatureError(f"unknown platform serial {h.get('wechatpay-serial')!r}")
        ts, nonce = h.get("wechatpay-timestamp", ""), h.get("wechatpay-nonce", "")
        # whatever arrives in these headers is an unauthenticated stranger's: only ASCII of a
        # bounded length is even looked at (str.isdigit() admits '²', which int() refuses)
        if not _TIMESTAMP.fullmatch(ts) or not _NONCE.fullmatch(nonce):
            raise SignatureError("missing or malformed signature headers")
        if not _SIGNATURE.fullmatch(signature):
            raise SignatureError("missing or malformed signature")
        if abs((now if now is not None else time.time()) - int(ts)) >= MAX_CLOCK_SKEW_S:
            raise SignatureError("timestamp outside the 5-minute window")
        message = f"{ts}\n{nonce}\n".encode() + body + b"\n"
        try:
            self.config.platform_public_key.verify(
                base64.b64decode(signature, validate=True),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError("signature does not verify") from exc

    # ------------------------------------------------------------------------------ transport
    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        url_path = path + (f"?{urlencode(query)}" if query else "")
        body = (
            b""
            if payload is None
            else json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        )

        def headers() -> dict[str, str]:
            h = {
                "Authorization": self._authorization(method, url_path, body),
                "Accept": "application/json",
                "User-Agent": "ticketing-payments/1.0",
                "Wechatpay-Serial": self.config.platform_public_key_id,
            }
            if payload is not None:
                h["Content-Type"] = "application/json"
            return h

        resp = await self._send(
            method, self.config.base_url + url_path, content=body, headers=headers
        )
        self.verify(resp.headers, resp.content)
        return resp.status_code, (resp.json() if resp.content else {})

    def _network_error(self, exc: httpx.HTTPError) -> WeChatPayError:
        return WeChatPayError("NETWORK_ERROR", repr(exc), status=0)

    def _error(self, resp: httpx.Response) -> WeChatPayError:
        try:
            data = resp.json()
        except ValueError:
            data = {}
        code = str(
            data.get("code")
            or ("SYSTEM_ERROR" if resp.status_code >= 500 else f"HTTP_{resp.status_code}")
        )
        return WeChatPayError(
            code,
            str(data.get("message") or resp.reason_phrase),
            status=resp.status_code,
            detail=data.get("detail"),
        )

    # ------------------------------------------------------------------------------- payments
    def _order_body(
        self,
        *,
        out_trade_no: str,
        description: str,
        total: int,
        currency: str,
        time_expire: datetime | None,
        attach: str | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": description[:127],
            "out_trade_no": out_trade_no,
            "notify_url": self.config.notify_url,
            "amount": {"total": total, "currency": currency},
        }
        if time_expire is not None:
            body["time_expire"] = time_expire.isoformat(timespec="seconds")
        if attach:
            body["attach"] = attach
        return body

    async def prepay_native(
        self,
        *,
        out_trade_no: str,
        description: str,
        total: int,
        currency: str = "CNY",
        time_expire: datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """Native (QR) order: returns the ``code_url``."""
        _, data = await self._request(
            "POST",
            "/v3/pay/transactions/native",
            payload=self._order_body(
                out_trade_no=out_trade_no,
                description=description,
                total=total,
                currency=currency,
                time_expire=time_expire,
                attach=attach,
            ),
        )
        return str(data["code_url"])

    async def prepay_jsapi(
        self,
        *,
        out_trade_no: str,
        description: str,
        total: int,
        openid: str,
        currency: str = "CNY",
        time_expire: datetime | None = None,
        attach: str | None = None,
    ) -> str:
        """JSAPI order (inside WeChat): returns the ``prepay_id``."""
        body = self._order_body(
            out_trade_no=out_trade_no,
            description=description,
            total=total,
            currency=currency,
            time_expire=time_expire,
            attach=attach,
        )
        body["payer"] = {"openid": openid}
        _, data = await self._request("POST", "/v3/pay/transactions/jsapi", payload=body)
        return str(data["prepay_id"])

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """The parameters ``WeixinJSBridge`` needs, with ``paySign`` by the merchant key."""
        ts, nonce, package = str(int(time.time())), _nonce(), f"prepay_id={prepay_id}"
        return {
            "appId": self.config.appid,
            "timeStamp": ts,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": self._sign(f"{self.config.appid}\n{ts}\n{nonce}\n{package}\n"),
        }

    async def query(self, out_trade_no: str) -> dict[str, Any]:
        _, data = await self._request(
            "GET",
            f"/v3/pay/transactions/out-trade-no/{out_trade_no}",
            query={"mchid": self.config.mchid},
        )
        return data

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid order so a late scan cannot pay it (re-entrant)."""
        await self._request(
            "POST",
            f"/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            payload={"mchid": self.config.mchid},
        )

    # -------------------------------------------------------------------------------- refunds
    async def refund(
        self,
        *,
        out_refund_no: str,
        out_trade_no: str,
        refund: int,
        total: int,
        currency: str = "CNY",
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> dict[str, Any]:
        """Ask for a refund; the same ``out_refund_no`` never refunds twice, so retries are safe."""
        body: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": currency},
            "notify_url": notify_url or self.config.notify_url,
        }
        if reason:
            body["reason"] = reason[:80]
        _, data = await self._request("POST", "/v3/refund/domestic/refunds", payload=body)
        return data

    async def query_refund(self, out_refund_no: str) -> dict[str, Any]:
        _, data = await self._request("GET", f"/v3/refund/domestic/refunds/{out_refund_no}")
        return data

    # -------------------------------------------------------------------------- notifications
    def parse_notification(
        self, headers: dict[str, str], body: bytes, *, now: float | None = None
    ) -> Notification:
        """Verify (signature, serial, 5-minute window) then decrypt a notification."""
        self.verify(headers, body, now=now)
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            if (
                envelope.get("resource_type") != "encrypt-resource"
                or resource.get("algorithm") != "AEAD_AES_256_GCM"
            ):
                raise SignatureError("unsupported notification resource")
            plaintext = AESGCM(self.config.apiv3_key).decrypt(
                resource["nonce"].encode(),
                base64.b64decode(resource["ciphertext"]),
                (resource.get("associated_data") or "").encode(),
            )
            return Notification(
                id=str(envelope["id"]),
                event_type=str(envelope["event_type"]),
                resource_type=str(envelope["resource_type"]),
                original_type=str(resource.get("original_type", "")),
                resource=json.loads(plaintext),
            )
        except (KeyError, ValueError, TypeError, AttributeError, InvalidTag) as exc:
            raise SignatureError(f"notification cannot be decrypted: {exc!r}") from exc
