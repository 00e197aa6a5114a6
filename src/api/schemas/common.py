"""Shared field types and shapes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import msgspec

# Every pattern ends in `$(?!\n)`, not `$`: msgspec and Litestar test patterns with re.search,
# and Python's `$` also matches before a final "\n", so `^[a-z]+$` takes "abc\n". `$(?!\n)` is
# the end of the string both there and in ECMA-262, the dialect of the OpenAPI document (which
# has no `\Z`).

# What a name shown in device lists may not hold: control characters (C0, DEL, C1), the
# zero-width space and byte-order mark, the bidi marks, overrides and isolates that can make
# "\u202egpj.exe" display as "exe.jpg", and line or paragraph separators. Joiners stay
# (emoji sequences and several scripts need them). A name needs one visible character; the
# two classes at its start do not overlap, so a match takes linear time.
_UNSHOWN = r"\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff"
UNSHOWN = re.compile(f"[{_UNSHOWN}]")
# Text shown to a user (a push prompt's login context): none of the above, may be empty.
SHOWN_TEXT = rf"^[^{_UNSHOWN}]*$(?!\n)"
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=rf"^[^\S{_UNSHOWN}]*[^\s{_UNSHOWN}][^{_UNSHOWN}]*$(?!\n)",
    ),
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
