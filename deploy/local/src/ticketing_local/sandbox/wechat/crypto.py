"""WeChat Pay v3 cryptography: response and notification signatures, request verification and
the AES-256-GCM sealing of notification resources."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import SandboxConfig
from .errors import ApiError
from .wire import Json, dumps, random_alnum

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
AUTH_PAIR_RE = re.compile(r'\s*([A-Za-z_]+)="([^"]*)"\s*')
AUTH_KEYS = frozenset({"mchid", "nonce_str", "signature", "timestamp", "serial_no"})


def sign_headers(
    config: SandboxConfig, body: bytes, *, signature: str | None = None
) -> dict[str, str]:
    """The ``Wechatpay-*`` headers for ``body``, freshly timestamped and signed."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    if signature is None:
        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        raw = config.platform_private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        signature = base64.b64encode(raw).decode("ascii")
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": config.public_key_id,
        "Wechatpay-Signature-Type": SIGNATURE_TYPE,
    }


def authenticate(
    config: SandboxConfig, method: str, target: bytes, body: bytes, header: str | None
) -> None:
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
    if pairs["mchid"] != config.mchid:
        raise fail("unknown mchid")
    if pairs["serial_no"].upper() != config.merchant_serial.upper():
        raise fail("serial_no is not a known merchant certificate serial")
    timestamp = pairs["timestamp"]
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise fail("timestamp must be Unix seconds")
    if abs(time.time() - int(timestamp)) > config.max_clock_skew_s:
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
        config.merchant_public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise fail("signature verification failed") from None


def seal_resource(aes: AESGCM, kind: str, plaintext: Json) -> Json:
    """The ``resource`` of a notification: ``plaintext`` encrypted with the APIv3 key, the
    associated data being ``kind`` (``transaction`` or ``refund``)."""
    nonce = random_alnum(12)
    sealed = aes.encrypt(nonce.encode("ascii"), dumps(plaintext), kind.encode("ascii"))
    return {
        "original_type": kind,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode("ascii"),
        "associated_data": kind,
        "nonce": nonce,
    }
