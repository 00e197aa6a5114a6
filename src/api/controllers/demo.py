"""A small page that shows the flows working: dev session, TOTP enrolment, passkey, step-up.

Sessions can be minted only while the service runs with generated development secrets.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated

import jwt
import msgspec
from litestar import Controller, MediaType, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.deps import Runtime
from api.schemas.common import Request, UserId
from domain.errors import NotFoundError

PAGE = (Path(__file__).parent.parent / "static" / "demo.html").read_text()
SESSION_TTL_SECONDS = 3600


class DemoSessionRequest(Request):
    user: UserId


class DemoSessionResponse(msgspec.Struct, kw_only=True):
    token: str
    user: str


class DemoController(Controller):
    """`/demo` (page) and `/demo/session` (development tokens)."""

    path = "/demo"
    include_in_schema = False

    @get("/", sync_to_thread=False, media_type=MediaType.HTML)
    def page(self) -> Response[str]:
        nonce = secrets.token_urlsafe(16)
        csp = (
            "default-src 'self'; "
            f"script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "base-uri 'none'; frame-ancestors 'none'"
        )
        return Response(
            PAGE.replace("{{NONCE}}", nonce),
            media_type=MediaType.HTML,
            headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"},
        )

    @post("/session", status_code=201, sync_to_thread=False)
    def session(
        self, data: Annotated[DemoSessionRequest, JSONBody], runtime: NamedDependency[Runtime]
    ) -> DemoSessionResponse:
        """A user token for the demo; refused unless the service runs with development secrets."""
        settings = runtime.settings
        if not settings.development_secrets or not settings.jwt_secret:
            raise NotFoundError("demo sessions exist only with development secrets")
        now = int(time.time())
        ttl = min(SESSION_TTL_SECONDS, settings.jwt_max_ttl_seconds)  # else refused as a bearer
        claims = {"sub": data.user, "iat": now, "exp": now + ttl}
        if settings.jwt_issuer:
            claims["iss"] = settings.jwt_issuer
        if settings.jwt_audience:
            claims["aud"] = settings.jwt_audience
        token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
        return DemoSessionResponse(token=token, user=data.user)
