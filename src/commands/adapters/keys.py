"""Keys derived from the master key (HKDF), each for one purpose."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (e.g. `aggregate-id`), independent of the others."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master_key
    )
