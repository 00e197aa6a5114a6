"""The only module that imports pyotp: code generation and matching for OTP devices."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import pyotp

from domain.totp import TotpDevice

_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
VALID_WINDOW = 1  # RFC 6238 §5.2: accept one step of clock drift either way


def new_totp_secret(random_bytes: bytes) -> str:
    """A base32 secret from 20 random bytes (160 bits, RFC 4226's recommendation)."""
    return base64.b32encode(random_bytes).decode().rstrip("=")


def _totp(secret: str, digits: int, period: int, algorithm: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=digits, interval=period, digest=_DIGESTS[algorithm])


def totp_timecode(device: TotpDevice, code: str, at: datetime) -> int | None:
    """The time step `code` matches for this device within ±1 step, or None."""
    if len(code) != device.digits or not code.isdigit():
        return None
    totp = _totp(device.secret, device.digits, device.period, device.algorithm)
    try:
        return int(totp.verify_and_get_timecode(code, for_time=at, valid_window=VALID_WINDOW))
    except pyotp.exceptions.OTPVerificationError:
        return None


def totp_code(device: TotpDevice, at: datetime) -> str:
    """The code a device shows at a time (for tests, the demo and benchmarks)."""
    return str(_totp(device.secret, device.digits, device.period, device.algorithm).at(at))


def provisioning_uri(device: TotpDevice, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    totp = _totp(device.secret, device.digits, device.period, device.algorithm)
    return str(totp.provisioning_uri(name=account, issuer_name=issuer))
