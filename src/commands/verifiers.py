"""The only module that imports pyotp and py_webauthn: code checks and WebAuthn ceremonies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from domain.totp import TotpDevice
from domain.webauthn import (
    MAX_CREDENTIAL_ID_BYTES,
    MAX_CREDENTIAL_ID_CHARS,
    VerifiedAssertion,
    VerifiedRegistration,
    WebAuthnCredential,
)

_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
VALID_WINDOW = 1  # RFC 6238 §5.2: accept one step of clock drift either way


def new_totp_secret(random_bytes: bytes) -> str:
    """A base32 secret from 20 random bytes (160 bits, RFC 4226's recommendation)."""
    return base64.b32encode(random_bytes).decode().rstrip("=")


def _totp(secret: str, digits: int, period: int, algorithm: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=digits, interval=period, digest=_DIGESTS[algorithm])


def totp_timecode(device: TotpDevice, code: str, at: datetime) -> int | None:
    """The time step `code` matches for this device within ±1 step, or None."""
    # ASCII digits only: str.isdigit() also takes fullwidth or superscript digits, which
    # pyotp would then normalise (NFKC) to the digits they resemble and accept.
    if len(code) != device.digits or not (code.isascii() and code.isdigit()):
        return None
    totp = _totp(device.secret, device.digits, device.period, device.algorithm)
    try:
        return int(totp.verify_and_get_timecode(code, for_time=at, valid_window=VALID_WINDOW))
    except pyotp.exceptions.OTPVerificationError:
        return None


def totp_code(device: TotpDevice, at: datetime) -> str:
    """The code a device shows at a time (for tests, the demo and benchmarks)."""
    return str(_totp(device.secret, device.digits, device.period, device.algorithm).at(at))


# The account part of the URI's label is for display only; a user id may be 256 characters,
# each up to 12 once percent-encoded, which no QR code could hold.
MAX_LABEL_CHARS = 64


def provisioning_uri(
    secret: str, digits: int, period: int, algorithm: str, account: str, issuer: str
) -> str:
    """The otpauth:// URI an authenticator app scans, its account shortened for display."""
    if len(account) > MAX_LABEL_CHARS:
        account = account[: MAX_LABEL_CHARS - 1] + "\u2026"
    totp = _totp(secret, digits, period, algorithm)
    return str(totp.provisioning_uri(name=account, issuer_name=issuer))


# ---------------------------------------------------------------------------- WebAuthn


class WebAuthnVerificationError(Exception):
    """A registration or assertion response failed verification; `reason` is one of
    `REASON_CODES`, never text the browser sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    """Who we are to authenticators: RP id (a domain), display name, allowed origins."""

    rp_id: str
    name: str
    origins: tuple[str, ...]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Everything py_webauthn is given is what the browser sent, and it (and cryptography under
# it) raises more than its own exception on such input: UnsupportedAlgorithm for an
# attestation certificate with an unknown key, InvalidVersion (a plain Exception) for an
# unknown X.509 version, DuplicateExtension from a TPM attestation. A list of types missed
# one after another, each a 500 that left the ceremony open, so any exception is a refusal.
_VERIFY_ERRORS = (Exception,)
_TRANSPORTS = frozenset(AuthenticatorTransport._value2member_map_)
# A presented credential id: base64url of at most 1023 bytes.
_CREDENTIAL_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_CREDENTIAL_ID_CHARS}}}")
# A returned user handle: base64url of at most 64 bytes (WebAuthn's limit for user.id).
_USER_HANDLE = re.compile(r"[A-Za-z0-9_-]{1,86}")


def registration_options(
    rp: RelyingParty, user_handle: bytes, user_name: str, challenge: bytes, exclude: list[str]
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptionsJSON: passkeys welcome, user verification preferred."""
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_id=user_handle,
        user_name=user_name,
        challenge=challenge,
        timeout=300_000,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c)) for c in exclude],
    )
    loaded: dict[str, Any] = json.loads(options_to_json(options))
    return loaded


def _refuse_cross_origin(credential: dict[str, Any]) -> None:
    """A ceremony run in an iframe of another site (`crossOrigin`, `topOrigin` in the client
    data) is refused: the service's pages are never meant to be embedded, and py_webauthn
    does not look at either member. Client data that cannot be read is left to py_webauthn,
    which refuses it."""
    response = credential.get("response")
    raw = response.get("clientDataJSON") if isinstance(response, dict) else None
    try:
        data = json.loads(unb64url(raw)) if isinstance(raw, str) else None
    except (ValueError, RecursionError):  # (JSON nested thousands deep)
        return
    if isinstance(data, dict) and (data.get("crossOrigin") is True or "topOrigin" in data):
        raise WebAuthnVerificationError("cross_origin")


