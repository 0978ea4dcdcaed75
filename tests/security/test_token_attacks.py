"""Forged, stale and malformed tokens, through the gateway, against every service that takes
tokens: each is 401 with ``WWW-Authenticate: Bearer``, never a 5xx and never the wider access a
malformed claim could be read as."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import Stack
from ticketing_shared.auth import DEV_AUDIENCE, DEV_ISSUER

pytestmark = pytest.mark.asyncio(loop_scope="session")

# a route of each service that needs a token (the ids need not exist: auth comes first)
PROTECTED = [
    "/v1/me/orders",
    f"/v1/orders/{uuid.uuid4()}/payments",
    f"/v1/refunds/{uuid.uuid4()}",
    f"/v1/orders/{uuid.uuid4()}/refunds",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "mallory",
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def _signed(stack: Stack, claims: dict[str, Any]) -> str:
    key = (stack.run_dir / "keys" / "jwt-private.pem").read_text()
    return jwt.encode(claims, key, algorithm="RS256")


def _attacks(stack: Stack) -> dict[str, str]:
    public = (stack.run_dir / "keys" / "jwt-public.pem").read_bytes()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(platform_admin=True)).encode())
    hs_with_public_key = f"{header}.{body}." + _b64(
        hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    )
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {
        "alg-none": f"{none_header}.{body}.",
        "hs256-keyed-with-the-public-key": hs_with_public_key,
        "expired": _signed(stack, _claims(exp=int(time.time()) - 3600)),
        "wrong-issuer": _signed(stack, _claims(iss="https://evil.example")),
        "wrong-audience": _signed(stack, _claims(aud="another-api")),
        "no-issuer": _signed(stack, {k: v for k, v in _claims().items() if k != "iss"}),
        "string-platform-admin": _signed(stack, _claims(platform_admin="false")),
        "all-tenants-role": _signed(stack, _claims(roles={"*": "member"})),
        "comma-in-role-key": _signed(stack, _claims(roles={"t1,t2": "admin"})),
        "unknown-role": _signed(stack, _claims(roles={"t1": "root"})),
        "no-subject": _signed(stack, {k: v for k, v in _claims().items() if k != "sub"}),
        "nul-in-subject": _signed(stack, _claims(sub="mal\x00lory")),
        "signed-by-another-key": jwt.encode(
            _claims(),
            _other_key(),
            algorithm="RS256",
        ),
        "garbage": "not.a.token",
        "oversized": "x" * 7000,
    }


def _other_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_every_forged_or_malformed_token_is_refused_everywhere(stack: Stack) -> None:
    attacks = _attacks(stack)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        for name, token in attacks.items():
            for path in PROTECTED:
                resp = await c.get(path, headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == 401, (name, path, resp.status_code, resp.text)
                assert resp.headers["www-authenticate"] == "Bearer", (name, path)
                assert resp.json()["code"] == "invalid_token", (name, path)


async def test_no_token_or_another_scheme_is_unauthenticated(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer"}):
            for path in PROTECTED:
                resp = await c.get(path, headers=headers)
                assert resp.status_code == 401, (headers, path, resp.text)
                assert resp.json()["code"] == "unauthorized"


async def test_the_genuine_token_passes_where_its_forgeries_do_not(stack: Stack) -> None:
    """The control: the same claims, properly signed, are accepted."""
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        resp = await c.get(
            "/v1/me/orders", headers={"Authorization": f"Bearer {_signed(stack, _claims())}"}
        )
        assert resp.status_code == 200, resp.text
