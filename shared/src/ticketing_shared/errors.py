"""Domain errors rendered as RFC 9457 ``application/problem+json``.

Exception tree::

    DomainError                      status + stable ``code``
    ├── Unauthorized        401      unauthenticated
    ├── Forbidden           403      authenticated, role too weak
    ├── NotFound            404      missing, or not the caller's to see
    ├── Conflict            409      a rule of the domain forbids it now
    ├── Unprocessable       422      well-formed but not acceptable
    ├── BadRequest          400      malformed request (e.g. missing header)
    └── ServiceUnavailable  503      a dependency is down; try again (``Retry-After``)

An exception no handler takes is a logged 500 (``internal_error``), unless it says the database
is unavailable (:func:`db.unavailable`): then the request was fine and the answer is a 503
``database_unavailable`` with ``Retry-After``, whichever use case it reached.

:class:`DuplicateKey` (422) is an ``HTTPException`` instead: it is raised while FastAPI reads the
body, which lets only those through.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import db

PROBLEM_JSON = "application/problem+json"
INTERNAL_ERROR: dict[str, Any] = {
    "type": "https://errors.ticketing.dev/internal_error",
    "title": "Internal error",
    "status": 500,
    "code": "internal_error",
    "detail": "an unexpected error occurred; it has been logged",
}
log = logging.getLogger("ticketing.errors")


class Problem(BaseModel):
    """An RFC 9457 problem, as every error of the services is answered (``application/problem+json``);
    some carry more members (``errors`` of a validation error, the figures of a refusal)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str = Field(description="stable, machine-readable: what went wrong")
    detail: str


class DomainError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        return {
            "type": f"https://errors.ticketing.dev/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            **self.extra,
        }


class BadRequest(DomainError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class Unprocessable(DomainError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class ServiceUnavailable(DomainError):
    status, code, title = 503, "service_unavailable", "Service unavailable"
    retry_after: int = 1


class IdempotencyKeyReused(Unprocessable):
    code, title = "idempotency_key_reused", "Idempotency-Key reused with another request"


class DuplicateKey(StarletteHTTPException):
    """A JSON object of the body names one key twice. Parsers disagree on which value counts
    (ours kept the last, so ``{"amount": 1, "amount": null}`` meant no amount at all): refused.

    An ``HTTPException`` because FastAPI turns any other exception raised while it reads the
    body into a bare 400; this one it lets through to our handler."""

    def __init__(self, key: str) -> None:
        super().__init__(422, f"the key {key[:100]!r} appears more than once in an object")
        self.key = key[:100]

    def problem(self) -> dict[str, Any]:
        return {
            "type": "https://errors.ticketing.dev/duplicate_key",
            "title": "Duplicate key in the JSON body",
            "status": 422,
            "code": "duplicate_key",
            "detail": str(self.detail),
            "key": self.key,
        }


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def domain_response(exc: DomainError) -> JSONResponse:
    headers = None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, ServiceUnavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    return problem_response(exc.status, exc.problem(), headers)


def unexpected_response(exc: BaseException) -> JSONResponse:
    """The answer to an exception no handler took. The database being unavailable (down,
    restarting, refusing connections, a connection dropped mid-request) is no bug: 503, try again
    (a provider's webhook is sent again). Anything else is one: logged with its traceback, and
    the client gets a stable, non-leaking 500."""
    if db.unavailable(exc):
        log.warning("http.database_unavailable", extra={"error": repr(exc)})
        unavailable = ServiceUnavailable(
            "the service's database cannot be reached now; try again after Retry-After",
            code="database_unavailable",
        )
        return domain_response(unavailable)
    log.exception("http.unhandled_error", exc_info=exc)
    return problem_response(500, INTERNAL_ERROR)


def install_handlers(app: FastAPI) -> None:
    """Render every error as problem+json with a stable ``code``."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return domain_response(exc)

    @app.exception_handler(DuplicateKey)
    async def _duplicate_key(_: Request, exc: DuplicateKey) -> JSONResponse:
        return problem_response(422, exc.problem())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        body = {
            "type": "https://errors.ticketing.dev/validation_error",
            "title": "Invalid request",
            "status": 422,
            "code": "validation_error",
            "detail": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            "errors": errors,
        }
        return problem_response(422, body)

    @app.exception_handler(asyncpg.DataError)
    async def _data(_: Request, exc: asyncpg.DataError) -> JSONResponse:
        # PostgreSQL refused a value (class 22: out of range, untranslatable, malformed): the
        # input was bad, which the request models should have said first; logged so they can
        log.warning(
            "http.input_refused_by_database",
            extra={"sqlstate": exc.sqlstate, "error": type(exc).__name__},
        )
        body = {
            "type": "https://errors.ticketing.dev/invalid_input",
            "title": "Invalid request",
            "status": 422,
            "code": "invalid_input",
            "detail": "a value in the request is out of range or cannot be stored",
        }
        return problem_response(422, body)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        body = {
            "type": f"https://errors.ticketing.dev/{code}",
            "title": str(exc.detail),
            "status": exc.status_code,
            "code": code,
            "detail": str(exc.detail),
        }
        return problem_response(exc.status_code, body)
