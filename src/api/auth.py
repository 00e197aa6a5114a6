"""Bearer JWT authentication and scope guards (API.md "Authentication")."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.utils import base64url_decode
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from api.settings import Settings, load_jwt_public_key
from domain.ids import is_user_id

ADMIN_SCOPE = "mfa:admin"
INTERNAL_SCOPE = "mfa:internal"
# Identity providers' access tokens are well under 2 KB; anything far larger is refused before
# it is decoded (base64 and JSON of a megabyte header would be work done for an attacker).
MAX_TOKEN_LENGTH = 8192
# RFC 6749 §3.3: printable ASCII except `"` and a backslash, scopes separated by spaces
SCOPE_PATTERN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_NUMERIC_DATES = ("exp", "nbf", "iat")
LEEWAY_SECONDS = 5
# The client the token was issued to: OIDC's `azp`, else RFC 9068's `client_id`.
_CLIENT_CLAIMS = ("azp", "client_id")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and scopes, and the client (app) the token was
    issued to when it names one."""

    sub: str
    scopes: frozenset[str]
    client: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


class TokenVerifier:
    """Verifies incoming bearer tokens with exactly one configured key and algorithm family.

    HS256 with the shared secret, or RS256/ES256 with a public key: never both, so that an
    attacker cannot sign with the public key as an HMAC secret (algorithm confusion), and
    `alg=none` is never in the allowed list.
    """

    def __init__(self, settings: Settings) -> None:
        self._key: Any
        if settings.jwt_public_key:
            self._key, self._algorithms = load_jwt_public_key(settings.jwt_public_key)
        elif settings.jwt_secret:
            self._key = settings.jwt_secret
            self._algorithms = ["HS256"]
        else:
            raise ValueError("either MFA_JWT_SECRET or MFA_JWT_PUBLIC_KEY must be set")
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._max_ttl = settings.jwt_max_ttl_seconds

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; NotAuthorizedException otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise NotAuthorizedException(detail="invalid or expired token")
        try:
            claims = _STRICT_JWT.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
                leeway=LEEWAY_SECONDS,
            )
            _unique_members(base64url_decode(token.partition(".")[0]))  # the header's too
        except jwt.PyJWTError as exc:
            raise NotAuthorizedException(detail="invalid or expired token") from exc
        sub = claims.get("sub")
        scope = claims.get("scope", "")
        if not isinstance(sub, str) or not sub or not isinstance(scope, str):
            raise NotAuthorizedException(detail="invalid token claims")
        # A subject becomes the user id: no control character (NUL cannot be stored in
        # PostgreSQL text; it also separates a user id from its erasure epoch) and no lone
        # surrogate (the id is hashed and stored as UTF-8).
        if not is_user_id(sub):
            raise NotAuthorizedException(detail="invalid token claims")
        for name in _NUMERIC_DATES:  # RFC 7519 NumericDate: a JSON number, not "1700000000"
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise NotAuthorizedException(detail="invalid token claims")
        if not self._short_lived(claims):
            raise NotAuthorizedException(detail="token lifetime too long")
        # RFC 6749 §3.3: scopes are separated by spaces (0x20) only, and are printable ASCII;
        # `str.split()` also splits at NBSP, U+2003, 0x1f ..., so "openid\u00a0mfa:admin", one
        # odd scope to the identity provider, would have granted mfa:admin.
        if not SCOPE_PATTERN.fullmatch(scope):
            raise NotAuthorizedException(detail="invalid token claims")
        client = next(
            (claims[name] for name in _CLIENT_CLAIMS if claims.get(name) is not None), None
        )
        # It becomes the `aud` of the step-up tokens this caller earns: a client id, or none.
        if client is not None and not (isinstance(client, str) and is_user_id(client)):
            raise NotAuthorizedException(detail="invalid token claims")
        scopes = frozenset(t for t in scope.split(" ") if t)
        return Principal(sub=sub, scopes=scopes, client=client)

    def _short_lived(self, claims: dict[str, Any]) -> bool:
        """Whether the token expires within `MFA_JWT_MAX_TTL_SECONDS` from now and, when it
        says when it was issued, from then: a token minted to last a year is refused, not
        honoured for a year after it leaks."""
        expires = claims["exp"]
        try:  # (an integer too large for a float passes PyJWT's own checks)
            if expires - time.time() > self._max_ttl + LEEWAY_SECONDS:
                return False
            return "iat" not in claims or expires - claims["iat"] <= self._max_ttl
        except OverflowError:
            return False


def _unique_members(document: bytes) -> dict[str, Any]:
    """A JSON object whose objects name each member once. RFC 7519 §4 lets a parser take the
    last of duplicate claims, as Python's json does; a proxy or library that takes the first
    would then read another subject or scope from the same signed token."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        members = dict(pairs)
        if len(members) != len(pairs):
            raise jwt.DecodeError("a member is named twice")
        return members

    try:
        parsed = json.loads(document, object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:
        raise jwt.DecodeError("not a JSON object") from exc
    if not isinstance(parsed, dict):
        raise jwt.DecodeError("not a JSON object")
    return parsed


class _StrictJwt(jwt.PyJWT):
    """PyJWT with a claims set whose members are each named once (`_decode_payload` is its
    documented override point)."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        return _unique_members(decoded["payload"])


_STRICT_JWT = _StrictJwt()


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token of an `Authorization: Bearer` header; 401 when it is missing, or when there
    are several (a proxy that authenticated the last one would disagree with us about who
    is calling)."""
    headers = connection.headers.getall("authorization", [])
    if len(headers) > 1:
        raise NotAuthorizedException(detail="more than one Authorization header")
    header = headers[0] if headers else ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(detail="missing bearer token")
    return token.strip()


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Authenticate the connection (cached on it for the request)."""
    cached = connection.scope.get("state", {}).get("principal")
    if isinstance(cached, Principal):
        return cached
    verifier: TokenVerifier = connection.app.state.verifier
    principal = verifier.verify(bearer_token(connection))
    connection.scope.setdefault("state", {})["principal"] = principal
    return principal


# Guards and the before-request hook are coroutines: Litestar runs a plain function given to
# them in a worker thread (`ensure_async_callable`), a thread hop per guard per request that
# cost more than the token check itself (bench/README.md, fifth session).


async def authenticated(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: any valid token."""
    principal_of(connection)


def _require_scope(scope: str) -> Any:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if scope not in principal_of(connection).scopes:
            raise PermissionDeniedException(detail=f"the token lacks the {scope!r} scope")

    return guard


admin_only = _require_scope(ADMIN_SCOPE)
internal_only = _require_scope(INTERNAL_SCOPE)
