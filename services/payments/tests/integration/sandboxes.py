"""The Mollie sandbox in this test process, and a client of it (integration tests of payments)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from payments.providers.mollie import MollieClient, MollieConfig
from ticketing_local.sandbox.mollie import SandboxConfig, serve
from ticketing_local.serving import in_process

KEY = "test_" + "p4" * 16


@asynccontextmanager
async def mollie_sandbox(
    **client_options: Any,
) -> AsyncIterator[tuple[str, MollieClient, httpx.AsyncClient]]:
    """(its URL, our client of it, a client of its control API); ``client_options`` go to the
    client (backoff, budget). Refunds settle only when told to."""
    config = SandboxConfig(api_keys=frozenset({KEY}), auto_settle_ms=-1)
    async with (
        in_process(serve, config) as (url, _app),
        httpx.AsyncClient(timeout=10) as http,
        httpx.AsyncClient(base_url=url, timeout=10) as control,
    ):
        client = MollieClient(
            MollieConfig(
                base_url=url,
                api_key=KEY,
                webhook_url="http://127.0.0.1:9/v1/webhooks/mollie",
                redirect_url="http://127.0.0.1:9/orders/{order_id}",
            ),
            http,
            **client_options,
        )
        yield url, client, control
