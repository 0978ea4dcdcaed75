"""Keys, identities and knobs of one sandbox instance, with WeChat's defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ticketing_local.keys import ensure_wechat_keys

#: the one logger of the sandbox, whatever module logs (its name shows in the log lines)
LOGGER_NAME = "ticketing_local.sandbox.wechat"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8101
DEFAULT_TIME_SCALE = 0.001
DEFAULT_AUTO_SETTLE_MS = 200
MAX_CLOCK_SKEW_S = 300
NOTIFY_TIMEOUT_S = 5.0
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
