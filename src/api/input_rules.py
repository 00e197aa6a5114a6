"""Input rules for every request, so that no route can forget them."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request
from litestar.exceptions import ValidationException

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MESSAGE = "control characters are not allowed"


async def refuse_control_characters(request: Request[Any, Any, Any]) -> None:
    """Before every handler: no control character in a path or query parameter (400).

    A coroutine, so that Litestar calls it in the event loop rather than in a worker thread.

    None is part of a valid id, name or cursor, and PostgreSQL text cannot even hold NUL: a
    lookup with one would fail in the database (500), and a stored one would stop every
    read model.
    """
    sources = (("path", request.path_params.items()), ("query", request.query_params.items()))
    for source, items in sources:
        for key, value in items:
            if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
                extra = [{"key": key, "message": MESSAGE, "source": source}]
                raise ValidationException(detail=f"{key}: {MESSAGE}", extra=extra)
