"""Identifiers: aggregate ids derived from user ids with a keyed hash, and the characters no
identifier (or any other text taken from a caller) may hold."""

from __future__ import annotations

import hashlib
import hmac
import re
from uuid import UUID

# Control characters (NUL above all, which PostgreSQL text cannot hold) and lone UTF-16
# surrogates (which Python's json module and PyJWT decode from "\ud800" escapes, and which
# cannot be encoded as UTF-8 for the database or a hash): text with one was made to break
# something.
_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


MAX_USER_ID_LENGTH = 256


def has_unsafe_characters(text: str) -> bool:
    """Whether `text` holds a control character or a lone surrogate."""
    return _UNSAFE.search(text) is not None


def is_user_id(text: str) -> bool:
    """Whether `text` can be a user id (a token's `sub`): 1 to 256 characters, none unsafe."""
    return 0 < len(text) <= MAX_USER_ID_LENGTH and not has_unsafe_characters(text)


def user_mfa_id(user_id: str, id_key: bytes) -> UUID:
    """The UserMfa aggregate id for a user: HMAC-SHA256 under a service key, shaped as a UUIDv8.

    Without the key the store alone cannot link an aggregate to a user id (unlike uuid5).
    """
    digest = bytearray(hmac.new(id_key, user_id.encode("utf-8"), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return UUID(bytes=bytes(digest))
