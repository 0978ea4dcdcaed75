"""The gateway's merged OpenAPI document (`/openapi.json`, Swagger UI at `/docs`): made from the
code, never stale, and telling a client what it needs (tags, summaries, the bearer scheme, the
problem+json errors, examples of every body)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ticketing_local import openapi
from ticketing_local.testing import json_refs

PROBLEM = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    committed: dict[str, Any] = json.loads(openapi.MERGED.read_text())
    return committed


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_the_committed_document_is_what_the_code_says() -> None:
    assert openapi.MERGED.read_text() == openapi.render(), (
        "deploy/gateway/docs/openapi.json is stale: run `make openapi`"
    )


def test_it_holds_every_service_s_public_operations(document: dict[str, Any]) -> None:
    services = {operation["x-service"] for _, _, operation in _operations(document)}
    assert services == {"orders", "payments", "refunds"}  # notifications has no public route
    assert all(path.startswith("/v1/") for path in document["paths"])
    assert len(_operations(document)) >= 35


def test_every_operation_is_tagged_summarized_secured_and_documents_its_problems(
    document: dict[str, Any],
) -> None:
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    for method, path, operation in _operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("tags") and operation.get("summary"), where
        if path.startswith("/v1/webhooks/"):
            assert "security" not in operation, where  # the provider's signature instead
        else:
            assert operation["security"] == [{"bearer": []}], where
        for status in ("400", "404", "503"):
            content = operation["responses"][status].get("content", {})
            assert content.get("application/problem+json", {}).get("schema") == PROBLEM, (
                where,
                status,
            )


def test_every_json_body_has_examples_and_every_reference_resolves(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    for method, path, operation in _operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:  # an optional body is anyOf [the model, null]
            (ref,) = json_refs(body["schema"])
            name = ref.rsplit("/", 1)[1]
            assert schemas[name].get("examples"), f"{method.upper()} {path}: {name}"
    for ref in set(json_refs(document)):
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_a_required_idempotency_key_is_documented_as_required(document: dict[str, Any]) -> None:
    refund = document["paths"]["/v1/orders/{order_id}/refunds"]["post"]
    (key,) = [p for p in refund["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["required"] is True
