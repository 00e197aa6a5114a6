"""Shared field types and shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# Every pattern ends in `$(?!\n)`, not `$`: msgspec and Litestar test patterns with re.search,
# and Python's `$` also matches before a final "\n", so `^[a-z]+$` takes "abc\n". `$(?!\n)` is
# the end of the string both there and in ECMA-262, the dialect of the OpenAPI document (which
# has no `\Z`).
Name = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$(?!\n)")
]
OtpCode = Annotated[str, msgspec.Meta(min_length=6, max_length=8, pattern=r"^[0-9]+$(?!\n)")]
Identifier = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$(?!\n)")
]
UserId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$(?!\n)")
]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused."""


class FieldError(msgspec.Struct, kw_only=True):
    field: str | None
    message: str | None


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, with a stable machine `code`, and the members some codes add."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None  # validation_error: the offending fields
    attempts_remaining: int | None = None  # invalid_code
    retry_after: int | None = None  # locked, rate_limited: seconds, as in Retry-After
    locked_until: datetime | None = None  # locked
