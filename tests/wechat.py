"""WeChat Pay's side of the local stack, for tests: notifications as WeChat Pay sends them
(encrypted with the APIv3 key, signed with the platform key the stack generated)."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import Stack


def wx_keys(stack: Stack) -> tuple[dict[str, Any], Any, Any, bytes]:
    wx = stack.run_dir / "keys" / "wechat"
    meta = json.loads((wx / "wechat.json").read_text())
    platform = serialization.load_pem_private_key(
        (wx / "platform-private.pem").read_bytes(), password=None
    )
    merchant_pub = serialization.load_pem_public_key((wx / "merchant-public.pem").read_bytes())
    return meta, platform, merchant_pub, (wx / "apiv3.key").read_bytes().strip()


def signed_notification(
    stack: Stack, out_trade_no: str, *, total: int = 9900, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """A TRANSACTION.SUCCESS notification as WeChat Pay sends it: encrypted, signed, fresh id
    (signed at ``timestamp``, now by default)."""
    meta, platform, _, apiv3 = wx_keys(stack)
    tx = {
        "mchid": meta["mchid"],
        "appid": meta["appid"],
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000000000000000000001",
        "trade_state": "SUCCESS",
        "trade_type": "NATIVE",
        "success_time": datetime.now(UTC).isoformat(),
        "amount": {
            "total": total,
            "currency": "CNY",
            "payer_total": total,
            "payer_currency": "CNY",
        },
    }
    nonce = secrets.token_urlsafe(9)[:12]
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(UTC).isoformat(),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "associated_data": "transaction",
                "nonce": nonce,
                "ciphertext": base64.b64encode(
                    AESGCM(apiv3).encrypt(nonce.encode(), json.dumps(tx).encode(), b"transaction")
                ).decode(),
            },
        }
    ).encode()
    ts, wx_nonce = str(timestamp or int(time.time())), secrets.token_hex(16)
    signature = base64.b64encode(
        platform.sign(
            f"{ts}\n{wx_nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256()
        )
    ).decode()
    return body, {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": wx_nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": meta["public_key_id"],
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Content-Type": "application/json",
    }
