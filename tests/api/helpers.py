"""Helpers for API tests: compute codes the way an authenticator app would."""

from __future__ import annotations

from datetime import datetime

import pyotp


def code_at(secret: str, at: datetime, steps: int = 0) -> str:
    """The 6-digit code an app shows `steps` periods after `at`."""
    return str(pyotp.TOTP(secret).at(at, counter_offset=steps))


def wrong_code(secret: str, at: datetime) -> str:
    """A 6-digit code that matches none of the accepted steps around `at`."""
    valid = {code_at(secret, at, s) for s in (-1, 0, 1)}
    candidate = 0
    while f"{candidate:06d}" in valid:
        candidate += 1
    return f"{candidate:06d}"
