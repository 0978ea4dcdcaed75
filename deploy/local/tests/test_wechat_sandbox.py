"""Fidelity tests of the WeChat Pay v3 sandbox (the behaviours a client of the real API relies on).

The sandbox runs in-process on a free port with keys generated into a temporary directory. The
real ``wechatpayv3`` SDK (≥2.0.4) drives it and checks every response signature and decrypts the
notifications it sends; raw httpx requests probe the protocol edges. Notifications go to a small
in-process Starlette receiver whose answers each test scripts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from wechatpayv3 import WeChatPay, WeChatPayType

from ticketing_local.embedded import free_port
from ticketing_local.keys import ensure_wechat_keys
from ticketing_local.sandbox.wechat import (
    RETRY_SCHEDULE_S,
    SandboxConfig,
    WeChatSandbox,
    main,
    serve,
)
from ticketing_local.serving import ListeningServer, in_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOST = "127.0.0.1"
TEST_TIMEOUT = 20.0
SRC_DIR = Path(__file__).resolve().parents[1] / "src"
Json = dict[str, Any]


def new_no(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = TEST_TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# keys and identities


@dataclass(frozen=True)
class Keys:
    dir: Path
    mchid: str
    appid: str
    merchant_serial: str
    public_key_id: str
    merchant_private_pem: str
    platform_public_pem: str
    apiv3_key: str
    merchant_private: rsa.RSAPrivateKey
    platform_public: rsa.RSAPublicKey


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys_dir = tmp_path_factory.mktemp("keys")
    paths = ensure_wechat_keys(keys_dir)
    ids = json.loads(paths["config"].read_text())
    merchant_private = serialization.load_pem_private_key(
        paths["merchant_private"].read_bytes(), password=None
    )
    platform_public = serialization.load_pem_public_key(paths["platform_public"].read_bytes())
    assert isinstance(merchant_private, rsa.RSAPrivateKey)
    assert isinstance(platform_public, rsa.RSAPublicKey)
    return Keys(
        dir=keys_dir,
        mchid=ids["mchid"],
        appid=ids["appid"],
        merchant_serial=ids["merchant_serial"],
        public_key_id=ids["public_key_id"],
        merchant_private_pem=paths["merchant_private"].read_text(),
        platform_public_pem=paths["platform_public"].read_text(),
        apiv3_key=paths["apiv3_key"].read_text(),
        merchant_private=merchant_private,
        platform_public=platform_public,
    )


# --------------------------------------------------------------------------------------------
# notification receiver


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Json:
        data: Json = json.loads(self.body)
        return data


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass
class ReceiverServer:
    """Records every POST; answers from a per-path script, then 200 with an empty body."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    deciders: dict[str, Callable[[Hit], int]] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: Request) -> Response:
        hit = Hit(request.url.path, dict(request.headers), await request.body(), time.monotonic())
        decider = self.deciders.get(hit.path)
        script = self.scripts.get(hit.path)
        answer = script.pop(0) if script else Answer()
        if decider is not None:
            answer = Answer(decider(hit))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        async with self.changed:
            self.hits.append(hit)
            self.changed.notify_all()
        return Response(answer.body, answer.status, media_type="application/json")


@dataclass
class Receiver:
    """One test's view of the shared receiver: its paths live under a private prefix."""

    server: ReceiverServer
    prefix: str

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{self.prefix}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        self.server.scripts[self.prefix + path] = list(answers)

    def decide(self, path: str, decider: Callable[[Hit], int]) -> None:
        self.server.deciders[self.prefix + path] = decider

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.server.hits if h.path == self.prefix + path]

    async def wait(self, path: str, count: int, timeout: float = TEST_TIMEOUT) -> list[Hit]:
        async with asyncio.timeout(timeout), self.server.changed:
            await self.server.changed.wait_for(lambda: len(self.at(path)) >= count)
        return self.at(path)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver_server() -> AsyncIterator[ReceiverServer]:
    rec = ReceiverServer()
    app = Starlette(routes=[Route("/{path:path}", rec.handle, methods=["POST"])])
    port = free_port()
    server = ListeningServer(
        uvicorn.Config(
            app, host=HOST, port=port, log_config=None, lifespan="off", ws="none", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await server.listening.wait()
        rec.base_url = f"http://{HOST}:{port}"
        yield rec
    finally:
        server.should_exit = True
        async with asyncio.timeout(TEST_TIMEOUT):
            await task


@pytest.fixture
def receiver(receiver_server: ReceiverServer) -> Receiver:
    return Receiver(receiver_server, f"/{uuid.uuid4().hex}")


# --------------------------------------------------------------------------------------------
# sandbox and a raw, hand-signing merchant client


AUTH_ORDERS = {
    "wxpy": ("mchid", "nonce_str", "signature", "timestamp", "serial_no"),
    "wxgo": ("mchid", "nonce_str", "timestamp", "serial_no", "signature"),
    "reversed": ("serial_no", "timestamp", "signature", "nonce_str", "mchid"),
}


@dataclass
class Sandbox:
    base_url: str
    state: WeChatSandbox
    keys: Keys
    http: httpx.AsyncClient

    def authorization(
        self,
        method: str,
        target: str,
        body: bytes,
        *,
        order: str = "wxpy",
        timestamp: int | None = None,
        nonce: str | None = None,
        serial: str | None = None,
        mchid: str | None = None,
        message: bytes | None = None,
    ) -> str:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or uuid.uuid4().hex.upper()
        if message is None:
            message = f"{method}\n{target}\n{ts}\n{nonce}\n".encode() + body + b"\n"
        signature = base64.b64encode(
            self.keys.merchant_private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        values = {
            "mchid": mchid or self.keys.mchid,
            "nonce_str": nonce,
            "signature": signature,
            "timestamp": ts,
            "serial_no": serial or self.keys.merchant_serial,
        }
        pairs = ",".join(f'{k}="{values[k]}"' for k in AUTH_ORDERS[order])
        return f"WECHATPAY2-SHA256-RSA2048 {pairs}"

    async def call(
        self,
        method: str,
        target: str,
        data: Json | bytes | None = None,
        *,
        send_body: bytes | None = None,
        send_target: str | None = None,
        headers: dict[str, str] | None = None,
        **auth: Any,
    ) -> httpx.Response:
        """Sign ``method target body`` and send it (optionally a different body or target)."""
        # a dict is sent the way wxpy signs and sends it: json.dumps with default separators
        body = json.dumps(data).encode() if isinstance(data, dict) else data or b""
        headers = {
            "Authorization": self.authorization(method, target, body, **auth),
            "Accept": "application/json",
            "Content-Type": "application/json",
            **(headers or {}),
        }
        sent = body if send_body is None else send_body
        return await self.http.request(method, send_target or target, content=sent, headers=headers)

    def order_body(self, out_trade_no: str, notify_url: str, **extra: Any) -> Json:
        body: Json = {
            "appid": self.keys.appid,
            "mchid": self.keys.mchid,
            "description": "Concert ticket — 演唱会门票",
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": 100, "currency": "CNY"},
        }
        body.update(extra)
        return body

    async def native(self, notify_url: str, total: int = 100, **extra: Any) -> str:
        no = new_no()
        body = self.order_body(no, notify_url, amount={"total": total, "currency": "CNY"}, **extra)
        response = await self.call("POST", "/v3/pay/transactions/native", body)
        assert response.status_code == 200, response.text
        return no

    async def paid_order(self, notify_url: str, total: int = 100) -> Json:
        no = await self.native(notify_url, total)
        paid = await self.http.post(f"/sandbox/pay/{no}")
        assert paid.status_code == 200, paid.text
        transaction: Json = paid.json()["transaction"]
        return transaction

    async def query(self, out_trade_no: str) -> httpx.Response:
        target = f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.keys.mchid}"
        return await self.call("GET", target)

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund: int, total: int, **extra: Any
    ) -> httpx.Response:
        body: Json = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"},
            **extra,
        }
        return await self.call("POST", "/v3/refund/domestic/refunds", body)

    async def notifications(self, **filters: str) -> list[Json]:
        response = await self.http.get("/sandbox/notifications", params=filters)
        assert response.status_code == 200
        notes: list[Json] = response.json()
        return notes


