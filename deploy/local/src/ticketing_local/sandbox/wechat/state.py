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

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # notifications go out through aiohttp: under a burst of deliveries (a hundred refunds
        # settling per second) its client costs a fraction of httpx's CPU per request, and the
        # sandbox must never be the slowest part of what a benchmark measures
        self._session: aiohttp.ClientSession | None = None

    # ---- clocks and background tasks -------------------------------------------------------

    def now(self) -> float:
        """Business time (Unix seconds): real time plus the ``/sandbox/clock`` offset."""
        return time.time() + self._clock_offset

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), CST)

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds

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
        if self._session is not None:
            await self._session.close()

    def http(self) -> aiohttp.ClientSession:
        """The session notifications are POSTed with (made on first use, inside the loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.notify_timeout_s),
                headers={"User-Agent": "Mozilla/4.0"},
                trust_env=False,
                connector=aiohttp.TCPConnector(limit=200),
            )
        return self._session

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
