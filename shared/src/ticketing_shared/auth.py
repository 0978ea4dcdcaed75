"""RS256 JWT verification and the caller's roles.

Claims: ``sub``, ``email``, ``locale``, ``roles: {tenant_id: owner|admin|member}``,
``platform_admin``, optional ``wechat_openid``, parsed by one strict model (:class:`Claims`):
``platform_admin`` counts only as JSON ``true``, role keys must be tenant ids, and anything
malformed is ``401 invalid_token``. The issuer and the audience are always verified. The key is a
PEM (``JWT_PUBLIC_KEY_FILE``) or the identity provider's JWKS document (``JWT_JWKS_URL``, keys
cached and rotated by PyJWT's ``PyJWKClient``). Anonymous calls get 401; acting on another
tenant's or buyer's resource is answered 404 by the services (existence is not leaked).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from .errors import Forbidden, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

Role = Literal["owner", "admin", "member"]
STAFF_ROLES: frozenset[str] = frozenset({"owner", "admin"})

# The issuer and audience of the local stack's and the tests' tokens (``make token``), used where
# APP_ENV is dev or test and none is configured; anywhere else both must be configured.
DEV_ISSUER = "ticketing-dev"
DEV_AUDIENCE = "ticketing"

# What a tenant id looks like wherever one comes from (a token's role keys, a URL): no ``*`` (the
# all-tenants scope), no ``,`` (the scope's separator), no whitespace, at most 64 characters.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TenantId = Annotated[str, StringConstraints(pattern=TENANT_ID_PATTERN)]
TenantIdPath = Annotated[
    str, Path(pattern=TENANT_ID_PATTERN, description="the tenant's id (as in the token's roles)")
]

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
_MAX_TOKEN_LENGTH = 8192


class Claims(BaseModel):
    """A verified token's claims, strictly typed: a string is never a boolean, and a role key
    that could widen the row-level security scope is refused, not interpreted."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    sub: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_PRINTABLE)]
    email: (
        Annotated[
            str,
            StringConstraints(
                max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
            ),
        ]
        | None
    ) = None
    locale: (
        Annotated[
            str, StringConstraints(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")
        ]
        | None
    ) = None
    # the person's display name (OpenID Connect's ``name``), as organizers see it in their lists
    name: (
        Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | None
    ) = None
    roles: Annotated[dict[TenantId, Role], Field(max_length=500)] = Field(default_factory=dict)
    platform_admin: bool = False
    wechat_openid: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None = (
        None
    )


@dataclass(frozen=True)
class Principal:
    sub: str
    email: str = ""
    locale: str = "en"
    name: str = ""
    roles: dict[str, str] = field(default_factory=dict)
    platform_admin: bool = False
    wechat_openid: str | None = None

    @classmethod
    def from_claims(cls, claims: Claims) -> Principal:
        return cls(
            sub=claims.sub,
            email=claims.email or "",
            locale=claims.locale or "en",
            name=claims.name or "",
            roles=dict(claims.roles),
            platform_admin=claims.platform_admin,
            wechat_openid=claims.wechat_openid,
        )

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


class JwksKeys:
    """The identity provider's signing keys, from its JWKS document.

    PyJWT's ``PyJWKClient`` fetches and caches the document and refetches it when a token names a
    key it does not hold (a rotation), at most once per ``cooldown`` seconds, so tokens with made-up
    key ids cannot make us hammer the provider. Its fetch blocks, so it runs in a thread, one at a
    time; keys found are kept here and looked at again after ``lifespan`` seconds (a key withdrawn
    from the document stops working then). While the provider cannot be reached, keys already
    known go on serving (a provider's outage must not lock every caller out), and for
    ``cooldown`` seconds after a failed fetch no other is tried (unknown key ids are then refused
    at once with a 503, not queued behind five-second timeouts).
    """

    def __init__(
        self, url: str, *, lifespan: float = 300.0, cooldown: float = 30.0, timeout: float = 5.0
    ) -> None:
        self._client = jwt.PyJWKClient(
            url, cache_keys=False, lifespan=lifespan, timeout=timeout, cooldown_duration=cooldown
        )
        self._lifespan = lifespan
        self._cooldown = cooldown
        self._keys: dict[str, tuple[Any, float]] = {}  # kid → (key, fresh until)
        self._failed_at = -math.inf
        self._lock = asyncio.Lock()

    async def key_for(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
        if not isinstance(kid, str) or not 0 < len(kid) <= 256:
            raise Unauthorized("invalid token: no key id (kid)", code="invalid_token")
        known = self._keys.get(kid)
        if known is not None and known[1] >= time.monotonic():
            return known[0]
        async with self._lock:
            known = self._keys.get(kid)
            if known is not None and known[1] >= time.monotonic():
                return known[0]  # fetched meanwhile
            if time.monotonic() - self._failed_at < self._cooldown:
                return self._stale_or_unavailable(known)
            try:
                jwk = await asyncio.to_thread(self._client.get_signing_key, kid)
            except jwt.PyJWKClientConnectionError:
                self._failed_at = time.monotonic()
                log.warning("auth.jwks_unreachable", extra={"kid": kid})
                return self._stale_or_unavailable(known)
            except jwt.PyJWTError as exc:  # no such key, or a document without usable keys
                self._keys.pop(kid, None)  # withdrawn
                raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
            self._keys[kid] = (jwk.key, time.monotonic() + self._lifespan)
            return jwk.key

    @staticmethod
    def _stale_or_unavailable(known: tuple[Any, float] | None) -> Any:
        if known is not None:
            return known[0]  # the provider is down: a key it published goes on serving
        raise ServiceUnavailable(
            "the identity provider's keys cannot be fetched", code="jwks_unavailable"
        )


class TokenVerifier:
    """Verifies RS256 tokens of one issuer for one audience, with a PEM key or a JWKS."""

    def __init__(
        self,
        public_key_pem: str | None = None,
        *,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        jwks: JwksKeys | None = None,
        leeway: float = 30.0,
    ) -> None:
        if (public_key_pem is None) == (jwks is None):
            raise ValueError("give the verifier a public key or a JWKS, not both")
        self._key: Any = None
        if public_key_pem is not None:
            # parse the PEM once: PyJWT would otherwise load and check the key on every request
            key = serialization.load_pem_public_key(public_key_pem.encode())
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError("the JWT verification key must be an RSA public key (RS256)")
            self._key = key
        if not issuer or not audience:
            raise ValueError("tokens are verified against an issuer and an audience")
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str) -> Principal:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise Unauthorized("invalid token: too long", code="invalid_token")
        key = self._key if self._jwks is None else await self._jwks.key_for(token)
        try:
            raw = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from exc
        try:
            claims = Claims.model_validate(raw)
        except ValidationError as exc:
            fields = sorted({".".join(map(str, e["loc"][:1])) for e in exc.errors()})
            raise Unauthorized(
                f"invalid token: malformed claims ({', '.join(fields)})", code="invalid_token"
            ) from exc
        return Principal.from_claims(claims)


# Declared as the bearer scheme of the OpenAPI documents (Swagger's "Authorize" uses it); missing
# or malformed credentials are answered by the dependencies below (401, not FastAPI's 403).
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="bearer",
    description="An RS256 JWT of the identity provider (the local stack: `make token`).",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def current_principal(request: Request, _: BearerCredentials) -> Principal:
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


async def optional_principal(request: Request, _: BearerCredentials) -> Principal | None:
    token = _bearer(request)
    if token is None:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


def mint_token(
    private_key_pem: str,
    *,
    sub: str,
    email: str = "",
    locale: str = "en",
    name: str = "",
    roles: dict[str, str] | None = None,
    platform_admin: bool = False,
    wechat_openid: str | None = None,
    ttl_seconds: int = 3600 * 12,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    kid: str | None = None,
) -> str:
    """Sign a token (the local stack's ``make token`` and the tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "locale": locale,
        "roles": roles or {},
        "platform_admin": platform_admin,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    if wechat_openid:
        claims["wechat_openid"] = wechat_openid
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key_pem, algorithm="RS256", headers=headers)
