"""The WeChat Pay adapter at its edge (httpx.MockTransport): signing, verification, retries."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payments.providers.wechatpay import (
    SignatureError,
    WeChatPayClient,
    WeChatPayConfig,
    WeChatPayError,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

MERCHANT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PLATFORM = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APIV3 = "A" * 16 + "b" * 16
PUB_ID = "PUB_KEY_ID_0100000000000000000000000001"


def _config() -> WeChatPayConfig:
    return WeChatPayConfig.from_pem(
        base_url="https://wx.test",
        mchid="1900000001",
        appid="wx0000000000000001",
        merchant_serial="ABC123",
        merchant_private_pem=MERCHANT.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        platform_public_pem=PLATFORM.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        platform_public_key_id=PUB_ID,
        apiv3_key=APIV3,
        notify_url="https://shop.test/v1/webhooks/wechatpay",
    )


def _signed(
    status: int, body: bytes, *, key: rsa.RSAPrivateKey = PLATFORM, serial: str = PUB_ID
) -> httpx.Response:
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    sig = base64.b64encode(
        key.sign(f"{ts}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256())
    )
    return httpx.Response(
        status,
        content=body,
        headers={
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": sig.decode(),
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        },
    )


def _client(handler: Any) -> WeChatPayClient:
    return WeChatPayClient(
        _config(), httpx.AsyncClient(transport=httpx.MockTransport(handler)), backoff_s=0
    )


async def test_request_is_signed_over_the_exact_bytes_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _signed(200, b'{"code_url":"weixin://wxpay/bizpayurl?pr=abc"}')

    code_url = await _client(handler).prepay_native(
        out_trade_no="a" * 32, description="票 × 3", total=26700
    )
    assert code_url == "weixin://wxpay/bizpayurl?pr=abc"
    req = seen[0]
    auth = req.headers["authorization"]
    assert auth.startswith("WECHATPAY2-SHA256-RSA2048 ")
    pairs = dict(re.findall(r'(\w+)="([^"]*)"', auth))
    assert pairs["mchid"] == "1900000001" and pairs["serial_no"] == "ABC123"
    message = (
        f"POST\n/v3/pay/transactions/native\n{pairs['timestamp']}\n{pairs['nonce_str']}\n".encode()
        + req.content
        + b"\n"
    )
    MERCHANT.public_key().verify(
        base64.b64decode(pairs["signature"]), message, padding.PKCS1v15(), hashes.SHA256()
    )
    body = json.loads(req.content)
    assert body["amount"] == {"total": 26700, "currency": "CNY"} and body["notify_url"].endswith(
        "/wechatpay"
    )
    assert (
        "票" in req.content.decode()
    )  # sent as UTF-8, not escaped: the signed bytes are what is sent


async def test_query_signs_path_with_query_string() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _signed(200, b'{"trade_state":"NOTPAY"}')

    assert (await _client(handler).query("b" * 32))["trade_state"] == "NOTPAY"
    pairs = dict(re.findall(r'(\w+)="([^"]*)"', seen[0].headers["authorization"]))
    message = f"GET\n/v3/pay/transactions/out-trade-no/{'b' * 32}?mchid=1900000001\n{pairs['timestamp']}\n{pairs['nonce_str']}\n\n"
    MERCHANT.public_key().verify(
        base64.b64decode(pairs["signature"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize(
    "response",
    [
        lambda: httpx.Response(200, content=b'{"code_url":"x"}'),  # unsigned success
        lambda: _signed(200, b'{"code_url":"x"}', key=MERCHANT),  # signed by the wrong key
        lambda: _signed(200, b'{"code_url":"x"}', serial="PUB_KEY_ID_OTHER"),
    ],
)
async def test_forged_success_responses_are_refused(response: Any) -> None:
    with pytest.raises(SignatureError):
        await _client(lambda _: response()).prepay_native(
            out_trade_no="c" * 32, description="x", total=1
        )


async def test_system_error_is_retried_with_the_same_refund_number_then_succeeds() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) < 3:
            return _signed(500, b'{"code":"SYSTEM_ERROR","message":"busy"}')
        return _signed(200, b'{"status":"PROCESSING","refund_id":"50000000001"}')

    result = await _client(handler).refund(
        out_refund_no="r" * 32, out_trade_no="o" * 32, refund=100, total=200
    )
    assert result["status"] == "PROCESSING" and len(bodies) == 3
    assert len({json.loads(b)["out_refund_no"] for b in bodies}) == 1


async def test_business_refusal_is_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _signed(403, b'{"code":"NOT_ENOUGH","message":"balance too low"}')

    with pytest.raises(WeChatPayError) as exc:
        await _client(handler).refund(
            out_refund_no="r" * 32, out_trade_no="o" * 32, refund=100, total=200
        )
    assert (exc.value.code, exc.value.status, exc.value.retryable, calls) == (
        "NOT_ENOUGH",
        403,
        False,
        1,
    )


def _notification(tx: dict[str, Any], key: bytes = APIV3.encode()) -> bytes:
    nonce = "abcdefghijkl"
    ct = AESGCM(key).encrypt(nonce.encode(), json.dumps(tx).encode(), b"transaction")
    return json.dumps(
        {
            "id": "n-1",
            "create_time": "2026-01-01T00:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ct).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        }
    ).encode()


async def test_notification_verified_then_decrypted() -> None:
    body = _notification({"out_trade_no": "x", "trade_state": "SUCCESS"})
    headers = dict(_signed(200, body).headers)
    note = _client(lambda _: httpx.Response(500)).parse_notification(headers, body)
    assert (note.event_type, note.resource["trade_state"]) == ("TRANSACTION.SUCCESS", "SUCCESS")


@pytest.mark.parametrize("case", ["tampered", "probe", "stale", "wrong_key"])
async def test_bad_notifications_are_refused(case: str) -> None:
    client = _client(lambda _: httpx.Response(500))
    body = _notification(
        {"out_trade_no": "x"}, key=b"Z" * 32 if case == "wrong_key" else APIV3.encode()
    )
    headers = dict(_signed(200, body).headers)
    now = None
    if case == "tampered":
        body = body.replace(b'"n-1"', b'"n-2"')
    elif case == "probe":
        headers["wechatpay-signature"] = "WECHATPAY/SIGNTEST/" + headers["wechatpay-signature"]
    elif case == "stale":
        now = time.time() + 301
    with pytest.raises(SignatureError):
        client.parse_notification(headers, body, now=now)


async def test_jsapi_pay_sign_verifies_with_the_merchant_public_key() -> None:
    params = _client(lambda _: httpx.Response(500)).jsapi_params(
        "wx201410272009395522657a690389285100"
    )
    assert (
        params["package"] == "prepay_id=wx201410272009395522657a690389285100"
        and params["signType"] == "RSA"
    )
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n".encode()
    MERCHANT.public_key().verify(
        base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )
