"""What every service's API takes in, checked on the apps and request models themselves (built,
not started): every operation with a JSON body reads it strictly (a key named twice is refused
before anything else runs), no field of any request model coerces a number or a flag, and no text
field takes a control character (one line, unless it is declared free text)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from ticketing_shared.inputs import StrictInput

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


def _request_models() -> list[type[StrictInput]]:
    for service in SERVICES:
        if importlib.util.find_spec(f"{service}.schemas") is not None:
            importlib.import_module(f"{service}.schemas")
    found, todo = [], list(StrictInput.__subclasses__())
    while todo:
        model = todo.pop()
        todo += model.__subclasses__()
        if model.__module__.split(".")[0] in SERVICES:
            found.append(model)
    return found


def _fields(json_type: str) -> list[tuple[str, TypeAdapter[Any]]]:
    """Every field of a request model whose JSON type is ``json_type`` (nullable or not), with a
    validator of the field alone."""
    found = []
    for model in _request_models():
        properties = model.model_json_schema()["properties"]
        for name, field in model.model_fields.items():
            schema = properties[field.alias or name]
            # (ids and times are strings of a format: parsed, never taken as text)
            types = {s.get("type") for s in schema.get("anyOf", [schema]) if "format" not in s}
            if json_type in types:
                annotation = field.annotation
                if field.metadata:
                    annotation = Annotated[annotation, *field.metadata]
                found.append((f"{model.__name__}.{name}", TypeAdapter(annotation)))
    return found


INTEGERS, BOOLEANS, TEXTS = _fields("integer"), _fields("boolean"), _fields("string")
# notes of several lines: TAB, LF and CR allowed, no other control character
FREE_TEXT = {"StaffAction.note", "RefundCreate.internal_note"}


def test_the_request_models_have_numbers_and_flags() -> None:
    assert {"RegistrationCreate.quantity", "PriceTier.total_amount", "RefundCreate.amount"} <= {
        name for name, _ in INTEGERS
    }
    assert "EventCreate.require_approval" in {name for name, _ in BOOLEANS}
    assert {"EventCreate.title", "TicketTypeCreate.name", "CheckoutCreate.openid"} <= {
        name for name, _ in TEXTS
    }
    assert {name for name, _ in TEXTS} >= FREE_TEXT


@pytest.mark.parametrize(("name", "adapter"), INTEGERS, ids=[n for n, _ in INTEGERS])
def test_no_integer_field_coerces(name: str, adapter: TypeAdapter[Any]) -> None:
    assert adapter.validate_python(1) == 1
    for value in (True, "5", "1", 1.0, 5.0):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


@pytest.mark.parametrize(("name", "adapter"), BOOLEANS, ids=[n for n, _ in BOOLEANS])
def test_no_boolean_field_coerces(name: str, adapter: TypeAdapter[Any]) -> None:
    assert adapter.validate_python(True) is True
    for value in (1, 0, "true", "false", "yes", 1.0):
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


@pytest.mark.parametrize(("name", "adapter"), TEXTS, ids=[n for n, _ in TEXTS])
def test_no_text_field_takes_a_control_character(name: str, adapter: TypeAdapter[Any]) -> None:
    """Checked on each field alone: the models' own check of the whole body (no control
    character but TAB, LF and CR anywhere) comes on top."""
    for bad in ("\x00", "\x01", "\x1b", "\x7f", "\x0b", "\x0c"):
        with pytest.raises(ValidationError):
            adapter.validate_python(f"admin{bad}")
    for line_break in ("\t", "\n", "\r"):
        if name in FREE_TEXT:
            assert adapter.validate_python(f"one{line_break}two") == f"one{line_break}two"
        else:
            with pytest.raises(ValidationError):
                adapter.validate_python(f"admin{line_break}")
