"""Property-based fuzzing of every operation of every service's OpenAPI document (schemathesis),
against the running services, each example sent with a valid staff token and with a valid buyer
token: no input, valid or not, gets a 5xx, and every answer is one the document describes
(status, content type, body).

Bounded for ``make test`` (``FUZZ_EXAMPLES`` examples per operation, 25 by default: fewer leave optional parameters
unexplored); ``make fuzz``
runs many more.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def _tokens(stack: Stack) -> list[str]:
    return [
        stack.token("fuzz-admin", email="fuzz-admin@example.test", roles={"t-fuzz": "owner"}),
        stack.token("fuzz-buyer", email="fuzz-buyer@example.test"),
    ]


def _fuzz(operation: Any, tokens: list[str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=os.environ.get("FUZZ_RANDOM") is None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        for token in tokens:  # as the tenant's staff, then as a buyer
            case.call_and_validate(
                headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30
            )

    run()


@pytest.mark.parametrize("service", ["orders", "payments", "refunds"])
def test_no_input_gets_a_5xx_and_every_answer_is_documented(stack: Stack, service: str) -> None:
    port = stack.port(f"{service.upper()}_API_PORT")
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    tokens = _tokens(stack)
    failures, tried = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        tried += 1
        try:
            _fuzz(operation, tokens)
        except BaseException as exc:  # every operation is tried; all failures are reported
            if not isinstance(exc, Exception) and not isinstance(exc, BaseExceptionGroup):
                raise
            failures.append(
                f"{operation.method.upper()} {operation.path}:\n"
                + "".join(traceback.format_exception_only(exc))
            )
    assert tried > 0
    assert not failures, "\n\n".join(failures)


def test_the_notifications_api_has_no_operations(stack: Stack) -> None:
    """It is driven by events only: nothing of it is public (so nothing to fuzz)."""
    port = stack.port("NOTIFICATIONS_API_PORT")
    spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).json()
    assert spec["paths"] == {}
