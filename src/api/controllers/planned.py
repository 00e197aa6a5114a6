"""Endpoints of the required surface whose capability has not landed yet: 501 problems.

Each keeps its place (path, method, auth) so that the surface is complete and visible in
OpenAPI; a capability replaces its entries here with a real controller.
"""

from __future__ import annotations

from typing import Any

from litestar import HttpMethod, Response, route
from litestar.handlers import HTTPRouteHandler

from api.auth import admin_only, authenticated, internal_only
from api.deps import problems
from api.errors import problem

PLANNED: list[tuple[str, str, str]] = []


def _guard_for(path: str) -> Any:
    if path.startswith("/admin/"):
        return admin_only
    if path.startswith("/internal/"):
        return internal_only
    return authenticated


def _operation_id(method: str, path: str) -> str:
    parts = [p.split(":")[0].strip("{}") for p in path.strip("/").split("/")]
    return "planned_" + method.lower() + "_" + "_".join(p.replace("-", "_") for p in parts)


def _planned_handler(method: str, path: str, summary: str) -> HTTPRouteHandler:
    def not_implemented() -> Response[Any]:
        return problem(501, "not_implemented", f"{method} {path.split(':')[0]} is planned")

    not_implemented.__name__ = _operation_id(method, path)
    return route(
        path,
        http_method=[HttpMethod(method)],
        guards=[_guard_for(path)],
        summary=summary,
        operation_id=_operation_id(method, path),
        tags=["planned"],
        status_code=501,
        responses=problems(403, 501),
        sync_to_thread=False,
    )(not_implemented)


def planned_handlers() -> list[HTTPRouteHandler]:
    """One 501 route per planned endpoint."""
    return [_planned_handler(method, path, summary) for method, path, summary in PLANNED]
