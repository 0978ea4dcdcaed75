"""``Idempotency-Key`` for creating POSTs.

The key is claimed in the same transaction as the creation: the same key and body replay the
first response; the same key with another body is ``422 idempotency_key_reused``. A concurrent
duplicate blocks on the claim's unique index until the first commits, then replays it. A failed
first attempt rolls its claim back, so the client may retry with the same key.

The key is sent once and is 1-255 printable ASCII characters (a UUID, a hash, an order number):
anything else is ``400``. An empty key is not "no key" (its retry would buy twice), and of a
repeated header none counts (a proxy on the way may keep another one than we would).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Header

from .errors import BadRequest, Conflict, IdempotencyKeyReused

MAX_KEY_LENGTH = 255
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")

# The header as an endpoint declares it (for the OpenAPI documents; :func:`for_request` checks it).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Sent once: 1-255 printable ASCII characters, new for each new request",
    ),
]


@dataclass(frozen=True)
class IdempotentRequest:
    """A creating request's key, scoped to the caller and the route, and its body's fingerprint."""

    scope: str
    key: str
    fingerprint: str


def for_request(
    request: Any, caller: str, key: str | None, body: Any, *, required: bool = False
) -> IdempotentRequest | None:
    """The Idempotency-Key of a creating POST (``request``: the Starlette request; ``key``: the
    header as FastAPI read it, its first value; ``body``: its pydantic model or None). None when
    no key was sent and none is required."""
    if key is not None and len(request.headers.getlist("idempotency-key")) > 1:
        raise BadRequest("send the Idempotency-Key header once", code="idempotency_key_repeated")
    checked = validate_key(key, required=required)
    if checked is None:
        return None
    route = getattr(request.scope.get("route"), "path", request.url.path)
    payload = body.model_dump(mode="json") if body is not None else None
    return IdempotentRequest(
        scope=f"{caller}|{request.method} {route}",
        key=checked,
        fingerprint=request_hash(request.method, request.url.path, payload),
    )


@dataclass(frozen=True)
class KeyedResponse:
    """An Idempotency-Key's row written with the response it answers, by a create that writes
    everything in one statement (the purchase)."""

    scope: str
    key: str
    request_hash: str
    response_status: int
    response_body: Any

    @classmethod
    def answering(cls, request: IdempotentRequest, status: int, body: Any) -> KeyedResponse:
        return cls(request.scope, request.key, request.fingerprint, status, body)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def validate_key(key: str | None, *, required: bool) -> str | None:
    """``key`` if it is one (None: not sent), else ``400``."""
    if key is None:
        if required:
            raise BadRequest(
                "the Idempotency-Key header is required", code="idempotency_key_required"
            )
        return None
    if not _KEY.fullmatch(key):
        raise BadRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters", code="bad_idempotency_key"
        )
    return key


async def begin(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    fingerprint: str,
    tenant: str,
    response: StoredResponse | None = None,
) -> StoredResponse | None:
    """Claim ``key``; None when this request is the first, else the first response to replay.

    ``response``: when the response is known before the work (ids chosen up front), it is stored
    with the claim, so no write to this table follows the work itself. ``tenant``: whose data
    the request creates (the key's row is bound by row-level security like that data).
    """
    claimed = await conn.fetchval(
        """
        INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body,
                                      tenant_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (scope, key) DO NOTHING RETURNING true
        """,
        scope,
        key,
        fingerprint,
        response.status if response else None,
        response.body if response else None,
        tenant,
    )
    if claimed:
        return None
    row = await _stored(conn, scope, key)
    if row is None:  # the claimant rolled back between our two statements: treat as in flight
        raise Conflict(
            "a request with this Idempotency-Key is in progress", code="idempotency_key_in_use"
        )
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    if row["response_status"] is None:
        raise Conflict(
            "a request with this Idempotency-Key is in progress", code="idempotency_key_in_use"
        )
    return StoredResponse(row["response_status"], row["response_body"])


async def lookup(
    conn: asyncpg.Connection, *, scope: str, key: str, fingerprint: str
) -> StoredResponse | None:
    """The stored response of an earlier request with this key (same body), else None.

    For creations that write the key together with their response in one statement.
    """
    row = await _stored(conn, scope, key)
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    if row["response_status"] is None:
        raise Conflict(
            "a request with this Idempotency-Key is in progress", code="idempotency_key_in_use"
        )
    return StoredResponse(row["response_status"], row["response_body"])


async def _stored(conn: asyncpg.Connection, scope: str, key: str) -> asyncpg.Record | None:
    """The key's row, whatever the transaction's row-level security scope (the scope names the
    caller: this is theirs), which is left as it was."""
    return await conn.fetchrow("SELECT * FROM idempotency_lookup($1, $2)", scope, key)


async def complete(
    conn: asyncpg.Connection, *, scope: str, key: str, status: int, body: Any
) -> None:
    await conn.execute(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE scope = $1 AND key = $2",
        scope,
        key,
        status,
        body,
    )