@contextlib.asynccontextmanager
async def open_sandbox(keys: Keys, **overrides: Any) -> AsyncIterator[Sandbox]:
    """Run a sandbox in-process on a free port (refunds settle only when told, by default)."""
    overrides.setdefault("auto_settle_ms", -1)
    config = SandboxConfig.from_keys_dir(keys.dir, **overrides)
    async with (
        in_process(serve, config, host=HOST, timeout_s=TEST_TIMEOUT) as (base_url, app),
        httpx.AsyncClient(base_url=base_url, timeout=10, trust_env=False) as http,
    ):
        yield Sandbox(base_url, app.state.sandbox, keys, http)


StartSandbox = Callable[..., contextlib.AbstractAsyncContextManager[Sandbox]]


@pytest.fixture
def start_sandbox(keys: Keys) -> StartSandbox:
    """Start a sandbox with config overrides: ``async with start_sandbox(time_scale=…) as sb``."""
    return functools.partial(open_sandbox, keys)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox(keys: Keys) -> AsyncIterator[Sandbox]:
    """One sandbox shared by the tests that touch no global state (order numbers are unique)."""
    async with open_sandbox(keys) as sb:
        yield sb


@pytest.fixture
async def fresh(keys: Keys) -> AsyncIterator[Sandbox]:
    """A sandbox of its own, for tests that change global state (faults, the clock)."""
    async with open_sandbox(keys) as sb:
        yield sb


def sdk_client(sb: Sandbox, notify_url: str, apiv3_key: str | None = None) -> WeChatPay:
    wx = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=sb.keys.mchid,
        private_key=sb.keys.merchant_private_pem,
        cert_serial_no=sb.keys.merchant_serial,
        apiv3_key=apiv3_key or sb.keys.apiv3_key,
        appid=sb.keys.appid,
        notify_url=notify_url,
        public_key=sb.keys.platform_public_pem,
        public_key_id=sb.keys.public_key_id,
        timeout=(5, 10),
    )
    wx._core._gate_way = sb.base_url
    return wx


