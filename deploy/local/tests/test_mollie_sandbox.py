"""Fidelity tests of the Mollie API v2 sandbox (the behaviours a client of the real API relies on).

The sandbox runs in-process on a free port with a key file generated into a temporary directory
(plus a ``live_`` key for mode tests). The real ``mollie-api-python`` drives it in a thread (it is
sync), and ``mollie-api-py`` — which installs the same ``mollie`` package, so it lives in its own
cached virtual environment — drives it from a subprocess with its strict response validation.
Raw httpx requests probe the protocol edges. Webhooks go to a small in-process receiver whose
answers each test scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
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
from mollie.api.client import Client
from mollie.api.error import (
    ConflictError,
    NotFoundError,
    UnauthorizedError,
    UnprocessableEntityError,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ticketing_local.embedded import free_port
from ticketing_local.keys import ensure_keys, ensure_mollie_keys
from ticketing_local.sandbox.mollie import (
    RETRY_SCHEDULE_S,
    MollieSandbox,
    SandboxConfig,
    serve,
)
from ticketing_local.serving import ListeningServer, in_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOST = "127.0.0.1"
TEST_TIMEOUT = 20.0
SRC_DIR = Path(__file__).resolve().parents[1] / "src"
PROBE = Path(__file__).resolve().parent / "mollie_api_py_probe.py"
MOLLIE_API_PY = "mollie-api-py==1.10.20"
LIVE_KEY = "live_" + "L1veKeyForModeIsolationTests00"
HAL = "application/hal+json"
DOCS_LINK = {"href": "https://docs.mollie.com/overview/handling-errors", "type": "text/html"}
Json = dict[str, Any]


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


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_hal_error(
    response: httpx.Response, status: int, detail: str | None = None, field: str | None = None
) -> Json:
    """A Mollie error: HAL content type, numeric ``status``, ``title``, ``detail``, docs link."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == HAL
    body: Json = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["_links"] == {"documentation": DOCS_LINK}
    if detail is not None:
        assert body["detail"] == detail
    if field is not None:
        assert body["field"] == field
    return body


# --------------------------------------------------------------------------------------------
# webhook receiver


@dataclass
class Hit:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0


@dataclass
class ReceiverServer:
    """Records every request; answers from a per-path script, then 200."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: Request) -> Response:
        hit = Hit(
            request.url.path,
            request.method,
            dict(request.headers),
            await request.body(),
            time.monotonic(),
        )
        script = self.scripts.get(hit.path)
        answer = script.pop(0) if script else Answer()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        async with self.changed:
            self.hits.append(hit)
            self.changed.notify_all()
        return Response(b"", answer.status)


@dataclass
class Receiver:
    """One test's view of the shared receiver: its paths live under a private prefix."""

    server: ReceiverServer
    prefix: str

    def url(self, path: str = "/webhook") -> str:
        return f"{self.server.base_url}{self.prefix}{path}"

    def script(self, *answers: Answer, path: str = "/webhook") -> None:
        self.server.scripts[self.prefix + path] = list(answers)

    def at(self, path: str = "/webhook") -> list[Hit]:
        return [h for h in self.server.hits if h.path == self.prefix + path]

    async def wait(self, count: int, path: str = "/webhook") -> list[Hit]:
        async with asyncio.timeout(TEST_TIMEOUT), self.server.changed:
            await self.server.changed.wait_for(lambda: len(self.at(path)) >= count)
        return self.at(path)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver_server() -> AsyncIterator[ReceiverServer]:
    rec = ReceiverServer()
    app = Starlette(routes=[Route("/{path:path}", rec.handle, methods=["POST", "GET"])])
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
# the sandbox and a raw client


@dataclass(frozen=True)
class Keys:
    dir: Path
    api_key: str
    profile_id: str


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys_dir = tmp_path_factory.mktemp("keys")
    data = json.loads(ensure_mollie_keys(keys_dir)["config"].read_text())
    return Keys(keys_dir, data["api_key"], data["profile_id"])


