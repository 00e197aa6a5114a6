"""A software WebAuthn authenticator: what a browser plus a security key would send.

ES256 (P-256) credentials, `none` attestation, real signatures, so the service's
py_webauthn checks run unchanged. Every knob a test needs to produce a bad response is a
keyword argument (user presence, user verification, RP id, challenge, sign count, ...).

    authenticator = SoftAuthenticator()
    credential = authenticator.register(creation_options, "http://localhost:8000")
    assertion = authenticator.assert_(request_options, "http://localhost:8000")
    assertion = authenticator.get(request_options, "http://localhost:8000")  # the same
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40

COSE_EC2_ES256_P256 = {1: 2, 3: -7, -1: 1}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_public_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The COSE_Key of a P-256 key: {kty: EC2, alg: ES256, crv: P-256, x, y}."""
    numbers = public_key.public_numbers()
    key = {
        **COSE_EC2_ES256_P256,
        -2: numbers.x.to_bytes(32, "big"),
        -3: numbers.y.to_bytes(32, "big"),
    }
    return bytes(cbor2.dumps(key))


def flags_byte(
    *,
    user_present: bool,
    user_verified: bool,
    backup_eligible: bool = False,
    backed_up: bool = False,
    attested: bool = False,
) -> int:
    return (
        (FLAG_UP if user_present else 0)
        | (FLAG_UV if user_verified else 0)
        | (FLAG_BE if backup_eligible else 0)
        | (FLAG_BS if backed_up else 0)
        | (FLAG_AT if attested else 0)
    )


def client_data(kind: str, challenge: str, origin: str, top_origin: str | None = None) -> bytes:
    """CollectedClientData as a browser serialises it (`top_origin`: as in an iframe of
    another site, which makes it cross-origin)."""
    data: dict[str, Any] = {
        "type": kind,
        "challenge": challenge,
        "origin": origin,
        "crossOrigin": top_origin is not None,
    }
    if top_origin is not None:
        data["topOrigin"] = top_origin
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class SoftCredential:
    """One key pair the authenticator holds, and what it remembers about it."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: str | None
    sign_count: int
    backup_eligible: bool
    backed_up: bool

    @property
    def id(self) -> str:
        return b64url(self.credential_id)


class SoftAuthenticator:
    """An authenticator holding any number of credentials (keyed by base64url id)."""

    def __init__(
        self,
        *,
        aaguid: bytes = bytes(16),
        transports: tuple[str, ...] = ("usb",),
        attachment: str = "cross-platform",
    ) -> None:
        self.aaguid = aaguid
        self.transports = list(transports)
        self.attachment = attachment
        self.credentials: dict[str, SoftCredential] = {}

    def register(
        self,
        options_json: dict[str, Any],
        origin: str,
        *,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool = True,
        backup_eligible: bool = False,
        backed_up: bool = False,
        sign_count: int = 0,
        credential_id: bytes | None = None,
        challenge: str | None = None,
        top_origin: str | None = None,
    ) -> dict[str, Any]:
        """A RegistrationResponseJSON for PublicKeyCredentialCreationOptionsJSON.

        `credential_id` reuses an id (and, if held, its key) to register the same credential
        again; `challenge` overrides the one in the options.
        """
        rp_id = rp_id or options_json["rp"]["id"]
        raw_id = credential_id if credential_id is not None else os.urandom(32)
        held = self.credentials.get(b64url(raw_id))
        private_key = held.private_key if held else ec.generate_private_key(ec.SECP256R1())
        credential = SoftCredential(
            credential_id=raw_id,
            private_key=private_key,
            rp_id=rp_id,
            user_handle=(options_json.get("user") or {}).get("id"),
            sign_count=sign_count,
            backup_eligible=backup_eligible,
            backed_up=backed_up,
        )
        self.credentials[credential.id] = credential

        flags = flags_byte(
            user_present=user_present,
            user_verified=user_verified,
            backup_eligible=backup_eligible,
            backed_up=backed_up,
            attested=True,
        )
        attested_credential_data = (
            self.aaguid
            + len(raw_id).to_bytes(2, "big")
            + raw_id
            + cose_public_key(private_key.public_key())
        )
        authenticator_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + sign_count.to_bytes(4, "big")
            + attested_credential_data
        )
        attestation_object = cbor2.dumps(
            {"fmt": "none", "attStmt": {}, "authData": authenticator_data}
        )
        client_data_json = client_data(
            "webauthn.create", challenge or options_json["challenge"], origin, top_origin
        )
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data_json),
                "attestationObject": b64url(attestation_object),
                "transports": list(self.transports),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": self.attachment,
        }

    def assert_(
        self,
        options_json: dict[str, Any],
        origin: str,
        *,
        credential_id: str | None = None,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool = True,
        sign_count: int | None = None,
        challenge: str | None = None,
        top_origin: str | None = None,
    ) -> dict[str, Any]:
        """An AuthenticationResponseJSON for PublicKeyCredentialRequestOptionsJSON.

        Without `sign_count` the credential's counter goes up by one (and is remembered);
        with it, exactly that count is signed and the counter is left alone.
        """
        credential = self._pick(options_json, credential_id)
        rp_id = rp_id or options_json.get("rpId") or credential.rp_id
        if sign_count is None:
            credential.sign_count += 1
            count = credential.sign_count
        else:
            count = sign_count
        flags = flags_byte(
            user_present=user_present,
            user_verified=user_verified,
            backup_eligible=credential.backup_eligible,
            backed_up=credential.backed_up,
        )
        authenticator_data = (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + count.to_bytes(4, "big")
        )
        client_data_json = client_data(
            "webauthn.get", challenge or options_json["challenge"], origin, top_origin
        )
        signature = credential.private_key.sign(
            authenticator_data + hashlib.sha256(client_data_json).digest(),
            ec.ECDSA(hashes.SHA256()),
        )
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data_json),
            "authenticatorData": b64url(authenticator_data),
            "signature": b64url(signature),
        }
        if credential.user_handle:
            response["userHandle"] = credential.user_handle
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
            "authenticatorAttachment": self.attachment,
        }

    # `navigator.credentials.get()`: the same as `assert_`, under a name that ruff's PT009
    # (unittest-style `assert_`) does not flag at call sites.
    get = assert_

    def _pick(self, options_json: dict[str, Any], credential_id: str | None) -> SoftCredential:
        if credential_id is not None:
            return self.credentials[credential_id]
        allowed = [c.get("id") for c in options_json.get("allowCredentials") or []]
        for candidate in allowed:
            if candidate in self.credentials:
                return self.credentials[candidate]
        if allowed:
            raise LookupError("this authenticator holds none of the allowed credentials")
        if not self.credentials:
            raise LookupError("this authenticator holds no credential")
        return next(iter(self.credentials.values()))
