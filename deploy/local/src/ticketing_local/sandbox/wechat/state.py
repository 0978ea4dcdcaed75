"""The sandbox's in-memory records and the base of :class:`~.sandbox.WeChatSandbox`: the stores,
the business clock, background tasks and injected faults."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..common import Background
from .config import LOGGER_NAME, SandboxConfig
from .errors import ErrorSpec
from .wire import CST, Json

log = logging.getLogger(LOGGER_NAME)

FAULT_ENDPOINTS = ("prepay", "query", "close", "refund", "refund_query")


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
    retry_after: int | str | None = None  # the error's Retry-After header (seconds or a date)


class SandboxState:
    """Stores, clock, background tasks and faults of one emulated merchant account."""

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
        self._background = Background(
            log, timeout_s=config.notify_timeout_s, user_agent="Mozilla/4.0"
        )

    # ---- clocks and background tasks -------------------------------------------------------

    def now(self) -> float:
        """Business time (Unix seconds): real time plus the ``/sandbox/clock`` offset."""
        return time.time() + self._clock_offset

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), CST)

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.spawn(coro, name)

    async def aclose(self) -> None:
        """Cancel pending deliveries and settlements and close the HTTP client (idempotent)."""
        await self._background.aclose()

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(
        self, endpoint: str, spec: ErrorSpec, times: int, retry_after: int | str | None = None
    ) -> None:
        self._faults.append(Fault(endpoint, spec, times, retry_after))

    def take_fault(self, endpoint: str) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def list_faults(self) -> list[Json]:
        return [
            {
                "endpoint": f.endpoint,
                "code": f.spec.code,
                "status": f.spec.status,
                "retry_after": f.retry_after,
                "times": f.remaining,
            }
            for f in self._faults
        ]

    def clear_faults(self) -> None:
        self._faults.clear()
