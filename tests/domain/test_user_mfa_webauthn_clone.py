"""A credential suspected of being cloned stays refused."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.errors import InvalidCodeError
from domain.user_mfa import UserMfa
from domain.webauthn import VerifiedRegistration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_credential_suspected_of_cloning_is_refused_even_with_a_higher_count() -> None:
    mfa = UserMfa.start("alice", uuid4(), NOW)
    mfa.start_webauthn_registration("r1", "challenge", None, NOW)
    mfa.complete_webauthn_registration(
        "r1", VerifiedRegistration(credential_id="c1", public_key="k", sign_count=10), None, NOW
    )
    with pytest.raises(InvalidCodeError):
        mfa.accept_webauthn_assertion("c1", 5, True, False, NOW)
    with pytest.raises(InvalidCodeError):
        mfa.accept_webauthn_assertion("c1", 50, True, False, NOW)
    reasons = [e.reason for e in mfa.pending_events if type(e) is UserMfa.VerificationFailed]
    assert reasons == ["sign_count_regressed", "clone_suspected"]