@dataclass
class Sandbox:
    base_url: str
    state: MollieSandbox
    api_key: str
    http: httpx.AsyncClient

    async def api(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {key or self.api_key}", **(headers or {})}
        if body is not None:
            kwargs["content"] = json.dumps(body)
            all_headers["Content-Type"] = "application/json"
        return await self.http.request(method, path, headers=all_headers, **kwargs)

    def payment_body(
        self, webhook_url: str | None = None, value: str = "10.00", **extra: Any
    ) -> Json:
        body: Json = {
            "amount": {"currency": "EUR", "value": value},
            "description": "Concert ticket #42",
            "redirectUrl": "https://shop.example.org/orders/42",
            "metadata": {"order_id": "42"},
        }
        if webhook_url is not None:
            body["webhookUrl"] = webhook_url
        body.update(extra)
        return body

    async def create_payment(
        self,
        webhook_url: str | None = None,
        value: str = "10.00",
        *,
        key: str | None = None,
        **extra: Any,
    ) -> Json:
        response = await self.api(
            "POST", "/v2/payments", self.payment_body(webhook_url, value, **extra), key=key
        )
        assert response.status_code == 201, response.text
        payment: Json = response.json()
        return payment

    async def control(self, path: str, body: Json | None = None) -> httpx.Response:
        return await self.http.post(f"/sandbox{path}", json=body)

    async def paid_payment(self, webhook_url: str | None = None, value: str = "10.00") -> Json:
        payment = await self.create_payment(webhook_url, value)
        paid = await self.control(f"/payments/{payment['id']}/pay")
        assert paid.status_code == 200, paid.text
        return await self.payment(payment["id"])

    async def payment(self, payment_id: str, *, key: str | None = None) -> Json:
        response = await self.api("GET", f"/v2/payments/{payment_id}", key=key)
        assert response.status_code == 200, response.text
        payment: Json = response.json()
        return payment

    async def refund(self, payment_id: str, value: str, **extra: Any) -> httpx.Response:
        body = {"amount": {"currency": "EUR", "value": value}, **extra}
        return await self.api("POST", f"/v2/payments/{payment_id}/refunds", body)

    async def raw_refund(self, refund_id: str) -> Json:
        response = await self.http.get(f"/sandbox/refunds/{refund_id}")
        assert response.status_code == 200, response.text
        refund: Json = response.json()
        return refund

    async def deliveries(self, **filters: str) -> list[Json]:
        response = await self.http.get("/sandbox/webhooks", params=filters)
        assert response.status_code == 200
        deliveries: list[Json] = response.json()
        return deliveries


@contextlib.asynccontextmanager
async def open_sandbox(config: SandboxConfig, api_key: str) -> AsyncIterator[Sandbox]:
    """Run a sandbox in-process on a free port."""
    async with (
        in_process(serve, config, host=HOST, timeout_s=TEST_TIMEOUT) as (base_url, app),
        httpx.AsyncClient(base_url=base_url, timeout=10, trust_env=False) as http,
    ):
        yield Sandbox(base_url, app.state.sandbox, api_key, http)


StartSandbox = Callable[..., contextlib.AbstractAsyncContextManager[Sandbox]]


def keyed_config(keys: Keys, **overrides: Any) -> SandboxConfig:
    """The stack's key file plus a live key; refunds move only when told, by default."""
    overrides.setdefault("auto_settle_ms", -1)
    return SandboxConfig.from_keys_dir(keys.dir, extra_api_keys=[LIVE_KEY], **overrides)


@pytest.fixture
def start_sandbox(keys: Keys) -> StartSandbox:
    """Start a sandbox with config overrides: ``async with start_sandbox(time_scale=…) as sb``."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Sandbox]:
        return open_sandbox(keyed_config(keys, **overrides), keys.api_key)

    return start


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox(keys: Keys) -> AsyncIterator[Sandbox]:
    """One sandbox shared by tests that touch no global state (ids are unique)."""
    async with open_sandbox(keyed_config(keys), keys.api_key) as sb:
        yield sb


@pytest.fixture
async def fresh(keys: Keys) -> AsyncIterator[Sandbox]:
    """A sandbox of its own, for tests that change global state (faults, balance, lists)."""
    async with open_sandbox(keyed_config(keys), keys.api_key) as sb:
        yield sb


# --------------------------------------------------------------------------------------------
# 1. auth and modes


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dGVzdDp0ZXN0",
        "Bearer",
        "Bearer test_tooShort",
        "Bearer access_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "Bearer test_" + "x" * 30,  # well-formed, but not the key of the key file
        "test_" + "x" * 30,
    ],
)
async def test_unauthenticated_requests_get_401(
    sandbox: Sandbox, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.http.get("/v2/payments", headers=headers)
        created = await sandbox.http.post(
            "/v2/payments", json=sandbox.payment_body(), headers=headers
        )
    body = assert_hal_error(
        response, 401, detail="Missing authentication, or failed to authenticate"
    )
    assert body["title"] == "Unauthorized Request"
    assert_hal_error(created, 401)


async def test_test_and_live_modes_are_isolated(sandbox: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        test_payment = await sandbox.create_payment()
        live_payment = await sandbox.create_payment(key=LIVE_KEY)
        test_sees_live = await sandbox.api("GET", f"/v2/payments/{live_payment['id']}")
        live_sees_test = await sandbox.api(
            "GET", f"/v2/payments/{test_payment['id']}", key=LIVE_KEY
        )
        test_list = (await sandbox.api("GET", "/v2/payments", params={"limit": 250})).json()
        live_list = (await sandbox.api("GET", "/v2/payments", key=LIVE_KEY)).json()
        await sandbox.control(f"/payments/{live_payment['id']}/pay")
        test_refunds_live = await sandbox.refund(live_payment["id"], "1.00")
        raw_live = await sandbox.http.get(f"/sandbox/payments/{live_payment['id']}")

    assert test_payment["mode"] == "test"
    assert live_payment["mode"] == "live"
    assert "changePaymentState" in test_payment["_links"]
    assert "changePaymentState" not in live_payment["_links"]
    assert_hal_error(
        test_sees_live, 404, detail=f"No payment exists with token {live_payment['id']}."
    )
    assert_hal_error(live_sees_test, 404)
    assert_hal_error(test_refunds_live, 404)
    test_ids = {p["id"] for p in test_list["_embedded"]["payments"]}
    live_ids = {p["id"] for p in live_list["_embedded"]["payments"]}
    assert test_payment["id"] in test_ids and live_payment["id"] not in test_ids
    assert live_ids == {live_payment["id"]}
    assert raw_live.json()["mode"] == "live"  # the control API sees every mode


async def test_without_a_key_file_any_well_formed_key_is_accepted() -> None:
    config = SandboxConfig(auto_settle_ms=-1)
    key = "test_" + "k" * 30
    async with open_sandbox(config, key) as sb, asyncio.timeout(TEST_TIMEOUT):
        created = await sb.create_payment()
        other_key = await sb.api("GET", f"/v2/payments/{created['id']}", key="test_" + "o" * 31)
        live = await sb.api("GET", "/v2/payments", key="live_" + "z" * 30)
        short = await sb.api("GET", "/v2/payments", key="test_" + "s" * 29)
    assert re.fullmatch(r"pfl_[A-Za-z0-9]{10}", created["profileId"])
    assert other_key.status_code == 200  # one account: objects are scoped by mode, not by key
    assert live.status_code == 200 and live.json()["count"] == 0
    assert_hal_error(short, 401)


# --------------------------------------------------------------------------------------------
# 2. mollie-api-python (sync; driven from a thread so the in-process sandbox keeps serving)


def _molpy_flow(base_url: str, api_key: str, webhook_url: str) -> Json:
    client = Client(api_endpoint=base_url)
    client.set_api_key(api_key)
    out: Json = {}
    payment = client.payments.create(
        {
            "amount": {"currency": "EUR", "value": "30.00"},
            "description": "mollie-api-python round trip",
            "redirectUrl": "https://shop.example.org/return",
            "webhookUrl": webhook_url,
            "metadata": {"order_id": "m-1"},
        }
    )
    out["created"] = (payment.id, payment.status, payment.is_open(), payment.checkout_url)
    out["fetched"] = client.payments.get(payment.id).status
    httpx.post(f"{base_url}/sandbox/payments/{payment.id}/pay", timeout=10).raise_for_status()
    payment = client.payments.get(payment.id)
    is_paid = payment.is_paid()  # type: ignore[no-untyped-call]
    out["paid"] = (is_paid, payment.amount_remaining, payment.paid_at is not None)
    refund = payment.refunds.create({"amount": {"currency": "EUR", "value": "10.00"}})
    out["refund"] = (refund.id, refund.status, refund.amount)
    out["got_refund"] = payment.refunds.get(refund.id).status
    out["listed"] = [r.id for r in payment.refunds.list()]
    out["all_refunds"] = [r.id for r in client.refunds.list()]
    second = payment.refunds.create({"amount": {"currency": "EUR", "value": "5.00"}})
    out["cancel"] = payment.refunds.delete(second.id)
    try:
        payment.refunds.get(second.id)
    except NotFoundError as err:
        out["canceled_get"] = (type(err).__name__, err.status)
    try:
        payment.refunds.create({"amount": {"currency": "EUR", "value": "10.00"}})
    except ConflictError as err:
        out["duplicate"] = (err.status, str(err))
    try:
        payment.refunds.create({"amount": {"currency": "EUR", "value": "25.00"}})
    except UnprocessableEntityError as err:
        out["over"] = (err.status, err.field, str(err))
    try:
        client.payments.create({"amount": {"currency": "EUR", "value": "16.1"}, "description": "x"})
    except UnprocessableEntityError as err:
        out["bad_amount"] = (err.status, err.field)
    try:
        client.payments.get("tr_doesnotexist")
    except NotFoundError as err:
        out["not_found"] = (err.status, str(err))
    open_payment = client.payments.create(
        {
            "amount": {"currency": "EUR", "value": "1.00"},
            "description": "to cancel",
            "redirectUrl": "https://shop.example.org/return",
        }
    )
    # molpy annotates delete() as returning a dict; for payments it returns the Payment
    out["canceled"] = client.payments.delete(open_payment.id).status  # type: ignore[attr-defined]
    wrong = Client(api_endpoint=base_url)
    wrong.set_api_key("test_" + "w" * 30)
    try:
        wrong.payments.list()
    except UnauthorizedError as err:
        out["unauthorized"] = err.status
    return out


async def test_mollie_api_python_round_trip(
    sandbox: Sandbox, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with asyncio.timeout(TEST_TIMEOUT):
        out = await asyncio.to_thread(
            _molpy_flow, sandbox.base_url, sandbox.api_key, receiver.url()
        )
        hits = await receiver.wait(1)

    payment_id, status, is_open, checkout_url = out["created"]
    assert re.fullmatch(r"tr_[A-Za-z0-9]{10}", payment_id)
    assert (status, is_open) == ("open", True)
    assert checkout_url == f"{sandbox.base_url}/checkout/{payment_id}"
    assert out["fetched"] == "open"
    assert out["paid"] == (True, {"currency": "EUR", "value": "30.00"}, True)
    refund_id, refund_status, refund_amount = out["refund"]
    assert re.fullmatch(r"re_[A-Za-z0-9]{10}", refund_id)
    assert refund_status == "pending"
    assert refund_amount == {"currency": "EUR", "value": "10.00"}
    assert out["got_refund"] == "pending"
    assert out["listed"] == [refund_id]
    assert refund_id in out["all_refunds"]
    assert out["cancel"] == {}  # 204
    assert out["canceled_get"] == ("NotFoundError", 404)
    assert out["duplicate"] == (409, "A duplicate refund has been detected")
    assert out["over"] == (422, "amount.value", "The specified amount cannot be refunded")
    assert out["bad_amount"] == (422, "amount.value")
    assert out["not_found"] == (404, "No payment exists with token tr_doesnotexist.")
    assert out["canceled"] == "canceled"
    assert out["unauthorized"] == 401
    assert hits[0].body == f"id={payment_id}".encode()


# --------------------------------------------------------------------------------------------
# 3. mollie-api-py (Speakeasy SDK) in its own virtual environment


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ticketing"


@pytest.fixture(scope="session")
def mollie_api_py_python() -> Path:
    """The interpreter of a venv holding ``mollie-api-py`` (made once, reused; a lock file keeps
    parallel runs from building it at the same time)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the mollie-api-py environment")
    root = _cache_root()
    venv = root / MOLLIE_API_PY.replace("==", "-")
    python = venv / "bin" / "python"
    marker = venv / ".ticketing-complete"
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and python.exists()):
            shutil.rmtree(venv, ignore_errors=True)
            for command in (
                [uv, "venv", "--quiet", "--python", "3.11", str(venv)],
                [uv, "pip", "install", "--quiet", "--python", str(python), MOLLIE_API_PY],
            ):
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
            marker.write_text(MOLLIE_API_PY + "\n")
    return python


