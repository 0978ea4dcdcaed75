"""JWT verification: RS256 only, signed by the configured key, with well-formed roles."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ticketing_shared.auth import TokenVerifier, mint_token
from ticketing_shared.errors import Forbidden, Unauthorized


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


def test_valid_token_gives_the_principal_and_roles() -> None:
    token = mint_token(
        PRIV,
        sub="alice",
        email="a@x.test",
        locale="zh-CN",
        roles={"t1": "admin", "t2": "member"},
        wechat_openid="oX",
    )
    p = TokenVerifier(PUB).verify(token)
    assert (p.sub, p.email, p.locale, p.wechat_openid) == ("alice", "a@x.test", "zh-CN", "oX")
    assert p.is_staff_of("t1") and not p.is_staff_of("t2") and p.is_member_of("t2")
    assert not p.is_member_of("t3")
    with pytest.raises(Forbidden):
        p.require_staff("t2")


def test_platform_admin_is_staff_everywhere() -> None:
    p = TokenVerifier(PUB).verify(mint_token(PRIV, sub="root", platform_admin=True))
    assert p.is_staff_of("any-tenant")


@pytest.mark.parametrize(
    "token",
    [
        mint_token(OTHER_PRIV, sub="mallory"),  # signed by another key
        mint_token(PRIV, sub="late", ttl_seconds=-10),  # expired
        jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 60}, "s" * 64, algorithm="HS256"
        ),  # alg swap
        jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none"),
        mint_token(PRIV, sub="x", roles={"t1": "superuser"}),  # unknown role
        "not.a.jwt",
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        TokenVerifier(PUB).verify(token)


def test_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"sub": "x"}, PRIV, algorithm="RS256")
    with pytest.raises(Unauthorized):
        TokenVerifier(PUB).verify(token)
