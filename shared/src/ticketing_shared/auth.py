"""RS256 JWT verification and the caller's roles.

Claims: ``sub``, ``email``, ``locale``, ``roles: {tenant_id: owner|admin|member}``,
``platform_admin``, optional ``wechat_openid``. Anonymous calls get 401; acting on another
tenant's or buyer's resource is answered 404 by the services (existence is not leaked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, Request

from .errors import Forbidden, Unauthorized

Role = Literal["owner", "admin", "member"]
STAFF_ROLES: frozenset[str] = frozenset({"owner", "admin"})


@dataclass(frozen=True)
class Principal:
    sub: str
    email: str = ""
    locale: str = "en"
    roles: dict[str, str] = field(default_factory=dict)
    platform_admin: bool = False
    wechat_openid: str | None = None

    def role_in(self, tenant_id: str) -> str | None:
        return self.roles.get(str(tenant_id))

    def is_staff_of(self, tenant_id: str) -> bool:
        """Owner or admin of the tenant, or a platform admin."""
        return self.platform_admin or self.role_in(tenant_id) in STAFF_ROLES

    def is_member_of(self, tenant_id: str) -> bool:
        return self.platform_admin or self.role_in(tenant_id) is not None

    def require_staff(self, tenant_id: str) -> None:
        """403 for a member of the tenant; callers check membership first (404 otherwise)."""
        if not self.is_staff_of(tenant_id):
            raise Forbidden("tenant owner or admin role required", code="forbidden")

    def tenant_scope(self) -> str | list[str]:
        """The row-level security scope of this caller's staff transactions: every tenant they
        hold a role in, or all (``"*"``, ``db.ALL_TENANTS``) for a platform admin. Someone with no
        role sees no tenant's rows."""
        return "*" if self.platform_admin else list(self.roles)


class TokenVerifier:
    def __init__(
        self, public_key_pem: str, *, issuer: str | None = None, audience: str | None = None
    ) -> None:
        # parse the PEM once: PyJWT would otherwise load and check the key on every request
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the JWT verification key must be an RSA public key (RS256)")
        self._key = key
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Principal:
        options: Any = {
            "require": ["sub", "exp"],
            "verify_aud": self._audience is not None,
        }
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["RS256"],
                issuer=self._issuer,
                audience=self._audience,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
        roles = claims.get("roles") or {}
        if not isinstance(roles, dict) or any(
            r not in ("owner", "admin", "member") for r in roles.values()
        ):
            raise Unauthorized("invalid roles claim", code="invalid_token")
        return Principal(
            sub=str(claims["sub"]),
            email=str(claims.get("email") or ""),
            locale=str(claims.get("locale") or "en"),
            roles={str(k): str(v) for k, v in roles.items()},
            platform_admin=bool(claims.get("platform_admin", False)),
            wechat_openid=claims.get("wechat_openid"),
        )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


async def current_principal(request: Request) -> Principal:
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token")
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(token)


async def optional_principal(request: Request) -> Principal | None:
    token = _bearer(request)
    if token is None:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(token)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def mint_token(
    private_key_pem: str,
    *,
    sub: str,
    email: str = "",
    locale: str = "en",
    roles: dict[str, str] | None = None,
    platform_admin: bool = False,
    wechat_openid: str | None = None,
    ttl_seconds: int = 3600 * 12,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """Sign a token (the local stack's ``make token`` and the tests)."""
    import time

    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "email": email,
        "locale": locale,
        "roles": roles or {},
        "platform_admin": platform_admin,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if wechat_openid:
        claims["wechat_openid"] = wechat_openid
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, private_key_pem, algorithm="RS256")