async def test_mollie_api_py_sync_and_async(
    sandbox: Sandbox, mollie_api_py_python: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    proc = await asyncio.create_subprocess_exec(
        str(mollie_api_py_python),
        str(PROBE),
        sandbox.base_url,
        sandbox.api_key,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stdout.decode() + stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])

    sync = result["sync"]
    payment_id = sync["created"]["id"]
    assert sync["created"]["status"] == "open"
    assert sync["created"]["mode"] == "test"
    assert sync["created"]["is_cancelable"] is True
    assert sync["created"]["metadata"] == {"probe": "sync"}
    assert sync["created"]["checkout"] == f"{sandbox.base_url}/checkout/{payment_id}"
    assert sync["created"]["dashboard"].startswith(sandbox.base_url)
    assert sync["fetched_status"] == "open"
    assert sync["paid"]["status"] == "paid" and sync["paid"]["paid_at"]
    assert sync["paid"]["amount_remaining"] == "25.00"
    assert sync["refund"]["status"] == "pending"
    assert sync["refund"]["payment_id"] == payment_id
    assert sync["got_refund_status"] == "pending"
    assert sync["listed_refunds"] == [sync["refund"]["id"]]
    assert sync["listed_count"] == 1
    assert sync["after_refund_remaining"] == "20.00"
    assert payment_id in sync["listed_payment_ids"]
    assert sync["canceled_refund_get_status"] == 404

    asynchronous = result["async"]
    assert asynchronous["created"]["status"] == "open"
    assert asynchronous["fetched_status"] == "open"
    assert asynchronous["paid_status"] == "paid"
    assert asynchronous["refund"]["status"] == "pending"
    assert asynchronous["got_refund_status"] == "pending"
    assert asynchronous["listed_refunds"] == [asynchronous["refund"]["id"]]
    assert asynchronous["refund"]["id"] in asynchronous["all_refund_ids"]
    assert asynchronous["over_refund"] == {
        "status": 422,
        "field": "amount.value",
        "detail": "The specified amount cannot be refunded",
    }


# --------------------------------------------------------------------------------------------
# 4. payment creation


async def test_created_payment_shape(sandbox: Sandbox, keys: Keys, receiver: Receiver) -> None:
    body = sandbox.payment_body(
        receiver.url(), cancelUrl="https://shop.example.org/cancel", locale="nl_NL"
    )
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.api("POST", "/v2/payments", body)
        payment = response.json()
        fetched = await sandbox.payment(payment["id"])

    assert response.status_code == 201
    assert response.headers["content-type"] == HAL
    assert payment["resource"] == "payment"
    assert re.fullmatch(r"tr_[A-Za-z0-9]{10}", payment["id"])
    assert payment["mode"] == "test"
    assert payment["status"] == "open"
    assert payment["isCancelable"] is True
    assert payment["amount"] == {"currency": "EUR", "value": "10.00"}
    assert payment["description"] == "Concert ticket #42"
    assert payment["metadata"] == {"order_id": "42"}
    assert payment["redirectUrl"] == "https://shop.example.org/orders/42"
    assert payment["cancelUrl"] == "https://shop.example.org/cancel"
    assert payment["webhookUrl"] == receiver.url()  # localhost is fine here (a deviation)
    assert payment["locale"] == "nl_NL"
    assert payment["profileId"] == keys.profile_id
    assert payment["sequenceType"] == "oneoff"
    assert payment["method"] is None and payment["details"] is None
    created_at = parse_iso(payment["createdAt"])
    assert parse_iso(payment["expiresAt"]) - created_at == timedelta(minutes=15)
    for absent in ("paidAt", "failedAt", "canceledAt", "expiredAt", "authorizedAt"):
        assert absent not in payment
    for absent in ("amountRefunded", "amountRemaining", "settlementAmount"):
        assert absent not in payment
    links = payment["_links"]
    base = sandbox.base_url
    assert links["self"] == {"href": f"{base}/v2/payments/{payment['id']}", "type": HAL}
    assert links["checkout"] == {"href": f"{base}/checkout/{payment['id']}", "type": "text/html"}
    assert links["dashboard"]["href"].startswith(base)
    assert links["documentation"]["type"] == "text/html"
    assert "refunds" not in links
    assert fetched["id"] == payment["id"] and fetched["status"] == "open"


@pytest.mark.parametrize(
    ("change", "status", "field", "detail"),
    [
        (
            {"amount": {"currency": "EUR", "value": "16.1"}},
            422,
            "amount.value",
            "The amount contains an invalid value",
        ),
        (
            {"amount": {"currency": "EUR", "value": 16.1}},
            422,
            "amount.value",
            "The amount contains an invalid value",
        ),
        ({"amount": {"currency": "EUR", "value": 16}}, 422, "amount.value", None),
        ({"amount": {"currency": "EUR", "value": "16"}}, 422, "amount.value", None),
        ({"amount": {"currency": "EUR", "value": "16.100"}}, 422, "amount.value", None),
        ({"amount": {"currency": "JPY", "value": "1000.00"}}, 422, "amount.value", None),
        ({"amount": {"currency": "EUR", "value": "0.00"}}, 422, "amount", None),
        (
            {"amount": {"value": "10.00"}},
            422,
            "amount.currency",
            "The amount does not contain a currency",
        ),
        ({"amount": {"currency": "XXX", "value": "10.00"}}, 422, "amount.currency", None),
        ({"amount": None}, 422, "amount", "The amount is required for payments"),
        ({"description": None}, 422, "description", "The description is required"),
        ({"description": "   "}, 422, "description", None),
        ({"redirectUrl": None}, 422, "redirectUrl", "The redirect URL is invalid"),
        (
            {"webhookUrl": "ftp://shop.example.org/hook"},
            422,
            "webhookUrl",
            "The webhook URL is invalid",
        ),
        ({"metadata": {"blob": "x" * 2000}}, 422, "metadata", None),
        (
            {"amountt": {"currency": "EUR", "value": "1.00"}},
            422,
            "amountt",
            'Non-existent body parameter "amountt" for this API call.',
        ),
    ],
)
async def test_payment_creation_validation(
    sandbox: Sandbox, change: Json, status: int, field: str, detail: str | None
) -> None:
    body = sandbox.payment_body()
    for key, value in change.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await sandbox.api("POST", "/v2/payments", body)
    assert_hal_error(response, status, detail=detail, field=field)