def _refuse_other_user_handle(credential: dict[str, Any], user_handle: bytes) -> None:
    """A returned `userHandle` must be the user's: a credential registered for another account
    (or another epoch of this one) is refused. Authenticators may leave it out (null or
    empty), which the signature check alone then covers."""
    response = credential.get("response")
    returned = response.get("userHandle") if isinstance(response, dict) else None
    if returned is None or returned == "":
        return
    try:
        if not isinstance(returned, str) or not _USER_HANDLE.fullmatch(returned):
            raise ValueError(returned)
        handle = unb64url(returned)
    except ValueError:  # (also a length no base64 has)
        raise WebAuthnVerificationError("malformed_response") from None
    if not hmac.compare_digest(handle, user_handle):
        raise WebAuthnVerificationError("user_handle_mismatch")


def verify_registration(
    rp: RelyingParty, credential: dict[str, Any], challenge: str
) -> VerifiedRegistration:
    """Check a RegistrationResponseJSON against the ceremony's challenge, RP id and origins;
    a credential id over 1023 bytes fails the ceremony (WebAuthn L2 §7.1)."""
    _refuse_cross_origin(credential)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=unb64url(challenge),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
        )
    except _VERIFY_ERRORS as exc:
        raise WebAuthnVerificationError(_reason(exc)) from None
    if len(verified.credential_id) > MAX_CREDENTIAL_ID_BYTES:
        raise WebAuthnVerificationError("credential_id_too_long")
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(transports, list):
        transports = []
    # Outside the signature and stored: only the values WebAuthn defines, each once.
    known = [t for t in transports if isinstance(t, str) and t in _TRANSPORTS]
    return VerifiedRegistration(
        credential_id=b64url(verified.credential_id),
        public_key=b64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=list(dict.fromkeys(known)),
        aaguid=str(verified.aaguid),
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backed_up=verified.credential_backed_up,
        user_verified=verified.user_verified,
    )


def authentication_options(
    rp: RelyingParty, challenge: bytes, credentials: list[WebAuthnCredential]
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptionsJSON for the user's credentials."""
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=300_000,
        allow_credentials=[
            PublicKeyCredentialDescriptor(
                id=unb64url(c.credential_id),
                transports=[AuthenticatorTransport(t) for t in c.transports if t in _TRANSPORTS],
            )
            for c in credentials
        ],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    loaded: dict[str, Any] = json.loads(options_to_json(options))
    return loaded


def presented_credential_id(credential: dict[str, Any]) -> str | None:
    """The credential id an AuthenticationResponseJSON claims (before verification)."""
    raw = credential.get("rawId") or credential.get("id")
    if isinstance(raw, str) and _CREDENTIAL_ID.fullmatch(raw):
        return raw
    return None  # not an id at all: nothing the browser made up is recorded


def verify_assertion(
    rp: RelyingParty,
    credential: dict[str, Any],
    challenge: str,
    stored: WebAuthnCredential,
    user_handle: bytes,
) -> VerifiedAssertion:
    """Check an AuthenticationResponseJSON: challenge, origin, RP id, UP flag, signature, and
    the user handle when the authenticator returns one (WebAuthn L3 §7.2 step 6: it must be
    the handle the credential was registered under, `user_handle`).

    The sign-count rule is the domain's (it records a suspected clone), so the library is
    given 0 as the current count here.
    """
    _refuse_cross_origin(credential)
    _refuse_other_user_handle(credential, user_handle)
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=unb64url(challenge),
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            credential_public_key=unb64url(stored.public_key),
            credential_current_sign_count=0,
            require_user_verification=False,
        )
    except _VERIFY_ERRORS as exc:
        raise WebAuthnVerificationError(_reason(exc)) from None
    return VerifiedAssertion(
        credential_id=b64url(verified.credential_id),
        sign_count=verified.new_sign_count,
        user_verified=verified.user_verified,
        backed_up=verified.credential_backed_up,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
    )


# py_webauthn's messages quote what the browser sent (its origin, the client data type, ...),
# so only a fixed code, chosen by the fixed start of the message, leaves this module: in
# problem responses and in `mfa.verification.failed` on NATS.
_REASONS = (
    ("Client data challenge was not expected", "challenge_mismatch"),
    ("Unexpected client data origin", "origin_mismatch"),
    ("Unexpected RP ID hash", "rp_id_mismatch"),
    ("User was not present", "user_not_present"),
    ("User presence was required", "user_not_present"),
    ("User verification is required", "user_not_verified"),
    ("Could not verify authentication signature", "bad_signature"),
    ("Attestation statement could not be verified", "bad_signature"),
    ("Unexpected client data type", "wrong_ceremony"),
    ("Unexpected token_binding", "token_binding_mismatch"),
)
REASON_CODES = frozenset(code for _, code in _REASONS) | {
    "credential_id_too_long",
    "cross_origin",
    "malformed_response",
    "user_handle_mismatch",
}


def _reason(exc: Exception) -> str:
    if isinstance(exc, WebAuthnException):
        message = str(exc)
        for start, code in _REASONS:
            if message.startswith(start):
                return code
    return "malformed_response"
