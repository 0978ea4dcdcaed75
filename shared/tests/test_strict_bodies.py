"""Requests are read strictly by every route of the services' routers: a JSON object naming a key
twice, at any depth, is a 422 ``duplicate_key`` problem naming the key (never "the last one
wins"), what is not JSON at all is answered as before, and a control character in a path or
query parameter is a 422 like one in a body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ticketing_shared.errors import DuplicateKey, install_handlers
from ticketing_shared.inputs import FreeText, Line, StrictInput
from ticketing_shared.web import api_router, loads_strict


class Item(StrictInput):
    name: str


class Body(StrictInput):
    amount: int | None = None
    items: list[Item] = []
    title: Line | None = None
    note: FreeText | None = None


def _app() -> FastAPI:
    app = FastAPI()
    install_handlers(app)
    router = api_router()

    @router.post("/things")
    async def things(body: Body) -> dict[str, Any]:
        return body.model_dump()

    @router.get("/things/{name}")
    async def thing(name: str, q: str | None = None) -> dict[str, Any]:
        return {"name": name, "q": q}

    @router.post("/maybe")
    async def maybe(body: Body | None = None) -> dict[str, Any]:
        return {"body": body.model_dump() if body else None}

    app.include_router(router)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


async def _post(c: httpx.AsyncClient, path: str, raw: bytes) -> httpx.Response:
    return await c.post(path, content=raw, headers={"Content-Type": "application/json"})


def test_the_parser_names_the_repeated_key_at_any_depth() -> None:
    assert loads_strict(b'{"a": {"b": [{"c": 1, "d": 2}]}, "e": null}') == {
        "a": {"b": [{"c": 1, "d": 2}]},
        "e": None,
    }
    assert loads_strict(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]  # distinct objects
    for raw, key in (
        (b'{"amount": 1, "amount": null}', "amount"),
        (b'{"a": {"b": [{"c": 1, "c": 1}]}}', "c"),
        ('{"\\u00e9": 1, "é": 2}'.encode(), "é"),  # the same key, escaped or not
    ):
        with pytest.raises(DuplicateKey) as caught:
            loads_strict(raw)
        assert caught.value.key == key


async def test_a_repeated_key_is_a_422_naming_it_and_nothing_runs(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/v1/things", "/v1/maybe"):
        for raw in (
            b'{"amount": 1, "amount": null}',
            b'{"items": [{"name": "a", "name": "b"}]}',
        ):
            resp = await _post(client, path, raw)
            assert resp.status_code == 422, resp.text
            assert resp.headers["content-type"] == "application/problem+json"
            problem = resp.json()
            assert problem["code"] == "duplicate_key"
            assert problem["key"] in ("amount", "name")
            assert problem["key"] in problem["detail"]


async def test_bodies_without_repeats_and_non_json_are_served_as_before(
    client: httpx.AsyncClient,
) -> None:
    ok = await _post(
        client, "/v1/things", b'{"amount": 1, "items": [{"name": "a"}, {"name": "b"}]}'
    )
    assert ok.status_code == 200
    assert ok.json() == {
        "amount": 1,
        "items": [{"name": "a"}, {"name": "b"}],
        "title": None,
        "note": None,
    }
    assert (await client.post("/v1/maybe")).json() == {"body": None}
    broken = await _post(client, "/v1/things", b'{"amount": ')
    assert broken.status_code == 422 and broken.json()["code"] == "validation_error"
    assert broken.json()["errors"][0]["type"] == "json_invalid"
    not_json = await client.post(
        "/v1/things", content=b"amount=1", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status_code == 422 and not_json.json()["code"] == "validation_error"


async def test_a_long_repeated_key_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    key = "k" * 5000
    resp = await _post(client, "/v1/things", f'{{"{key}": 1, "{key}": 2}}'.encode())
    assert resp.status_code == 422 and resp.json()["key"] == key[:100]
    assert len(resp.content) < 1000


async def test_text_in_a_body_holds_no_control_characters(client: httpx.AsyncClient) -> None:
    for body, loc in (
        ({"title": "gala\x00"}, ["body"]),
        ({"title": "gala\x1b[31m"}, ["body"]),
        ({"title": "gala\x7f"}, ["body"]),
        ({"note": "line\x0bline"}, ["body"]),
        ({"items": [{"name": "a\x01"}]}, ["body"]),  # at any depth
        ({"items": [{"name\x00": "a"}]}, ["body"]),  # keys too
        ({"title": "two\nlines"}, ["body", "title"]),
        ({"title": "tab\there"}, ["body", "title"]),
        ({"title": "cr\r"}, ["body", "title"]),
        ({"items": [{"name": "x"}], "title": "\t"}, ["body", "title"]),
    ):
        resp = await client.post("/v1/things", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["errors"][0]["loc"] == loc, (body, resp.json())
    free = {"title": "Gala – 春节 ✓", "note": "first line\r\nsecond\tline\n"}
    ok = await client.post("/v1/things", json=free)
    assert ok.status_code == 200 and ok.json()["note"] == free["note"]


async def test_path_and_query_parameters_hold_no_control_characters(
    client: httpx.AsyncClient,
) -> None:
    for url, loc in (
        ("/v1/things/a%00b", ["path", "name"]),
        ("/v1/things/a%0Ab", ["path", "name"]),
        ("/v1/things/a%7F", ["path", "name"]),
        ("/v1/things/a?q=x%09y", ["query", "q"]),
        ("/v1/things/a?q=ok&q=x%01", ["query", "q"]),
        ("/v1/things/a?x%00=1", ["query", "x\x00"]),
    ):
        resp = await client.get(url)
        assert resp.status_code == 422, (url, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["code"] == "validation_error"
        assert problem["errors"] == [
            {
                "loc": loc,
                "msg": "must not contain control characters (U+0000-U+001F, U+007F)",
                "type": "control_character",
            }
        ]
    ok = await client.get("/v1/things/caf%C3%A9 1?q=a b")
    assert ok.status_code == 200 and ok.json() == {"name": "café 1", "q": "a b"}
