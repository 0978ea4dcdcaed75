"""What every service's API takes in, checked on the apps themselves (built, not started): every
operation with a JSON body reads it strictly (a key named twice is refused before anything else
runs)."""

from __future__ import annotations

import importlib
import re
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

SERVICES = ("orders", "payments", "refunds", "notifications")


def _apps() -> Iterator[tuple[str, FastAPI]]:
    for service in SERVICES:
        settings_cls = importlib.import_module(f"{service}.settings").Settings
        extra = {"invite_secret": secrets.token_hex(32)} if service == "orders" else {}
        yield service, importlib.import_module(f"{service}.api").create_app(settings_cls(**extra))


def _json_operations() -> list[tuple[str, FastAPI, str, str]]:
    found = []
    for service, app in _apps():
        for path, operations in app.openapi()["paths"].items():
            for method, operation in operations.items():
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    found.append((service, app, method.upper(), path))
    return found


JSON_OPERATIONS = _json_operations()


def test_the_apis_take_json_bodies() -> None:
    assert {service for service, *_ in JSON_OPERATIONS} == {"orders", "payments", "refunds"}
    assert len(JSON_OPERATIONS) >= 12


@pytest.mark.parametrize(
    ("app", "method", "path"),
    [(app, method, path) for _, app, method, path in JSON_OPERATIONS],
    ids=[f"{service} {method} {path}" for service, _, method, path in JSON_OPERATIONS],
)
async def test_every_json_body_refuses_a_repeated_key(app: FastAPI, method: str, path: str) -> None:
    url = re.sub(r"\{tenant_id\}", "t-1", path)
    url = re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), url)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as c:
        resp = await c.request(
            method,
            url,
            content=b'{"reason": "organizer", "reason": "admin"}',
            headers={"Content-Type": "application/json"},
        )
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert (resp.json()["code"], resp.json()["key"]) == ("duplicate_key", "reason")
