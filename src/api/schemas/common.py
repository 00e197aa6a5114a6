"""Shared field types and shapes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from domain.ids import MAX_USER_ID_LENGTH

# Every pattern ends in `$(?!\n)`, not `$`: msgspec and Litestar test patterns with re.search,
# and Python's `$` also matches before a final "\n", so `^[a-z]+$` takes "abc\n". `$(?!\n)` is
# the end of the string both there and in ECMA-262, the dialect of the OpenAPI document (which
# has no `\Z`).

# What a name shown in device lists may not hold: control characters (C0, DEL, C1), the
# zero-width space and byte-order mark, the bidi marks, overrides and isolates that can make
# "\u202egpj.exe" display as "exe.jpg", and line or paragraph separators. Joiners and other
# invisible characters (variation selectors too) may stand in a name (emoji sequences and
# several scripts need them), but not make one up: a name needs one visible character. (Of
# the invisible ones outside the BMP, such as tags, none is listed: an ECMA-262 pattern
# without the `u` flag cannot name them.) The classes before that one do not overlap it, so
# a match takes linear time.
_UNSHOWN = r"\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff"
_INVISIBLE = (
    r"\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180e\u200c\u200d\u2060-\u2064"
    r"\u2800\u3164\ufe00-\ufe0f\uffa0\ufff9-\ufffb"
)
UNSHOWN = re.compile(f"[{_UNSHOWN}]")
# Text shown to a user (a push prompt's login context): none of the above, may be empty.
SHOWN_TEXT = rf"^[^{_UNSHOWN}]*$(?!\n)"
Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=(
            rf"^(?:[^\S{_UNSHOWN}]|[{_INVISIBLE}])*[^\s{_UNSHOWN}{_INVISIBLE}][^{_UNSHOWN}]*$(?!\n)"
        ),
    ),
]
OtpCode = Annotated[str, msgspec.Meta(min_length=6, max_length=8, pattern=r"^[0-9]+$(?!\n)")]
Identifier = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$(?!\n)")
]
# A user id named in a path, query or body: no C0 control or DEL, as for a token's `sub`
# (domain.ids.has_unsafe_characters, which also refuses lone surrogates: here msgspec's
# decoder and the input rules do). C1 controls pass: ids an identity provider issued with
# them were accepted before, and their users must stay reachable (to erase, above all).
USER_ID_BOUNDS: dict[str, Any] = {
    "min_length": 1,
    "max_length": MAX_USER_ID_LENGTH,
    "pattern": r"^[^\x00-\x1f\x7f]+$(?!\n)",
}
UserId = Annotated[str, msgspec.Meta(**USER_ID_BOUNDS)]


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