def assert_signed(response: httpx.Response, keys: Keys) -> None:
    """The response carries WeChat's signature headers and verifies over ts\\nnonce\\nbody\\n."""
    h = response.headers
    assert h["Wechatpay-Serial"] == keys.public_key_id
    assert h["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"
    assert re.fullmatch(r"[0-9a-f]{32}", h["Wechatpay-Nonce"])
    assert abs(int(h["Wechatpay-Timestamp"]) - time.time()) < 60
    assert h["Request-ID"]
    message = f"{h['Wechatpay-Timestamp']}\n{h['Wechatpay-Nonce']}\n".encode()
    message += response.content + b"\n"
    keys.platform_public.verify(
        base64.b64decode(h["Wechatpay-Signature"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


def decrypt_resource(resource: Json, apiv3_key: str) -> Json:
    plaintext = AESGCM(apiv3_key.encode()).decrypt(
        resource["nonce"].encode(),
        base64.b64decode(resource["ciphertext"]),
        resource["associated_data"].encode(),
    )
    data: Json = json.loads(plaintext)
    return data


# --------------------------------------------------------------------------------------------
# real SDK round trips


async def test_sdk_round_trip_native_query_close_refund(
    sandbox: Sandbox, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    notify_url = receiver.url("/wx/pay")
    refund_url = receiver.url("/wx/refund")
    wx = sdk_client(sandbox, notify_url)
    run = asyncio.to_thread

    async with asyncio.timeout(TEST_TIMEOUT):
        # prepay → query → close (204) → query CLOSED
        first = new_no()
        code, text = await run(
            wx.pay, description="门票 A区 1张", out_trade_no=first, amount={"total": 188}
        )
        assert code == 200, text
        assert json.loads(text)["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
        code, text = await run(wx.query, out_trade_no=first)
        assert code == 200
        assert json.loads(text)["trade_state"] == "NOTPAY"
        code, body = await run(wx.close, out_trade_no=first)
        assert (code, body) == (204, b"")
        code, body = await run(wx.close, out_trade_no=first)  # re-entrant
        assert code == 204
        code, text = await run(wx.query, out_trade_no=first)
        assert json.loads(text)["trade_state"] == "CLOSED"

        # a paid order: notification decrypted by the SDK matches the query
        second = new_no()
        code, text = await run(
            wx.pay,
            description="门票 B区 2张",
            out_trade_no=second,
            amount={"total": 500},
            attach="seat=B7",
        )
        assert code == 200, text
        assert (await sandbox.http.post(f"/sandbox/pay/{second}")).status_code == 200
        [hit] = await receiver.wait("/wx/pay", 1)
        callback = wx.callback(hit.headers, hit.body)
        assert callback is not None
        assert callback["event_type"] == "TRANSACTION.SUCCESS"
        code, text = await run(wx.query, out_trade_no=second)
        queried = json.loads(text)
        assert callback["resource"] == queried
        assert queried["trade_state"] == "SUCCESS"
        assert queried["attach"] == "seat=B7"
        code, text = await run(wx.query, transaction_id=queried["transaction_id"])
        assert code == 200
        assert json.loads(text) == queried

        # refund → query refund → settle → REFUND.SUCCESS decrypted by the SDK
        out_refund_no = new_no("R")
        code, text = await run(
            wx.refund,
            out_refund_no=out_refund_no,
            amount={"refund": 200, "total": 500, "currency": "CNY"},
            out_trade_no=second,
            reason="演出取消",
            notify_url=refund_url,
        )
        assert code == 200, text
        created = json.loads(text)
        assert created["status"] == "PROCESSING"
        assert created["amount"]["refund"] == 200
        code, text = await run(wx.query_refund, out_refund_no=out_refund_no)
        assert code == 200
        assert json.loads(text) == created
        settle = await sandbox.http.post(
            f"/sandbox/refunds/{out_refund_no}/settle", json={"status": "SUCCESS"}
        )
        assert settle.status_code == 200
        [hit] = await receiver.wait("/wx/refund", 1)
        callback = wx.callback(hit.headers, hit.body)
        assert callback is not None
        assert callback["event_type"] == "REFUND.SUCCESS"
        resource = callback["resource"]
        code, text = await run(wx.query_refund, out_refund_no=out_refund_no)
        settled = json.loads(text)
        assert settled["status"] == "SUCCESS"
        assert resource["refund_status"] == "SUCCESS"
        assert "status" not in resource
        for key in ("refund_id", "out_refund_no", "transaction_id", "out_trade_no", "success_time"):
            assert resource[key] == settled[key]
        assert resource["amount"] == {
            "total": 500,
            "refund": 200,
            "payer_total": 500,
            "payer_refund": 200,
        }
        code, text = await run(wx.query, out_trade_no=second)
        assert json.loads(text)["trade_state"] == "REFUND"

        # wrong APIv3 key: the SDK refuses to decrypt
        wrong = sdk_client(sandbox, notify_url, apiv3_key="0" * 32)
        assert wrong.callback(hit.headers, hit.body) is None


async def test_async_sdk_round_trip(sandbox: Sandbox, receiver: Receiver) -> None:
    pytest.importorskip("aiofiles", reason="wechatpayv3[async] extra not installed")
    from wechatpayv3.async_ import AsyncWeChatPay
    from wechatpayv3.async_ import WeChatPayType as AsyncPayType

    keys = sandbox.keys
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        AsyncWeChatPay(
            wechatpay_type=AsyncPayType.NATIVE,
            mchid=keys.mchid,
            private_key=keys.merchant_private_pem,
            cert_serial_no=keys.merchant_serial,
            apiv3_key=keys.apiv3_key,
            appid=keys.appid,
            notify_url=receiver.url("/async"),
            public_key=keys.platform_public_pem,
            public_key_id=keys.public_key_id,
        ) as wx,
    ):
        wx._core._gate_way = sandbox.base_url
        no = new_no()
        code, text = await wx.pay(description="异步 门票", out_trade_no=no, amount={"total": 30})
        assert code == 200, text
        code, text = await wx.query(out_trade_no=no)
        assert json.loads(text)["trade_state"] == "NOTPAY"
        await sandbox.http.post(f"/sandbox/pay/{no}")
        code, text = await wx.refund(
            out_refund_no=new_no("R"),
            amount={"refund": 30, "total": 30, "currency": "CNY"},
            out_trade_no=no,
        )
        assert code == 200, text
        code, text = await wx.query_refund(out_refund_no=json.loads(text)["out_refund_no"])
        assert json.loads(text)["status"] == "PROCESSING"
        other = new_no()
        await wx.pay(description="异步 关单", out_trade_no=other, amount={"total": 30})
        code, _ = await wx.close(out_trade_no=other)
        assert code == 204


# --------------------------------------------------------------------------------------------
# response signatures and request authentication


async def test_every_response_is_signed(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        no = await sandbox.native(receiver.url("/n"))
        ok = await sandbox.query(no)
        closed = await sandbox.call(
            "POST", f"/v3/pay/transactions/out-trade-no/{no}/close", {"mchid": sandbox.keys.mchid}
        )
        bad_param = await sandbox.call(
            "POST",
            "/v3/pay/transactions/native",
            sandbox.order_body(new_no(), receiver.url("/n"), amount={"total": 0}),
        )
        unsigned = await sandbox.http.get(f"/v3/pay/transactions/out-trade-no/{no}?mchid=1")
        missing = await sandbox.query(new_no())
        unknown = await sandbox.call("GET", "/v3/no/such/api")

    assert ok.status_code == 200
    assert ok.headers["Request-ID"].endswith("-0")
    assert closed.status_code == 204
    assert closed.content == b""
    assert bad_param.status_code == 400
    assert unsigned.status_code == 401
    assert missing.status_code == 404
    assert missing.json() == {"code": "ORDER_NOT_EXIST", "message": "订单不存在"}
    assert unknown.status_code == 404
    for response in (ok, closed, bad_param, unsigned, missing, unknown):
        assert_signed(response, sandbox.keys)
    for response in (bad_param, unsigned, missing):
        assert not response.headers["Request-ID"].endswith("-0")


@pytest.mark.parametrize("order", sorted(AUTH_ORDERS))
async def test_authorization_pairs_in_any_order(
    sandbox: Sandbox, receiver: Receiver, order: str
) -> None:
    body = sandbox.order_body(new_no(), receiver.url("/n"))
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.call("POST", "/v3/pay/transactions/native", body, order=order)
        query = await sandbox.call(
            "GET",
            f"/v3/pay/transactions/out-trade-no/{body['out_trade_no']}?mchid={sandbox.keys.mchid}",
            order=order,
        )
    assert response.status_code == 200, response.text
    assert query.status_code == 200, query.text


def _spaced(body: Json) -> bytes:
    return json.dumps(body).encode()


def _compact(body: Json) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


SIGN_CASES: dict[str, dict[str, Any]] = {
    "tampered body": {"tamper": lambda b: b.replace(b'"total": 100', b'"total": 1')},
    "re-serialized body": {"tamper": lambda b: _compact(json.loads(b))},
    "wrong serial": {"serial": "0123456789ABCDEF0123456789ABCDEF01234567"},
    "wrong mchid": {"mchid": "1900000000"},
    "old timestamp": {"timestamp_offset": -400},
    "future timestamp": {"timestamp_offset": 400},
    "wrong path": {"send_target": "/v3/pay/transactions/jsapi"},
}


@pytest.mark.parametrize("case", sorted(SIGN_CASES))
async def test_bad_post_signatures_are_rejected(
    sandbox: Sandbox, receiver: Receiver, case: str
) -> None:
    spec = dict(SIGN_CASES[case])
    if "timestamp_offset" in spec:
        spec["timestamp"] = int(time.time()) + spec.pop("timestamp_offset")
    body = _spaced(sandbox.order_body(new_no(), receiver.url("/n")))
    tamper = spec.pop("tamper", None)
    send_body = tamper(body) if tamper else None
    assert send_body != body
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.call(
            "POST", "/v3/pay/transactions/native", body, send_body=send_body, **spec
        )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "SIGN_ERROR"
    assert_signed(response, sandbox.keys)


async def test_bad_get_signatures_are_rejected(sandbox: Sandbox, receiver: Receiver) -> None:
    mchid = sandbox.keys.mchid
    async with asyncio.timeout(TEST_TIMEOUT):
        no = await sandbox.native(receiver.url("/n"))
        target = f"/v3/pay/transactions/out-trade-no/{no}?mchid={mchid}"
        good = await sandbox.call("GET", target)
        ts, nonce = int(time.time()), uuid.uuid4().hex
        no_trailing_line = await sandbox.call(
            "GET",
            target,
            timestamp=ts,
            nonce=nonce,
            message=f"GET\n{target}\n{ts}\n{nonce}\n".encode(),
        )
        other_query = await sandbox.call("GET", target, send_target=f"{target}&x=1")
        without_query = await sandbox.call(
            "GET", f"/v3/pay/transactions/out-trade-no/{no}", send_target=target
        )
        other_order = await sandbox.call(
            "GET", target, send_target=f"/v3/pay/transactions/out-trade-no/{new_no()}?mchid={mchid}"
        )
        garbage = await sandbox.http.get(
            target, headers={"Authorization": 'WECHATPAY2-SHA256-RSA2048 mchid="x"'}
        )
    assert good.status_code == 200
    for response in (no_trailing_line, other_query, without_query, other_order, garbage):
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "SIGN_ERROR"


# --------------------------------------------------------------------------------------------
# input rules


INPUT_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "amount zero": ("native", {"amount": {"total": 0, "currency": "CNY"}}, "/amount/total"),
    "amount negative": ("native", {"amount": {"total": -5}}, "/amount/total"),
    "amount not int": ("native", {"amount": {"total": "100"}}, "/amount/total"),
    "bad currency": ("native", {"amount": {"total": 1, "currency": "USD"}}, "/amount/currency"),
    "emoji description": ("native", {"description": "门票 🎫"}, "/description"),
    "emoji attach": ("native", {"attach": "seat 🎟"}, "/attach"),
    "long description": ("native", {"description": "x" * 128}, "/description"),
    "short out_trade_no": ("native", {"out_trade_no": "T1234"}, "/out_trade_no"),
    "long out_trade_no": ("native", {"out_trade_no": "T" * 33}, "/out_trade_no"),
    "bad char out_trade_no": ("native", {"out_trade_no": "T12345#6"}, "/out_trade_no"),
    "notify_url query": ("native", {"notify_url": "https://shop.test/notify?x=1"}, "/notify_url"),
    "notify_url relative": ("native", {"notify_url": "/notify"}, "/notify_url"),
    "jsapi without payer": ("jsapi", {}, "/payer"),
    "jsapi without openid": ("jsapi", {"payer": {}}, "/payer/openid"),
    "null value": ("native", {"attach": None}, "/attach"),
    "bad time_expire": ("native", {"time_expire": "2030-01-01 10:00:00"}, "/time_expire"),
}


@pytest.mark.parametrize("case", sorted(INPUT_CASES))
async def test_input_rules(sandbox: Sandbox, receiver: Receiver, case: str) -> None:
    endpoint, extra, pointer = INPUT_CASES[case]
    body = sandbox.order_body(new_no(), receiver.url("/n"))
    body.update(extra)
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.call("POST", f"/v3/pay/transactions/{endpoint}", body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "PARAM_ERROR"
    assert error["detail"]["field"] == pointer
    assert error["detail"]["location"] == "body"


async def test_valid_edge_inputs_are_accepted(sandbox: Sandbox, receiver: Receiver) -> None:
    expire = (datetime.now().astimezone() + timedelta(hours=1)).isoformat(timespec="seconds")
    cases: list[tuple[str, Json]] = [
        ("native", {"out_trade_no": f"A_-|*{uuid.uuid4().hex[:6]}"}),  # _-|* are allowed
        ("native", {"out_trade_no": uuid.uuid4().hex, "description": "中文描述" * 31}),  # 32, 124
        ("native", {"time_expire": expire, "attach": ""}),
        ("jsapi", {"payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}),
    ]
    async with asyncio.timeout(TEST_TIMEOUT):
        for endpoint, extra in cases:
            body = sandbox.order_body(new_no(), receiver.url("/n"))
            body.update(extra)
            response = await sandbox.call("POST", f"/v3/pay/transactions/{endpoint}", body)
            assert response.status_code == 200, (extra, response.text)
    assert re.fullmatch(r"wx\d{14}[0-9a-f]{20}", response.json()["prepay_id"])


async def test_mchid_and_appid_must_match(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        wrong_appid = await sandbox.call(
            "POST",
            "/v3/pay/transactions/native",
            sandbox.order_body(new_no(), receiver.url("/n"), appid="wx0000000000000000"),
        )
        wrong_mchid = await sandbox.call(
            "POST",
            "/v3/pay/transactions/native",
            sandbox.order_body(new_no(), receiver.url("/n"), mchid="1900000000"),
        )
        no_mchid = await sandbox.call("GET", f"/v3/pay/transactions/out-trade-no/{new_no()}")
        target = f"/v3/pay/transactions/out-trade-no/{new_no()}?mchid={sandbox.keys.mchid}"
        right_serial = await sandbox.call(
            "GET", target, headers={"Wechatpay-Serial": sandbox.keys.public_key_id}
        )
        wrong_serial = await sandbox.call(
            "GET", target, headers={"Wechatpay-Serial": "PUB_KEY_ID_0000000000"}
        )
    assert wrong_appid.status_code == 400
    assert wrong_appid.json()["code"] == "APPID_MCHID_NOT_MATCH"
    assert wrong_mchid.status_code == 400
    assert wrong_mchid.json()["detail"]["field"] == "/mchid"
    assert no_mchid.status_code == 400
    assert no_mchid.json()["detail"] == {
        "field": "mchid",
        "issue": "required",
        "location": "query",
    }
    assert right_serial.status_code == 404  # accepted; the order just does not exist
    assert wrong_serial.status_code == 400
    assert wrong_serial.json()["detail"]["field"] == "Wechatpay-Serial"


# --------------------------------------------------------------------------------------------
# idempotency and the order state machine


async def test_prepay_is_idempotent(sandbox: Sandbox, receiver: Receiver) -> None:
    url = receiver.url("/n")
    native_body = sandbox.order_body(new_no(), url)
    jsapi_body = sandbox.order_body(new_no(), url, payer={"openid": "o-test-openid"})
    async with asyncio.timeout(TEST_TIMEOUT):
        n1 = await sandbox.call("POST", "/v3/pay/transactions/native", native_body)
        # same content, other key order and separators: still the same parameters
        n2 = await sandbox.call(
            "POST",
            "/v3/pay/transactions/native",
            _compact(dict(reversed(list(native_body.items())))),
        )
        j1 = await sandbox.call("POST", "/v3/pay/transactions/jsapi", jsapi_body)
        j2 = await sandbox.call("POST", "/v3/pay/transactions/jsapi", jsapi_body)
        changed = await sandbox.call(
            "POST",
            "/v3/pay/transactions/native",
            {**native_body, "amount": {"total": 101, "currency": "CNY"}},
        )
        other_type = await sandbox.call(
            "POST", "/v3/pay/transactions/jsapi", {**native_body, "payer": {"openid": "o1"}}
        )
        await sandbox.http.post(f"/sandbox/pay/{native_body['out_trade_no']}")
        after_pay = await sandbox.call("POST", "/v3/pay/transactions/native", native_body)
        close_paid = await sandbox.call(
            "POST",
            f"/v3/pay/transactions/out-trade-no/{native_body['out_trade_no']}/close",
            {"mchid": sandbox.keys.mchid},
        )
        close_target = f"/v3/pay/transactions/out-trade-no/{jsapi_body['out_trade_no']}/close"
        c1 = await sandbox.call("POST", close_target, {"mchid": sandbox.keys.mchid})
        c2 = await sandbox.call("POST", close_target, {"mchid": sandbox.keys.mchid})
        after_close = await sandbox.call("POST", "/v3/pay/transactions/jsapi", jsapi_body)
        pay_closed = await sandbox.http.post(f"/sandbox/pay/{jsapi_body['out_trade_no']}")

    assert n1.status_code == n2.status_code == 200
    assert n1.json() == n2.json()
    assert j1.status_code == j2.status_code == 200
    assert j1.json() == j2.json()
    assert set(j1.json()) == {"prepay_id"}
    for response in (changed, other_type):
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_REQUEST"
    assert after_pay.status_code == close_paid.status_code == 403
    assert after_pay.json()["code"] == close_paid.json()["code"] == "ORDER_PAID"
    assert c1.status_code == c2.status_code == 204
    assert after_close.status_code == 400
    assert after_close.json()["code"] == "ORDER_CLOSED"
    assert pay_closed.status_code == 409


async def test_transaction_fields_follow_the_state(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        no = await sandbox.native(receiver.url("/n"), total=250)
        unpaid = (await sandbox.query(no)).json()
        paid = await sandbox.http.post(f"/sandbox/pay/{no}", json={"openid": "o-buyer"})
        queried = (await sandbox.query(no)).json()
        by_id = await sandbox.call(
            "GET",
            f"/v3/pay/transactions/id/{queried['transaction_id']}?mchid={sandbox.keys.mchid}",
        )
        unknown_id = await sandbox.call(
            "GET", f"/v3/pay/transactions/id/{'4' * 28}?mchid={sandbox.keys.mchid}"
        )

    assert unpaid["trade_state"] == "NOTPAY"
    assert unpaid["trade_state_desc"] == "订单未支付"
    assert unpaid["amount"] == {"total": 250, "payer_currency": "CNY"}
    for key in ("transaction_id", "success_time", "payer", "bank_type"):
        assert key not in unpaid
    assert paid.status_code == 200
    assert queried["trade_state"] == "SUCCESS"
    assert re.fullmatch(r"\d{28}", queried["transaction_id"])
    assert queried["payer"] == {"openid": "o-buyer"}
    assert queried["bank_type"] == "OTHERS"
    assert queried["trade_type"] == "NATIVE"
    assert queried["amount"] == {
        "total": 250,
        "payer_total": 250,
        "currency": "CNY",
        "payer_currency": "CNY",
    }
    success_time = datetime.fromisoformat(queried["success_time"])
    assert success_time.utcoffset() == timedelta(hours=8)
    assert by_id.status_code == 200
    assert by_id.json() == queried
    assert unknown_id.status_code == 404


async def test_time_expire_closes_the_order(fresh: Sandbox, receiver: Receiver) -> None:
    expire = (datetime.now().astimezone() + timedelta(minutes=10)).isoformat(timespec="seconds")
    async with asyncio.timeout(TEST_TIMEOUT):
        no = await fresh.native(receiver.url("/n"), time_expire=expire)
        before = (await fresh.query(no)).json()
        clock = await fresh.http.post("/sandbox/clock", json={"advance_seconds": 601})
        after = (await fresh.query(no)).json()
        pay = await fresh.http.post(f"/sandbox/pay/{no}")
        past = await fresh.call(
            "POST",
            "/v3/pay/transactions/native",
            fresh.order_body(new_no(), receiver.url("/n"), time_expire=expire),
        )
    assert before["trade_state"] == "NOTPAY"
    assert clock.json()["offset_seconds"] == 601
    assert after["trade_state"] == "CLOSED"
    assert after["trade_state_desc"] == "订单已关闭"
    assert pay.status_code == 409
    assert past.status_code == 400
    assert past.json()["detail"]["field"] == "/time_expire"


# --------------------------------------------------------------------------------------------
# refunds


async def test_refund_rules(sandbox: Sandbox, receiver: Receiver) -> None:
    url = receiver.url("/n")
    async with asyncio.timeout(TEST_TIMEOUT):
        unpaid = await sandbox.native(url, total=300)
        on_unpaid = await sandbox.refund(unpaid, new_no("R"), 100, 300)
        no_order = await sandbox.refund(new_no(), new_no("R"), 100, 300)
        paid = (await sandbox.paid_order(url, total=300))["out_trade_no"]
        wrong_total = await sandbox.refund(paid, new_no("R"), 100, 299)
        refund_over_total = await sandbox.refund(paid, new_no("R"), 301, 300)
        r1_no = new_no("R")
        r1 = await sandbox.refund(paid, r1_no, 200, 300)
        replay = await sandbox.refund(paid, r1_no, 200, 300)
        replay_changed = await sandbox.refund(paid, r1_no, 150, 300)
        too_much = await sandbox.refund(paid, new_no("R"), 101, 300)
        r2 = await sandbox.refund(paid, new_no("R"), 100, 300)
        none_left = await sandbox.refund(paid, new_no("R"), 1, 300)
        unknown = await sandbox.call("GET", f"/v3/refund/domestic/refunds/{new_no('R')}")
        queried = await sandbox.call("GET", f"/v3/refund/domestic/refunds/{r1_no}")
        order = (await sandbox.query(paid)).json()

    assert on_unpaid.status_code == 400
    assert on_unpaid.json()["code"] == "INVALID_REQUEST"
    assert no_order.status_code == 404
    assert no_order.json()["code"] == "RESOURCE_NOT_EXISTS"
    assert wrong_total.status_code == 400
    assert wrong_total.json()["detail"]["field"] == "/amount/total"
    assert refund_over_total.status_code == 400
    assert refund_over_total.json()["code"] == "PARAM_ERROR"
    assert r1.status_code == 200
    refund = r1.json()
    assert refund["status"] == "PROCESSING"
    assert "success_time" not in refund
    assert re.fullmatch(r"\d{29}", refund["refund_id"])
    assert refund["amount"]["refund"] == 200
    assert refund["amount"]["total"] == 300
    assert replay.status_code == 200
    assert replay.json() == refund
    assert replay_changed.status_code == 400
    assert too_much.status_code == 400
    assert too_much.json()["code"] == "INVALID_REQUEST"
    assert r2.status_code == 200
    assert none_left.status_code == 400
    assert unknown.status_code == 404
    assert unknown.json() == {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"}
    assert queried.json() == refund
    assert order["trade_state"] == "REFUND"
    assert order["trade_state_desc"] == "转入退款"


async def test_refund_by_transaction_id_and_fifty_refund_limit(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(receiver.url("/n"), total=100)
        for _ in range(50):
            body = {
                "transaction_id": transaction["transaction_id"],
                "out_refund_no": new_no("R"),
                "amount": {"refund": 1, "total": 100, "currency": "CNY"},
            }
            response = await sandbox.call("POST", "/v3/refund/domestic/refunds", body)
            assert response.status_code == 200, response.text
            assert response.json()["out_trade_no"] == transaction["out_trade_no"]
        fifty_first = await sandbox.refund(transaction["out_trade_no"], new_no("R"), 1, 100)
    assert fifty_first.status_code == 403
    assert fifty_first.json()["code"] == "RULE_LIMIT"


async def test_refund_spacing_is_optional(start_sandbox: StartSandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), start_sandbox(enforce_refund_spacing=True) as sb:
        no = (await sb.paid_order(receiver.url("/n"), total=100))["out_trade_no"]
        first = await sb.refund(no, new_no("R"), 10, 100)
        too_soon = await sb.refund(no, new_no("R"), 10, 100)
        await sb.http.post("/sandbox/clock", json={"advance_seconds": 61})
        later = await sb.refund(no, new_no("R"), 10, 100)
    assert first.status_code == 200
    assert too_soon.status_code == 429
    assert too_soon.json()["code"] == "FREQUENCY_LIMITED"
    assert later.status_code == 200


@pytest.mark.parametrize(
    ("status", "event", "summary"),
    [
        ("SUCCESS", "REFUND.SUCCESS", "退款成功"),
        ("ABNORMAL", "REFUND.ABNORMAL", "退款异常"),
        ("CLOSED", "REFUND.CLOSED", "退款关闭"),
    ],
)
async def test_refund_settlement_notifies(
    sandbox: Sandbox, receiver: Receiver, status: str, event: str, summary: str
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        no = (await sandbox.paid_order(receiver.url("/pay"), total=100))["out_trade_no"]
        out_refund_no = new_no("R")
        await sandbox.refund(no, out_refund_no, 100, 100, notify_url=receiver.url("/refund"))
        settle = await sandbox.http.post(
            f"/sandbox/refunds/{out_refund_no}/settle", json={"status": status}
        )
        again = await sandbox.http.post(
            f"/sandbox/refunds/{out_refund_no}/settle", json={"status": status}
        )
        [hit] = await receiver.wait("/refund", 1)
        queried = (await sandbox.call("GET", f"/v3/refund/domestic/refunds/{out_refund_no}")).json()
        after = await sandbox.refund(no, new_no("R"), 100, 100)

    assert settle.status_code == 200
    assert again.status_code == 409
    envelope = hit.json()
    assert list(envelope) == [
        "id",
        "create_time",
        "resource_type",
        "event_type",
        "summary",
        "resource",
    ]
    assert envelope["event_type"] == event
    assert envelope["summary"] == summary
    assert (
        envelope["resource"]["original_type"] == envelope["resource"]["associated_data"] == "refund"
    )
    plaintext = decrypt_resource(envelope["resource"], sandbox.keys.apiv3_key)
    assert plaintext["refund_status"] == status == queried["status"]
    assert plaintext["mchid"] == sandbox.keys.mchid
    assert ("success_time" in plaintext) == (status == "SUCCESS") == ("success_time" in queried)
    # only a CLOSED refund gives the money back to refund again
    assert after.status_code == (200 if status == "CLOSED" else 400)


async def test_auto_settle(start_sandbox: StartSandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), start_sandbox(auto_settle_ms=50) as sb:
        no = (await sb.paid_order(receiver.url("/pay")))["out_trade_no"]
        out_refund_no = new_no("R")
        created = await sb.refund(no, out_refund_no, 100, 100, notify_url=receiver.url("/refund"))
        [hit] = await receiver.wait("/refund", 1)

        async def settled() -> bool:
            response = await sb.call("GET", f"/v3/refund/domestic/refunds/{out_refund_no}")
            return bool(response.json()["status"] == "SUCCESS")

        await eventually(settled)
    assert created.json()["status"] == "PROCESSING"
    assert hit.json()["event_type"] == "REFUND.SUCCESS"


async def test_refund_without_notify_url_uses_configured_default(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        start_sandbox(refund_notify_url=receiver.url("/portal")) as sb,
    ):
        no = (await sb.paid_order(receiver.url("/pay")))["out_trade_no"]
        out_refund_no = new_no("R")
        await sb.refund(no, out_refund_no, 100, 100)
        await sb.http.post(f"/sandbox/refunds/{out_refund_no}/settle", json={"status": "SUCCESS"})
        [hit] = await receiver.wait("/portal", 1)
    assert hit.json()["event_type"] == "REFUND.SUCCESS"


# --------------------------------------------------------------------------------------------
# notifications: envelope, retries, acknowledgements


async def test_payment_notification_envelope(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(receiver.url("/pay"), total=321)
        [hit] = await receiver.wait("/pay", 1)
    envelope = hit.json()
    assert list(envelope) == [
        "id",
        "create_time",
        "resource_type",
        "event_type",
        "summary",
        "resource",
    ]
    uuid.UUID(envelope["id"])
    assert datetime.fromisoformat(envelope["create_time"]).utcoffset() == timedelta(hours=8)
    assert envelope["resource_type"] == "encrypt-resource"
    assert envelope["event_type"] == "TRANSACTION.SUCCESS"
    assert envelope["summary"] == "支付成功"
    resource = envelope["resource"]
    assert set(resource) == {"original_type", "algorithm", "ciphertext", "associated_data", "nonce"}
    assert resource["algorithm"] == "AEAD_AES_256_GCM"
    assert resource["original_type"] == resource["associated_data"] == "transaction"
    assert re.fullmatch(r"[0-9A-Za-z]{12}", resource["nonce"])
    assert decrypt_resource(resource, sandbox.keys.apiv3_key) == transaction
    assert hit.headers["content-type"] == "application/json"
    message = f"{hit.headers['wechatpay-timestamp']}\n{hit.headers['wechatpay-nonce']}\n".encode()
    sandbox.keys.platform_public.verify(
        base64.b64decode(hit.headers["wechatpay-signature"]),
        message + hit.body + b"\n",
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    assert hit.headers["wechatpay-serial"] == sandbox.keys.public_key_id
    assert hit.headers["wechatpay-signature-type"] == "WECHATPAY2-SHA256-RSA2048"


async def test_failed_acks_are_retried_on_schedule(sandbox: Sandbox, receiver: Receiver) -> None:
    receiver.script("/pay", Answer(500), Answer(500), Answer(200))
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(receiver.url("/pay"))
        hits = await receiver.wait("/pay", 3)

        async def delivered() -> list[Json]:
            notes = await sandbox.notifications(out_trade_no=transaction["out_trade_no"])
            return notes if notes and notes[0]["state"] == "delivered" else []

        [note] = await eventually(delivered)
    assert len(hits) == 3
    assert len({h.body for h in hits}) == 1
    assert len({h.json()["id"] for h in hits}) == 1
    assert len({h.headers["wechatpay-signature"] for h in hits}) == 3
    assert len({h.headers["wechatpay-nonce"] for h in hits}) == 3
    scale = sandbox.state.config.time_scale
    for (earlier, later), delay in zip(itertools.pairwise(hits), RETRY_SCHEDULE_S, strict=False):
        assert later.at - earlier.at >= delay * scale * 0.9
    assert note["id"] == hits[0].json()["id"]
    assert [a["status_code"] for a in note["attempts"]] == [500, 500, 200]
    assert [a["delivered"] for a in note["attempts"]] == [False, False, True]
    assert note["url"] == receiver.url("/pay")
    assert note["event_type"] == "TRANSACTION.SUCCESS"


async def test_retries_stop_after_the_schedule(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    receiver.script("/pay", *[Answer(503)] * 40)
    async with asyncio.timeout(TEST_TIMEOUT), start_sandbox(time_scale=0.00001) as sb:
        transaction = await sb.paid_order(receiver.url("/pay"))

        async def given_up() -> list[Json]:
            notes = await sb.notifications(out_trade_no=transaction["out_trade_no"])
            return notes if notes and notes[0]["state"] == "failed" else []

        [note] = await eventually(given_up)
    assert len(note["attempts"]) == 1 + len(RETRY_SCHEDULE_S) == 16
    assert len(receiver.at("/pay")) == 16


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, '{"code":"FAIL","message":"失败"}'.encode()),
        Answer(204),
        Answer(200, '{"code":"SUCCESS","message":"成功"}'.encode()),
    ],
    ids=["200-FAIL-body", "204", "200-SUCCESS-body"],
)
async def test_200_or_204_counts_as_delivered(
    sandbox: Sandbox, receiver: Receiver, answer: Answer
) -> None:
    receiver.script("/pay", answer)
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(receiver.url("/pay"))

        async def done() -> list[Json]:
            notes = await sandbox.notifications(out_trade_no=transaction["out_trade_no"])
            return notes if notes and notes[0]["state"] != "pending" else []

        [note] = await eventually(done)
        # long enough for the first retry (15 s x 0.001) had there been one
        await asyncio.sleep(RETRY_SCHEDULE_S[0] * sandbox.state.config.time_scale * 5)
    assert note["state"] == "delivered"
    assert len(receiver.at("/pay")) == 1


async def test_other_2xx_and_slow_acks_are_failures(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    receiver.script("/pay", Answer(202), Answer(200, delay=1.0), Answer(200))
    async with asyncio.timeout(TEST_TIMEOUT), start_sandbox(notify_timeout_s=0.3) as sb:
        transaction = await sb.paid_order(receiver.url("/pay"))

        async def delivered() -> list[Json]:
            notes = await sb.notifications(out_trade_no=transaction["out_trade_no"])
            return notes if notes and notes[0]["state"] == "delivered" else []

        [note] = await eventually(delivered)
    first, slow, ok = note["attempts"]
    assert (first["status_code"], first["delivered"]) == (202, False)
    assert slow["status_code"] is None
    assert "0.3 s" in slow["error"]
    assert (ok["status_code"], ok["delivered"]) == (200, True)


async def test_unreachable_receiver_is_retried(sandbox: Sandbox) -> None:
    url = f"http://{HOST}:{free_port()}/nobody"
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(url)

        async def two_attempts() -> list[Json]:
            notes = await sandbox.notifications(out_trade_no=transaction["out_trade_no"])
            return notes if notes and len(notes[0]["attempts"]) >= 2 else []

        [note] = await eventually(two_attempts)
    assert note["attempts"][0]["status_code"] is None
    assert "connect" in note["attempts"][0]["error"].lower()


async def test_redeliver_resends_same_id_with_fresh_signature(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await sandbox.paid_order(receiver.url("/pay"))
        [first] = await receiver.wait("/pay", 1)
        note_id = first.json()["id"]
        response = await sandbox.http.post(
            "/sandbox/notifications/redeliver", json={"id": note_id, "times": 2}
        )
        hits = await receiver.wait("/pay", 3)
        unknown = await sandbox.http.post(
            "/sandbox/notifications/redeliver", json={"id": "nope", "times": 1}
        )
        [note] = await sandbox.notifications(id=note_id)
    assert response.status_code == 200
    assert [a["kind"] for a in response.json()["attempts"]] == ["redelivery", "redelivery"]
    assert {h.json()["id"] for h in hits} == {note_id}
    assert len({h.headers["wechatpay-signature"] for h in hits}) == 3
    assert len(note["attempts"]) == 3
    assert unknown.status_code == 404


async def test_signtest_probe_is_rejected_by_the_sdk(sandbox: Sandbox, receiver: Receiver) -> None:
    wx = sdk_client(sandbox, receiver.url("/verify"))
    receiver.decide("/verify", lambda hit: 200 if wx.callback(hit.headers, hit.body) else 401)
    async with asyncio.timeout(TEST_TIMEOUT):
        transaction = await sandbox.paid_order(receiver.url("/verify"))
        [real] = await receiver.wait("/verify", 1)
        probe = await sandbox.http.post(f"/sandbox/signtest/{transaction['out_trade_no']}")
        hits = await receiver.wait("/verify", 2)
        unpaid = await sandbox.native(receiver.url("/verify"))
        probe_unpaid = await sandbox.http.post(f"/sandbox/signtest/{unpaid}")
    assert probe.status_code == 200
    assert probe.json()["status_code"] == 401
    assert probe.json()["rejected"] is True
    assert hits[1].headers["wechatpay-signature"].startswith("WECHATPAY/SIGNTEST/")
    assert real.headers["wechatpay-signature"] != hits[1].headers["wechatpay-signature"]
    assert probe_unpaid.status_code == 409


async def test_tampered_amount_and_delayed_notification(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        no = await sandbox.native(receiver.url("/pay"), total=999)
        started = time.monotonic()
        paid = await sandbox.http.post(
            f"/sandbox/pay/{no}", json={"amount_total": 1, "delay_ms": 500}
        )
        queried = (await sandbox.query(no)).json()  # paid before the notification arrives
        assert receiver.at("/pay") == []
        [hit] = await receiver.wait("/pay", 1)
    assert paid.status_code == 200
    assert queried["trade_state"] == "SUCCESS"
    assert queried["amount"]["total"] == 999
    assert hit.at - started >= 0.5
    plaintext = decrypt_resource(hit.json()["resource"], sandbox.keys.apiv3_key)
    assert plaintext["amount"]["total"] == plaintext["amount"]["payer_total"] == 1
    assert plaintext["transaction_id"] == queried["transaction_id"]


# --------------------------------------------------------------------------------------------
# faults


async def test_fault_injection(fresh: Sandbox, receiver: Receiver) -> None:
    url = receiver.url("/n")
    async with asyncio.timeout(TEST_TIMEOUT):
        no = (await fresh.paid_order(url, total=100))["out_trade_no"]
        for fault in (
            {"endpoint": "refund", "code": "NOT_ENOUGH", "times": 1},
            {"endpoint": "refund", "code": "SYSTEM_ERROR", "times": 1},
            {"endpoint": "prepay", "code": "FREQUENCY_LIMITED", "times": 2},
            {"endpoint": "query", "code": "SYSTEM_ERROR"},
            {"endpoint": "close", "code": "SERVICE_UNAVAILABLE"},
        ):
            added = await fresh.http.post("/sandbox/faults", json=fault)
            assert added.status_code == 201, added.text
        listed = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        out_refund_no = new_no("R")
        not_enough = await fresh.refund(no, out_refund_no, 50, 100)
        system = await fresh.refund(no, out_refund_no, 50, 100)
        retried = await fresh.refund(no, out_refund_no, 50, 100)
        prepay_1 = await fresh.call(
            "POST", "/v3/pay/transactions/native", fresh.order_body(new_no(), url)
        )
        prepay_2 = await fresh.call(
            "POST", "/v3/pay/transactions/native", fresh.order_body(new_no(), url)
        )
        prepay_3 = await fresh.call(
            "POST", "/v3/pay/transactions/native", fresh.order_body(new_no(), url)
        )
        query_1 = await fresh.query(no)
        query_2 = await fresh.query(no)
        close = await fresh.call(
            "POST",
            f"/v3/pay/transactions/out-trade-no/{new_no()}/close",
            {"mchid": fresh.keys.mchid},
        )
        remaining = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        bad_code = await fresh.http.post(
            "/sandbox/faults", json={"endpoint": "refund", "code": "NO_SUCH_CODE"}
        )
        bad_endpoint = await fresh.http.post(
            "/sandbox/faults", json={"endpoint": "nowhere", "code": "SYSTEM_ERROR"}
        )
        await fresh.http.post("/sandbox/faults", json={"endpoint": "query", "code": "BANK_ERROR"})
        cleared = await fresh.http.delete("/sandbox/faults")
        query_3 = await fresh.query(no)

    assert len(listed) == 5
    assert (not_enough.status_code, not_enough.json()["code"]) == (403, "NOT_ENOUGH")
    assert (system.status_code, system.json()["code"]) == (500, "SYSTEM_ERROR")
    assert retried.status_code == 200
    assert retried.json()["out_refund_no"] == out_refund_no
    assert prepay_1.status_code == prepay_2.status_code == 429
    assert prepay_1.json()["code"] == "FREQUENCY_LIMITED"
    assert prepay_3.status_code == 200
    assert query_1.status_code == 500
    assert query_2.status_code == 200
    assert close.status_code == 503
    for response in (not_enough, system, prepay_1, query_1, close):
        assert_signed(response, fresh.keys)
    assert remaining == []
    assert bad_code.status_code == bad_endpoint.status_code == 400
    assert cleared.status_code == 204
    assert query_3.status_code == 200


async def test_faults_are_not_consumed_by_unsigned_requests(fresh: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await fresh.http.post("/sandbox/faults", json={"endpoint": "query", "code": "SYSTEM_ERROR"})
        unsigned = await fresh.http.get(f"/v3/pay/transactions/out-trade-no/{new_no()}?mchid=1")
        signed = await fresh.query(new_no())
    assert unsigned.status_code == 401
    assert signed.status_code == 500


async def test_a_fault_can_carry_retry_after(fresh: Sandbox) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    async with asyncio.timeout(TEST_TIMEOUT):
        for fault in (
            {"endpoint": "query", "code": "FREQUENCY_LIMITED", "retry_after": 1},
            {"endpoint": "refund", "code": "SERVICE_UNAVAILABLE", "retry_after": date},
        ):
            assert (await fresh.http.post("/sandbox/faults", json=fault)).status_code == 201
        listed = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        no = new_no()
        limited = await fresh.query(no)
        unlimited = await fresh.query(no)
        unavailable = await fresh.refund(new_no(), new_no("R"), 1, 100)
        refused = [
            await fresh.http.post(
                "/sandbox/faults",
                json={"endpoint": "query", "code": "FREQUENCY_LIMITED", "retry_after": bad},
            )
            for bad in (-1, 3601, 1.5, "later", date + "\r\nX-Injected: 1")
        ]
    assert [(f["endpoint"], f["retry_after"]) for f in listed] == [
        ("query", 1),
        ("refund", date),
    ]
    assert (limited.status_code, limited.json()["code"]) == (429, "FREQUENCY_LIMITED")
    assert limited.headers["retry-after"] == "1"
    assert_signed(limited, fresh.keys)
    assert unlimited.status_code == 404 and "retry-after" not in unlimited.headers
    assert (unavailable.status_code, unavailable.headers["retry-after"]) == (503, date)
    assert [r.status_code for r in refused] == [400] * 5


# --------------------------------------------------------------------------------------------
# command line


async def test_cli_requires_a_key_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TICKETING_KEYS_DIR", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--port", "0"])
    assert exc.value.code == 2
    assert "TICKETING_KEYS_DIR" in capsys.readouterr().err


async def test_cli_reads_env_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WECHAT_SANDBOX_PORT": str(port),
        "TICKETING_KEYS_DIR": str(tmp_path / "fresh-keys"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticketing_local.sandbox.wechat",
        "--host",
        HOST,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            while b"wechat sandbox listening" not in (line := await proc.stderr.readline()):
                assert line, "sandbox exited before it was ready"
            async with httpx.AsyncClient(
                base_url=f"http://{HOST}:{port}", trust_env=False
            ) as client:
                assert (await client.get("/healthz")).json() == {"status": "ok"}
            proc.send_signal(signal.SIGTERM)
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"wechat sandbox stopped" in stderr
    assert (tmp_path / "fresh-keys" / "wechat" / "platform-private.pem").exists()
