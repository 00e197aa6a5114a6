"""Identifiers: aggregate ids derived from user ids with a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
from uuid import UUID


def user_mfa_id(user_id: str, id_key: bytes) -> UUID:
    """The UserMfa aggregate id for a user: HMAC-SHA256 under a service key, shaped as a UUIDv8.

    Without the key the store alone cannot link an aggregate to a user id (unlike uuid5).
    """
    digest = bytearray(hmac.new(id_key, user_id.encode("utf-8"), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return UUID(bytes=bytes(digest))
