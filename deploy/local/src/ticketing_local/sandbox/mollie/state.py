"""The sandbox's in-memory records and the base of :class:`~.sandbox.MollieSandbox`: the stores,
background tasks, injected faults, the idempotency cache and the balance switch."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..common import Background
from .config import LOGGER_NAME, SandboxConfig
from .idempotency import IdempotencyCache
from .wire import Json

log = logging.getLogger(LOGGER_NAME)

#: what ``POST /sandbox/faults`` can target (one name per provider operation)
FAULT_ENDPOINTS = (
    "create_payment",
    "get_payment",
    "list_payments",
    "cancel_payment",
    "create_refund",
    "get_refund",
    "list_refunds",
    "cancel_refund",
)
#: how many API calls ``GET /sandbox/requests`` remembers
REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True)
class Caller:
    """Who asks: the API key, its mode (``test``/``live``) and the base URL for links."""

    api_key: str
    mode: str
    base: str


@dataclass
class Payment:
    id: str
    mode: str
    created_at: datetime
    currency: str
    amount: Decimal
    description: str
    redirect_url: str | None
    cancel_url: str | None
    webhook_url: str | None
    metadata: Any
    method: str | None  # forced at creation (a single method) or chosen at checkout
    locale: str | None
    sequence_type: str
    restrict_country: str | None
    capture_mode: str | None
    expires_at: datetime
    status: str = "open"
    authorized_at: datetime | None = None
    paid_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    details: Json | None = None
    country_code: str | None = None
    refund_ids: list[str] = field(default_factory=list)


@dataclass
class Refund:
    id: str
    payment_id: str
    mode: str
    currency: str
    amount: Decimal
    description: str | None
    metadata: Any
    created_at: datetime
    status: str
    walking: bool = False  # an auto-settle walk is under way
    manual: bool = False  # moved through the control API: no more automatic steps


@dataclass
class Delivery:
    """One webhook trigger and every attempt to deliver it."""

    id: str
    payment_id: str
    refund_id: str | None
    url: str
    trigger: str
    created_at: datetime
    state: str = "pending"  # pending | delivered | failed
    attempts: list[Json] = field(default_factory=list)


@dataclass
class Fault:
    endpoint: str
    status: int | None  # None: only slow the call down by delay_ms
    detail: str | None
    delay_ms: int
    remaining: int
    retry_after: int | str | None = None  # the error's Retry-After header (seconds or a date)


@dataclass
class ApiRequest:
    """One call of the provider API as the sandbox received it (``GET /sandbox/requests``)."""

    endpoint: str
    method: str
    path: str
    payment_id: str | None
    at: datetime  # when it arrived
    status: int | None = None  # the answer's status, once answered


class SandboxState:
    """Stores, background tasks, faults, idempotency keys and balance of one Mollie account."""

    def __init__(self, config: SandboxConfig) -> None:
        """Create an empty sandbox for ``config`` (one shared HTTP client for webhooks)."""
        self.config = config
        self.lock = asyncio.Lock()
        self._payments: dict[str, Payment] = {}
        self._open: dict[str, Payment] = {}  # open/pending payments, for expiry
        self._refunds: dict[str, Refund] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._faults: list[Fault] = []
        #: the latest API calls, oldest first (a bounded log: the sandbox may run for days)
        self._requests: deque[ApiRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        self.idempotency = IdempotencyCache(config.idempotency_ttl_s)
        #: low balance: new refunds start ``queued`` and wait (``POST /sandbox/balance``)
        self.balance_low = False
        self._background = Background(
            log, timeout_s=config.webhook_timeout_s, user_agent="Mollie HTTP client/1.0"
        )

    # ---- background tasks ------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._background.spawn(coro, name)

    async def aclose(self) -> None:
        """Cancel pending deliveries, refund walks and expiry, close the HTTP client."""
        await self._background.aclose()

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        self._faults.append(fault)

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
                "status": f.status,
                "detail": f.detail,
                "delay_ms": f.delay_ms,
                "retry_after": f.retry_after,
                "times": f.remaining,
            }
            for f in self._faults
        ]

    def clear_faults(self) -> None:
        self._faults.clear()

    # ---- request log -----------------------------------------------------------------------

    def log_request(
        self, endpoint: str, method: str, path: str, payment_id: str | None
    ) -> ApiRequest:
        entry = ApiRequest(endpoint, method, path, payment_id, datetime.now(UTC))
        self._requests.append(entry)
        return entry

    def list_requests(self, filters: dict[str, str]) -> list[Json]:
        """Logged calls matching every given ``endpoint``/``method``/``payment_id``."""
        return [
            {
                "endpoint": r.endpoint,
                "method": r.method,
                "path": r.path,
                "payment_id": r.payment_id,
                "at": r.at.isoformat(timespec="microseconds"),
                "status": r.status,
            }
            for r in self._requests
            if all(getattr(r, key) == value for key, value in filters.items())
        ]
