"""The WeChat Pay adapter against the WeChat Pay sandbox (in-process on a free port, real HTTP,
signed both ways): a rate-limited call is retried no earlier than the sandbox's Retry-After."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from payments.providers.wechatpay import WeChatPayClient, WeChatPayConfig, WeChatPayError
from ticketing_local.keys import ensure_wechat_keys
from ticketing_local.sandbox.wechat import SandboxConfig, serve
from ticketing_local.serving import in_process

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Bench:
    def __init__(self, url: str, keys: Path, control: httpx.AsyncClient) -> None:
        self.url, self.keys, self.control = url, keys, control
        #: when each request to the provider API left the adapter (monotonic seconds, path)
        self.sent: list[tuple[float, str]] = []

    async def _record(self, request: httpx.Request) -> None:
        self.sent.append((time.monotonic(), request.url.path))

    def client(self, http: httpx.AsyncClient, **kw: float) -> WeChatPayClient:
        wx = self.keys / "wechat"
        meta = json.loads((wx / "wechat.json").read_text())
        config = WeChatPayConfig.from_pem(
            base_url=self.url,
            mchid=meta["mchid"],
            appid=meta["appid"],
            merchant_serial=meta["merchant_serial"],
            merchant_private_pem=(wx / "merchant-private.pem").read_bytes(),
            platform_public_pem=(wx / "platform-public.pem").read_bytes(),
            platform_public_key_id=meta["public_key_id"],
            apiv3_key=(wx / "apiv3.key").read_text(),
            notify_url="http://127.0.0.1:9/v1/webhooks/wechatpay",
        )
        return WeChatPayClient(config, http, backoff_s=0.01, **kw)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10, event_hooks={"request": [self._record]})

    async def fault(self, endpoint: str, code: str, retry_after: int) -> None:
        resp = await self.control.post(
            "/sandbox/faults",
            json={"endpoint": endpoint, "code": code, "retry_after": retry_after, "times": 1},
        )
        assert resp.status_code == 201, resp.text


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bench(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bench]:
    keys = tmp_path_factory.mktemp("wechat-keys")
    ensure_wechat_keys(keys)
    config = SandboxConfig.from_keys_dir(keys, auto_settle_ms=-1)
    async with (
        in_process(serve, config) as (url, _app),
        httpx.AsyncClient(base_url=url, timeout=10) as control,
    ):
        yield Bench(url, keys, control)


async def test_a_429_is_retried_no_earlier_than_its_retry_after(bench: Bench) -> None:
    async with bench.http() as http:
        client = bench.client(http)
        no = uuid.uuid4().hex
        await client.prepay_native(out_trade_no=no, description="pacing", total=100)
        await bench.fault("query", "FREQUENCY_LIMITED", 1)
        bench.sent.clear()
        order = await client.query(no)
    assert order["out_trade_no"] == no and order["trade_state"] == "NOTPAY"
    (first, _), (second, _) = bench.sent
    # backoff_s is 0.01 here: only the Retry-After explains a pause this long
    assert 1.0 <= second - first < 3.0


async def test_a_retry_after_longer_than_the_budget_is_left_to_the_caller(bench: Bench) -> None:
    async with bench.http() as http:
        client = bench.client(http, budget_s=1.0)
        no = uuid.uuid4().hex
        await client.prepay_native(out_trade_no=no, description="pacing", total=100)
        await bench.fault("close", "FREQUENCY_LIMITED", 3)
        bench.sent.clear()
        started = time.monotonic()
        with pytest.raises(WeChatPayError) as caught:
            await client.close(no)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 and len(bench.sent) == 1
    assert caught.value.retryable and caught.value.retry_after_s == 3.0
