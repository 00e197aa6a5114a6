"""The OpenAPI document, completed with what every route shares and Litestar leaves out.

Litestar documents what each handler declares. These responses come from the app as a whole,
so they are added here, after the document is built, and only where they can happen:

- 413 (body over the app's size limit) and 415 (a body that is not JSON) on every operation
  that takes a body, and on every DELETE (the input hook reads a DELETE's body to refuse
  one the route would ignore);
- 404 on every operation with a path parameter: `apply_input_rules` refuses an encoded `/`
  in a path (`%2F`) before routing, whatever the parameter admits;
- 400 on every operation: a control character in any query parameter, even one the route
  does not read, is refused;
- 405 on an operation whose last path parameter can equal a literal sibling segment
  (`/mfa/trusted-devices/check` is the `check` route, not the device `check`);
- `Retry-After` on 429 and on the problem 503;
- request bodies described by msgspec itself, which decodes them: Litestar's schemas drop a
  bound of 0 (`ge=0`), the bounds of nested values, and `additionalProperties: false` of
  structs that forbid unknown fields; what the document calls valid must be accepted.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any, Union, cast, get_args, get_origin

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    Operation,
    PathItem,
    Schema,
)
from litestar.openapi.spec.base import BaseSchemaObject
from litestar.openapi.spec.enums import OpenAPIType

from api.deps import DESCRIPTIONS

_BODY_METHODS = ("post", "put", "patch")
_METHODS = ("get", "put", "post", "delete", "patch")
_PARAMETER = re.compile(r"\{[^}]+\}")
_REF_TEMPLATE = "#/components/schemas/{name}"


def complete_document(app: Litestar) -> None:
    """Add the shared responses and exact request schemas to `app.openapi_schema`."""
    schema = app.openapi_schema
    paths = schema.paths or {}
    problem = _problem_content(paths)
    literals = {path.rsplit("/", 1)[0] for path in paths if not _ends_in_parameter(path)}
    for path, item in paths.items():
        for method, operation in _operations(item):
            responses = operation.responses if operation.responses is not None else {}
            operation.responses = responses
            statuses = [400]
            # Every DELETE reads its body too (`api.input_rules.refuse_unread_body`).
            if method == "delete" or (method in _BODY_METHODS and operation.request_body):
                statuses += [413, 415]
            if _PARAMETER.search(path):
                statuses.append(404)
            if _ends_in_parameter(path) and path.rsplit("/", 1)[0] in literals:
                statuses.append(405)
            for status in statuses:
                responses.setdefault(
                    str(status), OpenAPIResponse(description=DESCRIPTIONS[status], content=problem)
                )
            for limited in ("429", "503"):
                response = responses.get(limited)
                if isinstance(response, OpenAPIResponse) and response.content == problem:
                    response.headers = {**(response.headers or {}), "Retry-After": _RETRY_AFTER}
    _exact_request_schemas(app, schema)


_RETRY_AFTER = OpenAPIHeader(
    description="Seconds until a new attempt can succeed",
    required=True,
    schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
)


def _operations(item: PathItem) -> list[tuple[str, Operation]]:
    found = [(method, getattr(item, method)) for method in _METHODS]
    return [(method, operation) for method, operation in found if operation is not None]


def _ends_in_parameter(path: str) -> bool:
    return bool(_PARAMETER.fullmatch(path.rsplit("/", 1)[1]))


def _problem_content(paths: dict[str, PathItem]) -> Any:
    """The content of the problem responses (`problems()` gives every route a 400)."""
    for item in paths.values():
        for _, operation in _operations(item):
            response = (operation.responses or {}).get("400")
            if isinstance(response, OpenAPIResponse) and response.content:
                return response.content
    raise LookupError("no route documents a problem response")


def _exact_request_schemas(app: Litestar, schema: OpenAPI) -> None:
    """Replace each request body's component schema, and those it refers to, by msgspec's."""
    bodies: list[type[msgspec.Struct]] = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            field = handler.parsed_data_field
            if field is not None:
                bodies += [t for t in _struct_types(field.annotation) if t not in bodies]
    if not bodies or schema.components is None:
        return
    _, components = msgspec.json.schema_components(bodies, ref_template=_REF_TEMPLATE)
    documented = schema.components.schemas or {}
    for name, exact in components.items():
        if name in documented:
            documented[name] = cast(Schema, _JsonSchema(exact))


def _struct_types(annotation: Any) -> list[type[msgspec.Struct]]:
    """The structs a body annotation names (`X`, `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _struct_types(arg)]
    return []


@dataclass
class _JsonSchema(BaseSchemaObject):
    """A schema written as msgspec gave it (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""

    value: dict[str, Any]

    def to_schema(self) -> dict[str, Any]:
        return self.value