async def test_payment_creation_accepts_edge_inputs(sandbox: Sandbox) -> None:
    form = (
        "amount[currency]=EUR&amount[value]=12.50&description=Form+encoded"
        "&redirectUrl=https%3A%2F%2Fshop.example.org%2Fr&metadata=%7B%22order_id%22%3A%207%7D"
    )
    async with asyncio.timeout(TEST_TIMEOUT):
        jpy = await sandbox.create_payment(amount={"currency": "JPY", "value": "1500"})
        local = await sandbox.create_payment("http://localhost:1/webhook")
        formed = await sandbox.api(
            "POST",
            "/v2/payments",
            content=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert jpy["amount"] == {"currency": "JPY", "value": "1500"}
    assert local["webhookUrl"] == "http://localhost:1/webhook"
    assert formed.status_code == 201, formed.text
    assert formed.json()["amount"] == {"currency": "EUR", "value": "12.50"}
    assert formed.json()["metadata"] == {"order_id": 7}


# --------------------------------------------------------------------------------------------
# 5. status simulation: control API and checkout page


async def test_control_api_moves_payments_and_fields_follow(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    outcomes = {"pay": "paid", "fail": "failed", "cancel": "canceled", "expire": "expired"}
    stamps = {
        "paid": "paidAt",
        "failed": "failedAt",
        "canceled": "canceledAt",
        "expired": "expiredAt",
    }
    async with asyncio.timeout(TEST_TIMEOUT):
        moved: dict[str, Json] = {}
        for action, status in outcomes.items():
            payment = await sandbox.create_payment(receiver.url(f"/{action}"))
            response = await sandbox.control(f"/payments/{payment['id']}/{action}")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == status
            moved[status] = await sandbox.payment(payment["id"])
        again = await sandbox.control(f"/payments/{moved['paid']['id']}/fail")
        unknown = await sandbox.control("/payments/tr_unknown0000/pay")
        authorized = await sandbox.create_payment()
        await sandbox.control(f"/payments/{authorized['id']}/authorize")
        authorized_view = await sandbox.payment(authorized["id"])
        await sandbox.control(f"/payments/{authorized['id']}/pay")
        captured = await sandbox.payment(authorized["id"])
        card = await sandbox.create_payment()
        await sandbox.control(f"/payments/{card['id']}/pay", {"method": "creditcard"})
        card_view = await sandbox.payment(card["id"])

    for status, payment in moved.items():
        assert payment["status"] == status
        assert payment["isCancelable"] is False
        assert "checkout" not in payment["_links"]
        assert "expiresAt" not in payment
        present = {k for k in stamps.values() if k in payment}
        assert present == {stamps[status]}
        if status == "paid":
            assert payment["amountRefunded"] == {"currency": "EUR", "value": "0.00"}
            assert payment["amountRemaining"] == {"currency": "EUR", "value": "10.00"}
            assert payment["settlementAmount"] == {"currency": "EUR", "value": "10.00"}
            assert payment["method"] == "ideal"
            assert payment["details"]["consumerName"]
        else:
            assert "amountRefunded" not in payment and "amountRemaining" not in payment
    assert again.status_code == 409
    assert again.json()["code"] == "INVALID_STATE"
    assert unknown.status_code == 404
    assert authorized_view["status"] == "authorized" and "authorizedAt" in authorized_view
    assert authorized_view["isCancelable"] is True
    assert captured["status"] == "paid" and "authorizedAt" in captured and "paidAt" in captured
    assert card_view["method"] == "creditcard"
    assert card_view["details"]["cardNumber"] == "6787"


async def test_checkout_page(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.create_payment(receiver.url())
        checkout = payment["_links"]["checkout"]["href"]
        page = await sandbox.http.get(checkout)
        paid = await sandbox.http.post(checkout, data={"action": "paid"})
        view = await sandbox.payment(payment["id"])
        hits = await receiver.wait(1)
        again = await sandbox.http.post(checkout, data={"action": "canceled"})
        after = await sandbox.payment(payment["id"])
        page_after = await sandbox.http.get(checkout)

        to_cancel = await sandbox.create_payment(
            receiver.url("/c"), cancelUrl="https://shop.example.org/cancelled"
        )
        canceled = await sandbox.http.post(
            to_cancel["_links"]["checkout"]["href"], data={"action": "canceled"}
        )
        to_fail = await sandbox.create_payment()
        failed = await sandbox.http.post(
            to_fail["_links"]["checkout"]["href"], data={"action": "failed"}
        )
        bad = await sandbox.http.post(
            to_fail["_links"]["checkout"]["href"], data={"action": "steal"}
        )
        missing = await sandbox.http.get("/checkout/tr_nothing0000")
        canceled_view = await sandbox.payment(to_cancel["id"])
        failed_view = await sandbox.payment(to_fail["id"])

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for action in ("paid", "failed", "canceled"):
        assert f'value="{action}"' in page.text
    assert payment["id"] in page.text and "EUR 10.00" in page.text
    assert paid.status_code == 303
    assert paid.headers["location"] == "https://shop.example.org/orders/42"
    assert view["status"] == "paid"
    assert hits[0].body == f"id={payment['id']}".encode()
    assert again.status_code == 303  # sent back, nothing changes
    assert after["status"] == "paid"
    assert "<form" not in page_after.text and "paid" in page_after.text
    assert canceled.status_code == 303
    assert canceled.headers["location"] == "https://shop.example.org/cancelled"
    assert canceled_view["status"] == "canceled"
    assert failed.status_code == 303 and failed_view["status"] == "failed"
    assert bad.status_code == 400
    assert missing.status_code == 404


async def test_checkout_with_manual_capture_authorizes(sandbox: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.create_payment(captureMode="manual")
        await sandbox.http.post(payment["_links"]["checkout"]["href"], data={"action": "paid"})
        view = await sandbox.payment(payment["id"])
    assert view["status"] == "authorized"


async def test_api_cancel_payment(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.create_payment(receiver.url())
        canceled = await sandbox.api(
            "DELETE", f"/v2/payments/{payment['id']}", headers={"Idempotency-Key": "k1"}
        )
        hits = await receiver.wait(1)
        again = await sandbox.api(
            "DELETE", f"/v2/payments/{payment['id']}", headers={"Idempotency-Key": "k1"}
        )
        paid = await sandbox.paid_payment()
        cancel_paid = await sandbox.api("DELETE", f"/v2/payments/{paid['id']}")

    assert canceled.status_code == 200
    assert canceled.headers["content-type"] == HAL
    assert canceled.json()["status"] == "canceled"
    assert "canceledAt" in canceled.json()
    assert hits[0].body == f"id={payment['id']}".encode()
    assert "idempotent-replayed" not in again.headers  # keys on DELETE are ignored
    assert_hal_error(again, 422, detail="The payment cannot be cancelled")
    assert_hal_error(cancel_paid, 422)


async def test_open_payments_expire_and_call_the_webhook(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    async with start_sandbox(payment_ttl_s=0.3) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.create_payment(receiver.url())
        hits = await receiver.wait(1)
        view = await sb.payment(payment["id"])
        deliveries = await sb.deliveries(payment_id=payment["id"])
    assert hits[0].body == f"id={payment['id']}".encode()
    assert view["status"] == "expired" and "expiredAt" in view
    assert [d["trigger"] for d in deliveries] == ["payment.expired"]


# --------------------------------------------------------------------------------------------
# 6. classic webhooks


async def test_webhook_request_format_and_triggers(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.create_payment(receiver.url())
        await sandbox.control(f"/payments/{payment['id']}/pending")
        before = await sandbox.deliveries(payment_id=payment["id"])
        await sandbox.control(f"/payments/{payment['id']}/pay")
        hits = await receiver.wait(1)
        delivered = await eventually(
            lambda: sandbox.deliveries(payment_id=payment["id"], state="delivered")
        )

    assert before == []  # open and pending never call the webhook
    hit = hits[0]
    assert hit.method == "POST"
    assert hit.headers["content-type"] == "application/x-www-form-urlencoded"
    assert hit.headers["user-agent"] == "Mollie HTTP client/1.0"
    assert hit.body == f"id={payment['id']}".encode()
    assert b"status" not in hit.body
    assert not any("signature" in name for name in hit.headers)
    assert delivered[0]["trigger"] == "payment.paid"
    assert delivered[0]["url"] == receiver.url()
    assert [a["status_code"] for a in delivered[0]["attempts"]] == [200]


async def test_failed_webhooks_are_retried_on_schedule(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    """500 and 204 are failures (only 200 counts); retries wait 1m, 2m, … × time_scale."""
    receiver.script(Answer(500), Answer(204), Answer(301), Answer(200))
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.paid_payment(receiver.url())
        hits = await receiver.wait(4)
        delivery = (
            await eventually(
                lambda: sandbox.deliveries(payment_id=payment["id"], state="delivered")
            )
        )[0]

    scale = sandbox.state.config.time_scale
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    for gap, wait_s in zip(gaps, RETRY_SCHEDULE_S, strict=False):
        assert gap >= wait_s * scale * 0.9, (gaps, wait_s * scale)
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 204, 301, 200]
    assert [a["delivered"] for a in delivery["attempts"]] == [False, False, False, True]
    assert all(h.body == f"id={payment['id']}".encode() for h in hits)


async def test_webhooks_give_up_after_ten_attempts(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    receiver.script(*[Answer(503)] * 12)
    async with start_sandbox(time_scale=0.00001) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.paid_payment(receiver.url())
        failed = await eventually(lambda: sb.deliveries(payment_id=payment["id"], state="failed"))
    assert len(failed[0]["attempts"]) == 10 == len(RETRY_SCHEDULE_S) + 1
    assert len(receiver.at()) == 10


async def test_slow_answers_count_as_failures(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    receiver.script(Answer(200, delay=0.5), Answer(200))
    async with start_sandbox(webhook_timeout_s=0.2) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.paid_payment(receiver.url())
        delivered = await eventually(
            lambda: sb.deliveries(payment_id=payment["id"], state="delivered")
        )
    attempts = delivered[0]["attempts"]
    assert attempts[0]["status_code"] is None and "0.2 s" in attempts[0]["error"]
    assert [a["delivered"] for a in attempts] == [False, True]


async def test_redeliver_sends_duplicates(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.paid_payment(receiver.url())
        await receiver.wait(1)
        response = await sandbox.control(
            "/webhooks/redeliver", {"payment_id": payment["id"], "times": 3}
        )
        hits = await receiver.wait(4)
        no_hook = await sandbox.create_payment()
        refused = await sandbox.control("/webhooks/redeliver", {"payment_id": no_hook["id"]})
        unknown = await sandbox.control("/webhooks/redeliver", {"payment_id": "tr_nope000000"})
    assert response.status_code == 200
    assert response.json()["trigger"] == "redeliver"
    assert [a["status_code"] for a in response.json()["attempts"]] == [200, 200, 200]
    assert {h.body for h in hits} == {f"id={payment['id']}".encode()}
    assert refused.status_code == 409 and unknown.status_code == 404


# --------------------------------------------------------------------------------------------
# 7. refunds


async def test_refunds_walk_by_themselves_and_call_the_payment_webhook(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    async with start_sandbox(auto_settle_ms=50) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.paid_payment(receiver.url(), value="20.00")
        await receiver.wait(1)  # payment.paid
        created = await sb.refund(payment["id"], "7.50", description="Seat 12", metadata={"r": 1})
        refund = created.json()
        hits = await receiver.wait(3)
        settled = await eventually(lambda: _status_is(sb, payment["id"], refund["id"], "refunded"))
        deliveries = await sb.deliveries(payment_id=payment["id"])
        after = await sb.payment(payment["id"])

    assert created.status_code == 201, created.text
    assert re.fullmatch(r"re_[A-Za-z0-9]{10}", refund["id"])
    assert refund["resource"] == "refund" and refund["mode"] == "test"
    assert refund["status"] == "pending"
    assert refund["amount"] == {"currency": "EUR", "value": "7.50"}
    assert refund["settlementAmount"] == {"currency": "EUR", "value": "-7.50"}
    assert refund["description"] == "Seat 12" and refund["metadata"] == {"r": 1}
    assert refund["paymentId"] == payment["id"]
    base = sb.base_url
    assert refund["_links"]["self"]["href"] == (
        f"{base}/v2/payments/{payment['id']}/refunds/{refund['id']}"
    )
    assert refund["_links"]["payment"]["href"] == f"{base}/v2/payments/{payment['id']}"
    assert refund["_links"]["documentation"]["type"] == "text/html"
    assert settled["status"] == "refunded"
    assert all(h.body == f"id={payment['id']}".encode() for h in hits)
    assert [d["trigger"] for d in deliveries] == [
        "payment.paid",
        "refund.processing",
        "refund.refunded",
    ]
    assert {d["refund_id"] for d in deliveries[1:]} == {refund["id"]}
    assert after["status"] == "paid"
    assert after["amountRefunded"] == {"currency": "EUR", "value": "7.50"}
    assert after["amountRemaining"] == {"currency": "EUR", "value": "12.50"}
    assert after["_links"]["refunds"]["href"] == f"{base}/v2/payments/{payment['id']}/refunds"


async def _status_is(sb: Sandbox, payment_id: str, refund_id: str, status: str) -> Json | None:
    response = await sb.api("GET", f"/v2/payments/{payment_id}/refunds/{refund_id}")
    refund: Json = response.json()
    return refund if refund.get("status") == status else None


async def test_low_balance_queues_refunds(start_sandbox: StartSandbox, receiver: Receiver) -> None:
    async with start_sandbox(auto_settle_ms=30) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.paid_payment(receiver.url(), value="20.00")
        assert (await sb.control("/balance", {"low": True})).json() == {"low": True}
        queued = (await sb.refund(payment["id"], "5.00")).json()
        # queued refunds wait for balance: give the walk several steps' time to (not) move it
        await asyncio.sleep(0.2)
        still = await sb.raw_refund(queued["id"])
        remaining = (await sb.payment(payment["id"]))["amountRemaining"]
        assert (await sb.control("/balance", {"low": False})).json() == {"low": False}
        refunded = await eventually(lambda: _status_is(sb, payment["id"], queued["id"], "refunded"))
        triggers = [d["trigger"] for d in await sb.deliveries(payment_id=payment["id"])]
    assert queued["status"] == "queued"
    assert queued["settlementAmount"] is None
    assert still["status"] == "queued"
    assert remaining == {"currency": "EUR", "value": "15.00"}
    assert refunded["settlementAmount"] == {"currency": "EUR", "value": "-5.00"}
    assert triggers == ["payment.paid", "refund.processing", "refund.refunded"]


async def test_refund_cancel_only_while_queued_or_pending(fresh: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await fresh.paid_payment(value="30.00")
        pid = payment["id"]
        pending = (await fresh.refund(pid, "5.00")).json()
        deleted = await fresh.api("DELETE", f"/v2/payments/{pid}/refunds/{pending['id']}")
        gone = await fresh.api("GET", f"/v2/payments/{pid}/refunds/{pending['id']}")
        deleted_again = await fresh.api("DELETE", f"/v2/payments/{pid}/refunds/{pending['id']}")
        raw = await fresh.raw_refund(pending["id"])
        listed = (await fresh.api("GET", f"/v2/payments/{pid}/refunds")).json()
        after_cancel = await fresh.payment(pid)

        await fresh.control("/balance", {"low": True})
        queued = (await fresh.refund(pid, "6.00")).json()
        deleted_queued = await fresh.api("DELETE", f"/v2/payments/{pid}/refunds/{queued['id']}")
        await fresh.control("/balance", {"low": False})

        processing = (await fresh.refund(pid, "7.00")).json()
        await fresh.control(f"/refunds/{processing['id']}/advance", {"status": "processing"})
        refused = await fresh.api("DELETE", f"/v2/payments/{pid}/refunds/{processing['id']}")
        still = await fresh.raw_refund(processing["id"])
        raw_payment = (await fresh.http.get(f"/sandbox/payments/{pid}")).json()

    assert deleted.status_code == 204 and deleted.content == b""
    assert_hal_error(gone, 404, detail=f"No refund exists with token {pending['id']}.")
    assert_hal_error(deleted_again, 404)
    assert raw["status"] == "canceled"
    assert listed["count"] == 0 and listed["_embedded"]["refunds"] == []
    assert after_cancel["amountRemaining"] == {"currency": "EUR", "value": "30.00"}
    assert "refunds" not in after_cancel["_links"]
    assert queued["status"] == "queued" and deleted_queued.status_code == 204
    assert_hal_error(refused, 422)
    assert still["status"] == "processing"
    assert {r["id"]: r["status"] for r in raw_payment["refunds"]} == {
        pending["id"]: "canceled",
        queued["id"]: "canceled",
        processing["id"]: "processing",
    }


async def test_refund_amount_rules(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        open_payment = await sandbox.create_payment()
        unpaid = await sandbox.refund(open_payment["id"], "1.00")
        payment = await sandbox.paid_payment(receiver.url(), value="20.00")
        pid = payment["id"]
        first = await sandbox.refund(pid, "5.00")
        duplicate = await sandbox.refund(pid, "5.00")
        second = await sandbox.refund(pid, "6.00")
        over = await sandbox.refund(pid, "9.01")
        wrong_currency = await sandbox.api(
            "POST", f"/v2/payments/{pid}/refunds", {"amount": {"currency": "USD", "value": "1.00"}}
        )
        bad_value = await sandbox.api(
            "POST", f"/v2/payments/{pid}/refunds", {"amount": {"currency": "EUR", "value": 1}}
        )
        missing = await sandbox.api("POST", f"/v2/payments/{pid}/refunds", {})
        unknown_payment = await sandbox.refund("tr_unknown0000", "1.00")
        partial = await sandbox.payment(pid)
        # a failed refund gives its amount back, and no longer blocks the same amount
        await sandbox.control(f"/refunds/{second.json()['id']}/advance", {"status": "processing"})
        await sandbox.control(f"/refunds/{second.json()['id']}/advance", {"status": "failed"})
        retried = await sandbox.refund(pid, "6.00")
        rest = await sandbox.refund(pid, "9.00")
        full = await sandbox.payment(pid)
        nothing_left = await sandbox.refund(pid, "0.01")
        listed = (await sandbox.api("GET", f"/v2/payments/{pid}/refunds")).json()

    assert_hal_error(
        unpaid, 422, detail="The specified amount cannot be refunded", field="amount.value"
    )
    assert first.status_code == 201
    body = assert_hal_error(duplicate, 409, detail="A duplicate refund has been detected")
    assert body["title"] == "Conflict" and "field" not in body
    assert second.status_code == 201
    assert_hal_error(
        over, 422, detail="The specified amount cannot be refunded", field="amount.value"
    )
    assert_hal_error(wrong_currency, 422, field="amount.currency")
    assert_hal_error(
        bad_value, 422, detail="The amount contains an invalid value", field="amount.value"
    )
    assert_hal_error(missing, 422, field="amount")
    assert_hal_error(unknown_payment, 404, detail="No payment exists with token tr_unknown0000.")
    assert partial["amountRefunded"] == {"currency": "EUR", "value": "11.00"}
    assert partial["amountRemaining"] == {"currency": "EUR", "value": "9.00"}
    assert retried.status_code == 201 and rest.status_code == 201
    assert full["status"] == "paid"
    assert full["amountRefunded"] == {"currency": "EUR", "value": "20.00"}
    assert full["amountRemaining"] == {"currency": "EUR", "value": "0.00"}
    assert_hal_error(nothing_left, 422, field="amount.value")
    assert listed["count"] == 4  # newest first; the failed one is still listed
    assert listed["_embedded"]["refunds"][0]["id"] == rest.json()["id"]
    assert {r["status"] for r in listed["_embedded"]["refunds"]} == {"pending", "failed"}


async def test_refund_advance_control(sandbox: Sandbox, receiver: Receiver) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.paid_payment(receiver.url(), value="20.00")
        refund = (await sandbox.refund(payment["id"], "2.00")).json()
        skip = await sandbox.control(f"/refunds/{refund['id']}/advance", {"status": "refunded"})
        bogus = await sandbox.control(f"/refunds/{refund['id']}/advance", {"status": "bogus"})
        missing = await sandbox.control("/refunds/re_nothing0000/advance", {"status": "processing"})
        dashboard_cancel = await sandbox.control(
            f"/refunds/{refund['id']}/advance", {"status": "canceled"}
        )
        triggers = await eventually(lambda: _triggers(sandbox, payment["id"], "refund.canceled"))
    assert skip.status_code == 409 and skip.json()["code"] == "INVALID_STATE"
    assert bogus.status_code == 400
    assert missing.status_code == 404
    assert dashboard_cancel.status_code == 200
    assert dashboard_cancel.json()["status"] == "canceled"
    assert triggers == ["payment.paid", "refund.canceled"]


async def test_advanced_refunds_are_left_alone_by_auto_settle(
    start_sandbox: StartSandbox, receiver: Receiver
) -> None:
    async with start_sandbox(auto_settle_ms=20) as sb, asyncio.timeout(TEST_TIMEOUT):
        payment = await sb.paid_payment(receiver.url(), value="20.00")
        await sb.control("/balance", {"low": True})
        refund = (await sb.refund(payment["id"], "4.00")).json()
        for status in ("pending", "processing"):
            moved = await sb.control(f"/refunds/{refund['id']}/advance", {"status": status})
            assert moved.status_code == 200, moved.text
        await sb.control("/balance", {"low": False})
        # several auto-settle steps' time: the refund must stay where the test put it
        await asyncio.sleep(0.15)
        held = await sb.raw_refund(refund["id"])
        failed = await sb.control(f"/refunds/{refund['id']}/advance", {"status": "failed"})
        triggers = await eventually(lambda: _triggers(sb, payment["id"], "refund.failed"))
        after = await sb.payment(payment["id"])
    assert held["status"] == "processing"
    assert failed.json()["status"] == "failed"
    assert triggers == ["payment.paid", "refund.processing", "refund.failed"]
    assert after["amountRemaining"] == {"currency": "EUR", "value": "20.00"}


async def _triggers(sb: Sandbox, payment_id: str, last: str) -> list[str] | None:
    triggers = [d["trigger"] for d in await sb.deliveries(payment_id=payment_id)]
    return triggers if triggers and triggers[-1] == last else None


async def test_lists_are_paginated(fresh: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        ids = [(await fresh.create_payment())["id"] for _ in range(3)]
        first = (await fresh.api("GET", "/v2/payments", params={"limit": 2})).json()
        next_href = first["_links"]["next"]["href"]
        second = (
            await fresh.http.get(next_href, headers={"Authorization": f"Bearer {fresh.api_key}"})
        ).json()
        bad_limit = await fresh.api("GET", "/v2/payments", params={"limit": 0})
        all_refunds = (await fresh.api("GET", "/v2/refunds")).json()
    assert first["count"] == 2
    assert [p["id"] for p in first["_embedded"]["payments"]] == ids[::-1][:2]
    assert first["_links"]["previous"] is None
    assert first["_links"]["self"]["href"].startswith(fresh.base_url + "/v2/payments")
    assert second["count"] == 1
    assert second["_embedded"]["payments"][0]["id"] == ids[0]
    assert second["_links"]["next"] is None
    assert second["_links"]["previous"]["href"].startswith(fresh.base_url)
    assert_hal_error(bad_limit, 400)
    assert all_refunds == {
        "count": 0,
        "_embedded": {"refunds": []},
        "_links": all_refunds["_links"],
    }


async def test_embeds(sandbox: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await sandbox.paid_payment(value="20.00")
        refund = (await sandbox.refund(payment["id"], "1.00")).json()
        with_refunds = (
            await sandbox.api("GET", f"/v2/payments/{payment['id']}", params={"embed": "refunds"})
        ).json()
        with_payment = (
            await sandbox.api(
                "GET",
                f"/v2/payments/{payment['id']}/refunds/{refund['id']}",
                params={"embed": "payment"},
            )
        ).json()
    assert [r["id"] for r in with_refunds["_embedded"]["refunds"]] == [refund["id"]]
    assert with_payment["_embedded"]["payment"]["id"] == payment["id"]


# --------------------------------------------------------------------------------------------
# 8. idempotency


async def test_idempotent_replay_is_byte_identical(sandbox: Sandbox) -> None:
    key = str(uuid.uuid4())
    body = sandbox.payment_body(value="11.11")
    async with asyncio.timeout(TEST_TIMEOUT):
        first = await sandbox.api("POST", "/v2/payments", body, headers={"Idempotency-Key": key})
        # the same parameters, serialized differently, are the same request
        replay = await sandbox.api(
            "POST",
            "/v2/payments",
            content=json.dumps(body, indent=2, sort_keys=True),
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        other_body = await sandbox.api(
            "POST",
            "/v2/payments",
            sandbox.payment_body(value="22.22"),
            headers={"Idempotency-Key": key},
        )
        other_path = await sandbox.api(
            "POST",
            f"/v2/payments/{first.json()['id']}/refunds",
            body,
            headers={"Idempotency-Key": key},
        )
        other_api_key = await sandbox.api(
            "POST", "/v2/payments", body, key=LIVE_KEY, headers={"Idempotency-Key": key}
        )
        invalid = sandbox.payment_body(value="1.1")
        rejected = await sandbox.api(
            "POST", "/v2/payments", invalid, headers={"Idempotency-Key": key + "-422"}
        )
        rejected_again = await sandbox.api(
            "POST", "/v2/payments", invalid, headers={"Idempotency-Key": key + "-422"}
        )
        get_1 = await sandbox.api(
            "GET", f"/v2/payments/{first.json()['id']}", headers={"Idempotency-Key": key}
        )
        await sandbox.control(f"/payments/{first.json()['id']}/pay")
        get_2 = await sandbox.api(
            "GET", f"/v2/payments/{first.json()['id']}", headers={"Idempotency-Key": key}
        )

    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert replay.headers["content-type"] == HAL
    assert_hal_error(other_body, 400)
    assert_hal_error(other_path, 400)
    assert other_api_key.status_code == 201  # keys are scoped per API key
    assert other_api_key.json()["id"] != first.json()["id"]
    assert rejected.status_code == 422 and rejected_again.status_code == 422
    assert rejected_again.headers["idempotent-replayed"] == "true"
    assert rejected_again.content == rejected.content
    assert "idempotent-replayed" not in get_1.headers and "idempotent-replayed" not in get_2.headers
    assert (get_1.json()["status"], get_2.json()["status"]) == ("open", "paid")


async def test_concurrent_duplicate_gets_409(fresh: Sandbox) -> None:
    key = str(uuid.uuid4())
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await fresh.paid_payment(value="20.00")
        slow = await fresh.control(
            "/faults", {"endpoint": "create_refund", "delay_ms": 1000, "times": 1}
        )
        body = {"amount": {"currency": "EUR", "value": "3.00"}}
        path = f"/v2/payments/{payment['id']}/refunds"
        first_task = asyncio.create_task(
            fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        )
        await eventually(lambda: _faults_left(fresh, 0))
        second = await fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        first = await first_task
        third = await fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        refunds = (await fresh.api("GET", path)).json()

    assert slow.status_code == 201
    assert first.status_code == 201
    assert_hal_error(
        second, 409, detail="Another request with this Idempotency-Key is already being processed."
    )
    assert third.status_code == 201 and third.headers["idempotent-replayed"] == "true"
    assert third.content == first.content
    assert refunds["count"] == 1


async def _faults_left(sb: Sandbox, count: int) -> bool:
    return len((await sb.http.get("/sandbox/faults")).json()["faults"]) == count


# --------------------------------------------------------------------------------------------
# 9. faults and error format


async def test_a_503_fault_creates_nothing_and_a_retry_with_the_same_key_creates_one(
    fresh: Sandbox,
) -> None:
    key = str(uuid.uuid4())
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await fresh.paid_payment(value="20.00")
        path = f"/v2/payments/{payment['id']}/refunds"
        body = {"amount": {"currency": "EUR", "value": "4.00"}}
        added = await fresh.control("/faults", {"endpoint": "create_refund", "status": 503})
        unavailable = await fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        after_fault = (await fresh.http.get(f"/sandbox/payments/{payment['id']}")).json()
        retried = await fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        replayed = await fresh.api("POST", path, body, headers={"Idempotency-Key": key})
        refunds = (await fresh.api("GET", path)).json()
    assert added.status_code == 201
    assert added.json()["faults"] == [
        {
            "endpoint": "create_refund",
            "status": 503,
            "detail": None,
            "delay_ms": 0,
            "retry_after": None,
            "times": 1,
        }
    ]
    assert_hal_error(unavailable, 503)
    assert after_fault["refunds"] == []
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert replayed.headers["idempotent-replayed"] == "true"
    assert refunds["count"] == 1


async def test_fault_injection_per_endpoint(fresh: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        payment = await fresh.create_payment()
        pid = payment["id"]
        for fault in (
            {"endpoint": "get_payment", "status": 429, "times": 2},
            {"endpoint": "create_payment", "status": 500, "detail": "Boom"},
            {"endpoint": "cancel_payment", "status": 502},
            {"endpoint": "list_refunds", "status": 504},
        ):
            assert (await fresh.control("/faults", fault)).status_code == 201
        unauthenticated = await fresh.http.get(f"/v2/payments/{pid}")  # consumes no fault
        limited_1 = await fresh.api("GET", f"/v2/payments/{pid}")
        limited_2 = await fresh.api("GET", f"/v2/payments/{pid}")
        fetched = await fresh.api("GET", f"/v2/payments/{pid}")
        boom = await fresh.api("POST", "/v2/payments", fresh.payment_body())
        bad_gateway = await fresh.api("DELETE", f"/v2/payments/{pid}")
        still_open = await fresh.payment(pid)
        timeout = await fresh.api("GET", f"/v2/payments/{pid}/refunds")
        listed = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        await fresh.control("/faults", {"endpoint": "get_refund", "status": 503, "times": 5})
        cleared = await fresh.http.delete("/sandbox/faults")
        after_clear = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        bad_endpoint = await fresh.control("/faults", {"endpoint": "nowhere", "status": 500})
        bad_status = await fresh.control("/faults", {"endpoint": "get_payment", "status": 200})
        nothing = await fresh.control("/faults", {"endpoint": "get_payment"})

    assert unauthenticated.status_code == 401
    assert_hal_error(limited_1, 429)
    assert_hal_error(limited_2, 429)
    assert fetched.status_code == 200
    assert_hal_error(boom, 500, detail="Boom")
    assert_hal_error(bad_gateway, 502)
    assert still_open["status"] == "open"  # the faulted cancel applied nothing
    assert_hal_error(timeout, 504)
    assert listed == []
    assert cleared.status_code == 204 and after_clear == []
    assert bad_endpoint.status_code == bad_status.status_code == nothing.status_code == 400


async def test_a_fault_can_carry_retry_after(fresh: Sandbox) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    async with asyncio.timeout(TEST_TIMEOUT):
        pid = (await fresh.create_payment())["id"]
        for fault in (
            {"endpoint": "get_payment", "status": 429, "retry_after": 1},
            {"endpoint": "create_refund", "status": 503, "retry_after": date},
        ):
            assert (await fresh.control("/faults", fault)).status_code == 201
        listed = (await fresh.http.get("/sandbox/faults")).json()["faults"]
        limited = await fresh.api("GET", f"/v2/payments/{pid}")
        fetched = await fresh.api("GET", f"/v2/payments/{pid}")
        unavailable = await fresh.api(
            "POST",
            f"/v2/payments/{pid}/refunds",
            {"amount": {"currency": "EUR", "value": "1.00"}},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        refused = [
            await fresh.control("/faults", {"endpoint": "get_payment", **bad})
            for bad in (
                {"status": 429, "retry_after": -1},
                {"status": 429, "retry_after": 3601},
                {"status": 429, "retry_after": True},
                {"status": 429, "retry_after": "soon"},
                {"status": 429, "retry_after": date + "\r\nX-Injected: 1"},
                {"delay_ms": 10, "retry_after": 1},  # a Retry-After needs an error answer
            )
        ]
    assert [(f["endpoint"], f["retry_after"]) for f in listed] == [
        ("get_payment", 1),
        ("create_refund", date),
    ]
    assert_hal_error(limited, 429)
    assert limited.headers["retry-after"] == "1"
    assert fetched.status_code == 200 and "retry-after" not in fetched.headers
    assert_hal_error(unavailable, 503)
    assert unavailable.headers["retry-after"] == date
    assert [r.status_code for r in refused] == [400] * 6


async def test_request_log_counts_the_calls_per_payment(fresh: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        pid = (await fresh.create_payment())["id"]
        other = (await fresh.create_payment())["id"]
        await fresh.control("/faults", {"endpoint": "get_payment", "status": 503})
        for _ in range(3):
            await fresh.api("GET", f"/v2/payments/{pid}")
        await fresh.api("GET", f"/v2/payments/{other}")
        await fresh.http.get(f"/v2/payments/{pid}")  # unauthenticated: logged all the same
        await fresh.api("GET", f"/v2/payments/{pid}/refunds")
        await fresh.http.get(f"/sandbox/payments/{pid}")  # the control API is not logged
        gets = (
            await fresh.http.get(
                "/sandbox/requests", params={"endpoint": "get_payment", "payment_id": pid}
            )
        ).json()
        everything = (await fresh.http.get("/sandbox/requests")).json()
        unknown = await fresh.http.get("/sandbox/requests", params={"payment_id": "tr_None"})
    assert gets["count"] == 4
    assert [r["status"] for r in gets["requests"]] == [503, 200, 200, 401]
    assert {(r["method"], r["path"]) for r in gets["requests"]} == {("GET", f"/v2/payments/{pid}")}
    times = [parse_iso(r["at"]) for r in gets["requests"]]
    assert times == sorted(times)
    assert [r["endpoint"] for r in everything["requests"]] == [
        "create_payment",
        "create_payment",
        "get_payment",
        "get_payment",
        "get_payment",
        "get_payment",
        "get_payment",
        "list_refunds",
    ]
    assert everything["requests"][0]["payment_id"] is None
    assert unknown.json() == {"count": 0, "requests": []}


async def test_errors_are_hal(sandbox: Sandbox) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        unknown_route = await sandbox.api("GET", "/v2/nothing-here")
        wrong_method = await sandbox.api("PUT", "/v2/payments")
        not_json = await sandbox.api(
            "POST",
            "/v2/payments",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        not_object = await sandbox.api("POST", "/v2/payments", content=b"[1]")
        unknown = await sandbox.api("GET", "/v2/payments/tr_missing0000")
        unknown_refund = await sandbox.api("GET", "/v2/payments/tr_missing0000/refunds/re_x")
        health = await sandbox.http.get("/healthz")
    assert_hal_error(unknown_route, 404)
    assert_hal_error(wrong_method, 405)
    assert_hal_error(not_json, 400)
    assert_hal_error(not_object, 400)
    assert_hal_error(unknown, 404, detail="No payment exists with token tr_missing0000.")
    assert_hal_error(unknown_refund, 404)
    assert health.json() == {"status": "ok"}


# --------------------------------------------------------------------------------------------
# 10. keys and command line


async def test_ensure_mollie_keys(tmp_path: Path) -> None:
    paths = ensure_mollie_keys(tmp_path)
    config = paths["config"]
    data = json.loads(config.read_text())
    assert config == tmp_path / "mollie" / "mollie.json"
    assert re.fullmatch(r"test_[A-Za-z0-9]{30}", data["api_key"])
    assert re.fullmatch(r"pfl_[A-Za-z0-9]{10}", data["profile_id"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(ensure_mollie_keys(tmp_path)["config"].read_text()) == data  # kept
    assert ensure_keys(tmp_path)["mollie_config"] == config


@pytest.mark.parametrize("with_keys", [True, False])
async def test_cli_reads_env_and_stops_on_sigterm(tmp_path: Path, with_keys: bool) -> None:
    port = free_port()
    keys_dir = tmp_path / "fresh-keys"
    env = {
        **os.environ,
        "MOLLIE_SANDBOX_PORT": str(port),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    env.pop("TICKETING_KEYS_DIR", None)
    if with_keys:
        env["TICKETING_KEYS_DIR"] = str(keys_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticketing_local.sandbox.mollie",
        "--host",
        HOST,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            while b"mollie sandbox listening" not in (line := await proc.stderr.readline()):
                assert line, "sandbox exited before it was ready"
            api_key = (
                json.loads((keys_dir / "mollie" / "mollie.json").read_text())["api_key"]
                if with_keys
                else "live_" + "a" * 30
            )
            async with httpx.AsyncClient(
                base_url=f"http://{HOST}:{port}", trust_env=False
            ) as client:
                health = await client.get("/healthz")
                accepted = await client.get(
                    "/v2/payments", headers={"Authorization": f"Bearer {api_key}"}
                )
                other = await client.get(
                    "/v2/payments", headers={"Authorization": "Bearer test_" + "q" * 30}
                )
            proc.send_signal(signal.SIGTERM)
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert health.json() == {"status": "ok"}
    assert accepted.status_code == 200
    # with a key directory only its key is accepted; without one, any well-formed key
    assert other.status_code == (401 if with_keys else 200)
    assert (keys_dir / "mollie" / "mollie.json").exists() is with_keys
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"mollie sandbox stopped" in stderr
