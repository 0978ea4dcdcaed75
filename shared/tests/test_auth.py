"""JWT verification: RS256 only, signed by the configured key (a PEM or a JWKS document), of the
configured issuer and audience, with strictly typed claims."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ticketing_shared.auth import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    JwksKeys,
    TokenVerifier,
    mint_token,
)
from ticketing_shared.errors import Forbidden, ServiceUnavailable, Unauthorized
from ticketing_shared.settings import ServiceSettings


def _pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return priv, pub


PRIV, PUB = _pair()
OTHER_PRIV, _ = _pair()


def _raw(claims: dict[str, Any], key: str = PRIV, **headers: Any) -> str:
    """A token with exactly these claims (plus a valid iss, aud and exp unless given)."""
    body = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "exp": int(time.time()) + 60, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers=headers or None)


async def test_valid_token_gives_the_principal_and_roles() -> None:
    token = mint_token(
        PRIV,
        sub="alice",
        email="a@x.test",
        locale="zh-CN",
        roles={"t1": "admin", "t2": "member"},
        wechat_openid="oX",
    )
    p = await TokenVerifier(PUB).verify(token)
    assert (p.sub, p.email, p.locale, p.wechat_openid) == ("alice", "a@x.test", "zh-CN", "oX")
    assert p.is_staff_of("t1") and not p.is_staff_of("t2") and p.is_member_of("t2")
    assert not p.is_member_of("t3")
    with pytest.raises(Forbidden):
        p.require_staff("t2")


async def test_platform_admin_is_staff_everywhere() -> None:
    p = await TokenVerifier(PUB).verify(mint_token(PRIV, sub="root", platform_admin=True))
    assert p.is_staff_of("any-tenant")


async def test_absent_optional_claims_take_their_defaults() -> None:
    p = await TokenVerifier(PUB).verify(_raw({"sub": "bare"}))
    assert (p.email, p.locale, p.roles, p.platform_admin, p.wechat_openid) == (
        "",
        "en",
        {},
        False,
        None,
    )


@pytest.mark.parametrize(
    "token",
    [
        mint_token(OTHER_PRIV, sub="mallory"),  # signed by another key
        mint_token(PRIV, sub="late", ttl_seconds=-120),  # expired (beyond the leeway)
        jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 60, "iss": DEV_ISSUER, "aud": DEV_AUDIENCE},
            "s" * 64,
            algorithm="HS256",
        ),  # alg swap
        jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 60, "iss": DEV_ISSUER, "aud": DEV_AUDIENCE},
            None,
            algorithm="none",
        ),
        mint_token(PRIV, sub="x", roles={"t1": "superuser"}),  # unknown role
        mint_token(PRIV, sub="x", issuer="https://evil.example"),  # wrong issuer
        mint_token(PRIV, sub="x", audience="another-api"),  # wrong audience
        jwt.encode(
            {"sub": "x", "aud": DEV_AUDIENCE, "exp": int(time.time()) + 60}, PRIV, algorithm="RS256"
        ),  # no issuer
        jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, PRIV, algorithm="RS256"),
        "not.a.jwt",
        "x" * 9000,
    ],
    ids=[
        "other-key",
        "expired",
        "hs256",
        "alg-none",
        "unknown-role",
        "wrong-issuer",
        "wrong-audience",
        "no-issuer",
        "no-iss-no-aud",
        "garbage",
        "too-long",
    ],
)
async def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        await TokenVerifier(PUB).verify(token)


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The classic key-confusion attack: HMAC keyed with the RSA public key's PEM."""
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(
        json.dumps(
            {
                "sub": "x",
                "platform_admin": True,
                "iss": DEV_ISSUER,
                "aud": DEV_AUDIENCE,
                "exp": int(time.time()) + 60,
            }
        ).encode()
    )
    sig = b64(hmac.new(PUB.encode(), header + b"." + payload, hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        await TokenVerifier(PUB).verify((header + b"." + payload + b"." + sig).decode())


@pytest.mark.parametrize(
    "claims",
    [
        {"platform_admin": "false"},  # a string is not a boolean
        {"platform_admin": "true"},
        {"platform_admin": 1},
        {"roles": {"*": "member"}},  # the all-tenants scope
        {"roles": {"a,b": "admin"}},  # the scope's separator
        {"roles": {"t 1": "admin"}},
        {"roles": {"": "admin"}},
        {"roles": {"t" * 65: "admin"}},
        {"roles": ["t1"]},
        {"roles": {"t1": ["admin"]}},
        {"email": 42},
        {"email": "not-an-address"},
        {"locale": "en\x00"},
        {"locale": "<script>"},
        {"wechat_openid": "o\x00x"},
        {"wechat_openid": 7},
        {"sub": ""},
        {"sub": "a\x00b"},
        {"sub": 12},
    ],
)
async def test_malformed_claims_are_refused(claims: dict[str, Any]) -> None:
    token = _raw({"sub": "mallory", **claims})
    with pytest.raises(Unauthorized) as caught:
        await TokenVerifier(PUB).verify(token)
    assert caught.value.code == "invalid_token"


async def test_platform_admin_counts_only_as_json_true() -> None:
    assert (
        await TokenVerifier(PUB).verify(_raw({"sub": "a", "platform_admin": True}))
    ).platform_admin
    assert not (
        await TokenVerifier(PUB).verify(_raw({"sub": "a", "platform_admin": False}))
    ).platform_admin


def test_issuer_and_audience_are_required_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    prod = {"env": "production", "kafka_allow_plaintext": True}  # Kafka is not the subject
    with pytest.raises(ValueError, match="JWT_ISSUER and JWT_AUDIENCE"):
        ServiceSettings(**prod, jwt_public_key=PUB)
    with pytest.raises(ValueError, match="JWT_JWKS_URL"):
        ServiceSettings(**prod, jwt_issuer="https://idp", jwt_audience="api")
    ok = ServiceSettings(**prod, jwt_public_key=PUB, jwt_issuer="https://idp", jwt_audience="api")
    assert ok.token_verifier() is not None


async def test_dev_settings_still_verify_the_local_issuer_and_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL", "JWT_PUBLIC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    verifier = ServiceSettings(env="dev", jwt_public_key=PUB).token_verifier()
    assert (await verifier.verify(mint_token(PRIV, sub="a"))).sub == "a"
    with pytest.raises(Unauthorized):
        await verifier.verify(mint_token(PRIV, sub="a", issuer="elsewhere"))


# ------------------------------------------------------------------------------------------- JWKS
def _jwk(public_pem: str, kid: str) -> dict[str, Any]:
    key = serialization.load_pem_public_key(public_pem.encode())
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


class _JwksServer:
    """A local identity provider's JWKS document over real HTTP, counting its fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.requests = 0
        self.up = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if not outer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[_JwksServer]:
    server = _JwksServer()
    yield server
    server.close()


async def test_jwks_keys_verify_tokens_and_follow_a_rotation(jwks_server: _JwksServer) -> None:
    new_priv, new_pub = _pair()
    jwks_server.keys = [_jwk(PUB, "k1")]
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, lifespan=300, cooldown=0))

    assert (await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))).sub == "a"
    assert (await verifier.verify(mint_token(PRIV, sub="b", kid="k1"))).sub == "b"
    assert jwks_server.fetches == 1  # the second token used the cached key

    # the provider rotates: a token signed by the new key names a key id not seen before
    jwks_server.keys = [_jwk(PUB, "k1"), _jwk(new_pub, "k2")]
    assert (await verifier.verify(mint_token(new_priv, sub="c", kid="k2"))).sub == "c"
    assert jwks_server.fetches == 2

    # a token naming one key id but signed by another key is refused
    with pytest.raises(Unauthorized):
        await verifier.verify(mint_token(new_priv, sub="d", kid="k1"))
    # as is a token without a key id, or naming a key the provider does not publish
    with pytest.raises(Unauthorized):
        await verifier.verify(mint_token(PRIV, sub="e"))
    with pytest.raises(Unauthorized):
        await verifier.verify(mint_token(PRIV, sub="f", kid="k9"))


async def test_jwks_made_up_key_ids_do_not_hammer_the_provider(jwks_server: _JwksServer) -> None:
    jwks_server.keys = [_jwk(PUB, "k1")]
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, cooldown=60))
    await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))
    for i in range(20):
        with pytest.raises(Unauthorized):
            await verifier.verify(mint_token(PRIV, sub="a", kid=f"made-up-{i}"))
    assert jwks_server.fetches <= 2


async def test_jwks_keys_expire_so_a_withdrawn_key_stops_working(jwks_server: _JwksServer) -> None:
    jwks_server.keys = [_jwk(PUB, "k1")]
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, lifespan=0.2, cooldown=0))
    await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))
    jwks_server.keys = [_jwk(_pair()[1], "k2")]  # k1 withdrawn
    await asyncio.sleep(0.3)  # outlive the cached key (a clock, not a condition to wait for)
    with pytest.raises(Unauthorized):
        await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))


async def test_jwks_provider_down_is_unavailable_not_unauthorized(
    jwks_server: _JwksServer,
) -> None:
    jwks_server.up = False
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, cooldown=0, timeout=2))
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))


async def test_jwks_known_keys_serve_through_a_provider_outage(jwks_server: _JwksServer) -> None:
    """A key fetched before goes on working while the provider is down, past its lifespan; an
    unknown key id is then refused at once (503) and the provider is not asked again within
    the cooldown."""
    jwks_server.keys = [_jwk(PUB, "k1")]
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, lifespan=0.1, cooldown=60, timeout=2))
    await verifier.verify(mint_token(PRIV, sub="a", kid="k1"))
    jwks_server.up = False
    await asyncio.sleep(0.2)  # past the key's lifespan (a clock, not a condition to wait for)
    assert (await verifier.verify(mint_token(PRIV, sub="b", kid="k1"))).sub == "b"
    asked = jwks_server.requests
    assert asked >= 2  # it did try the provider again
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(mint_token(PRIV, sub="c", kid="k2"))
    assert time.monotonic() - started < 1.0
    assert jwks_server.requests == asked
