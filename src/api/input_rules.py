"""Input rules for every request, so that no route can forget them."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import NotFoundException, SerializationException, ValidationException
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

from domain.ids import has_unsafe_characters

MESSAGE = "control characters and lone surrogates are not allowed"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def apply_input_rules(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Before every handler: the path names its target exactly (404 otherwise), and no path or
    query parameter holds a control character or a lone surrogate (400). OPTIONS is answered
    here, with every method of the path.

    A coroutine, so that Litestar calls it in the event loop rather than in a worker thread.
    """
    refuse_inexact_paths(request)
    refuse_control_characters(request)
    if request.method == "OPTIONS":
        return options(request)
    if request.method == "DELETE":
        await refuse_unread_body(request)
    return None


async def refuse_unread_body(request: Request[Any, Any, Any]) -> None:
    """A DELETE that takes no body refuses one with members (400; 415 if it is not JSON): the
    handler would not read it, and `DELETE /mfa/trusted-devices {"device_id": ...}` revoked
    every device instead of the one named. An empty body, `{}` and `null` pass."""
    if request.route_handler.parsed_data_field is not None or not await request.body():
        return
    try:
        value = await request.json()  # (415 for a form or text body)
    except SerializationException:  # broken JSON: in a hook, not turned into a 400 for us
        extra = [{"key": "data", "message": "not valid JSON", "source": "body"}]
        raise ValidationException(detail="data: not valid JSON", extra=extra) from None
    if value not in ({}, None):
        names = sorted(value) if isinstance(value, dict) else []
        key = names[0] if names else "data"
        message = "this operation takes no body; name the target in the path"
        extra = [{"key": key, "message": message, "source": "body"}]
        raise ValidationException(detail=f"{key}: {message}", extra=extra)


def options(request: Request[Any, Any, Any]) -> Response[None]:
    """204 with `Allow`: Litestar's own OPTIONS answer lists the methods of the first handler
    registered for a path, not of all of them (POST missing on `/mfa/totp/devices`)."""
    allowed: dict[str, str] | None = request.app.state.get("allowed_methods")
    if allowed is None:
        allowed = {
            route.path_format: ", ".join(sorted(route.methods))
            for route in request.app.routes
            if isinstance(route, HTTPRoute)
        }
        request.app.state.allowed_methods = allowed
    allow = allowed.get(request.scope.get("path_template", ""), "OPTIONS")
    return Response(content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow})


def refuse_inexact_paths(request: Request[Any, Any, Any]) -> None:
    """An encoded slash or an empty segment in the path is a 404, and so is a trailing slash on
    a request that changes something.

    The server decodes `%2F` before routing and the router drops empty segments, so
    `DELETE /mfa/trusted-devices/%2F` (an id that is only a slash) or
    `DELETE /mfa/trusted-devices/` (an empty id) would otherwise reach the collection's
    `DELETE /mfa/trusted-devices`, which revokes every device.
    """
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.partition(b"?")[0]
    inexact = b"%2f" in path.lower() or b"//" in path
    if path != b"/" and path.endswith(b"/") and request.method not in SAFE_METHODS:
        inexact = True
    if inexact:
        raise NotFoundException(detail="no such resource")


def refuse_control_characters(request: Request[Any, Any, Any]) -> None:
    """No control character in a path or query parameter (400).

    None is part of a valid id, name or cursor, and PostgreSQL text cannot even hold NUL: a
    lookup with one would fail in the database (500), and a stored one would stop every
    read model. Nor is a lone surrogate, which cannot be encoded for the database at all.
    """
    sources = (("path", request.path_params.items()), ("query", request.query_params.items()))
    for source, items in sources:
        for key, value in items:
            if isinstance(value, str) and has_unsafe_characters(value):
                extra = [{"key": key, "message": MESSAGE, "source": source}]
                raise ValidationException(detail=f"{key}: {MESSAGE}", extra=extra)
