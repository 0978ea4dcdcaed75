"""Credentials and knobs of one sandbox instance, with Mollie's defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketing_local.keys import ensure_mollie_keys

from .wire import random_alnum

#: the one logger of the sandbox, whatever module logs (its name shows in the log lines)
LOGGER_NAME = "ticketing_local.sandbox.mollie"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8102
DEFAULT_TIME_SCALE = 0.001
DEFAULT_AUTO_SETTLE_MS = 200
#: Mollie's webhook call times out after 15 s; a late 200 counts as a failure (B2)
WEBHOOK_TIMEOUT_S = 15.0
#: Mollie's waits before each webhook retry (B2): 10 attempts in all, ~26 h, before time scaling
RETRY_SCHEDULE_S: tuple[float, ...] = (
    60,
    2 * 60,
    4 * 60,
    8 * 60,
    16 * 60,
    29 * 60,
    3600,
    2 * 3600,
    22 * 3600,
)
IDEMPOTENCY_TTL_S = 3600.0
DUPLICATE_REFUND_WINDOW_S = 3600.0
#: an ``open`` payment expires after this (iDEAL's 15 minutes; B1)
PAYMENT_TTL_S = 15 * 60.0
#: the key format when no key directory is given (stricter than ``molpy``'s ``\w+``: real keys
#: carry 30 characters after the prefix)
API_KEY_RE = re.compile(r"^(live|test)_\w{30,}$")
ANY_API_KEY_RE = re.compile(r"^(live|test)_\w+$")


@dataclass(frozen=True)
class SandboxConfig:
    """Credentials and knobs of one sandbox instance.

    ``api_keys`` None accepts any key matching :data:`API_KEY_RE`; otherwise only those keys.
    """

    api_keys: frozenset[str] | None = None
    profile_id: str = field(default_factory=lambda: "pfl_" + random_alnum(10))
    #: multiplies the webhook retry delays (``SANDBOX_TIME_SCALE``)
    time_scale: float = DEFAULT_TIME_SCALE
    #: refunds walk pending → processing → refunded, one step per this many ms; negative = never
    auto_settle_ms: int = DEFAULT_AUTO_SETTLE_MS
    #: a webhook answer slower than this counts as failed (not time-scaled)
    webhook_timeout_s: float = WEBHOOK_TIMEOUT_S
    retry_schedule_s: tuple[float, ...] = RETRY_SCHEDULE_S
    idempotency_ttl_s: float = IDEMPOTENCY_TTL_S
    duplicate_refund_window_s: float = DUPLICATE_REFUND_WINDOW_S
    payment_ttl_s: float = PAYMENT_TTL_S
    #: base of the links in responses (``_links.self``, ``_links.checkout``); None = the scheme and
    #: ``Host`` of each request, so links point at whatever address the client used
    public_url: str | None = None

    def __post_init__(self) -> None:
        for key in self.api_keys or ():
            if not ANY_API_KEY_RE.match(key):
                raise ValueError(f"not a Mollie API key (live_…/test_…): {key!r}")

    @classmethod
    def from_keys_dir(
        cls, keys_dir: Path | str, *, extra_api_keys: Iterable[str] = (), **overrides: Any
    ) -> SandboxConfig:
        """Load (creating when missing) ``keys_dir/mollie/mollie.json``: only its ``api_key``
        (plus ``extra_api_keys``, e.g. a ``live_`` key for tests) is accepted."""
        paths = ensure_mollie_keys(Path(keys_dir))
        data = json.loads(paths["config"].read_text(encoding="utf-8"))
        keys = frozenset({str(data["api_key"]), *extra_api_keys})
        return cls(api_keys=keys, profile_id=str(data["profile_id"]), **overrides)

    def accepts(self, api_key: str) -> bool:
        if self.api_keys is None:
            return bool(API_KEY_RE.match(api_key))
        return api_key in self.api_keys
