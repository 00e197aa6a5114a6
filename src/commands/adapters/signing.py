"""The service's step-up token signer: ES256 with a key derived from the master key.

Every instance derives the same P-256 key (HKDF of the master key), so tokens verify against
one JWKS however many API processes run, and nothing private is stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from commands.adapters.keys import derive_key

_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


class Es256Signer:
    """Signs claims as ES256 JWTs and publishes the public key as a JWKS."""

    def __init__(self, master_key: bytes) -> None:
        seed = int.from_bytes(derive_key(master_key, "step-up-signing-key"), "big")
        self._key = ec.derive_private_key(seed % (_P256_ORDER - 1) + 1, ec.SECP256R1())
        public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        self.kid = _thumbprint(public)
        self._jwk = {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def signs_with(self, public_key: Any) -> bool:
        """Whether `public_key` is the one this signer's tokens verify with."""
        return bool(public_key == self._key.public_key())

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
