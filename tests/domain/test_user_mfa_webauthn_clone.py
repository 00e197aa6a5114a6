"""A credential suspected of being cloned stays refused."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.errors import InvalidCodeError
from domain.user_mfa import UserMfa
from domain.webauthn import VerifiedAssertion, VerifiedRegistration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_credential_suspected_of_cloning_is_refused_even_with_a_higher_count() -> None:
    mfa = UserMfa.start("alice", uuid4(), NOW)
    mfa.start_webauthn_registration("r1", "challenge", None, NOW)
    mfa.complete_webauthn_registration(
        "r1", VerifiedRegistration(credential_id="c1", public_key="k", sign_count=10), None, NOW
    )
    with pytest.raises(InvalidCodeError):
        mfa.accept_webauthn_assertion(VerifiedAssertion("c1", 5), NOW)
    with pytest.raises(InvalidCodeError):
        mfa.accept_webauthn_assertion(VerifiedAssertion("c1", 50), NOW)
    reasons = [e.reason for e in mfa.pending_events if type(e) is UserMfa.VerificationFailed]
    assert reasons == ["sign_count_regressed", "clone_suspected"]


@pytest.mark.parametrize("eligible_at_registration", [False, True])
def test_an_assertion_whose_backup_eligibility_changed_is_refused(
    eligible_at_registration: bool,
) -> None:
    """BE is fixed when a credential is created (WebAuthn L3 6.1.3): a flipped one would store
    an impossible backup state (backed up but not eligible) and change the `amr` key type."""
    mfa = UserMfa.start("alice", uuid4(), NOW)
    mfa.start_webauthn_registration("r1", "challenge", None, NOW)
    registered = VerifiedRegistration(
        credential_id="c1", public_key="k", sign_count=0, backup_eligible=eligible_at_registration
    )
    mfa.complete_webauthn_registration("r1", registered, None, NOW)
    flipped = not eligible_at_registration
    with pytest.raises(InvalidCodeError):
        mfa.accept_webauthn_assertion(
            VerifiedAssertion("c1", 0, backed_up=flipped, backup_eligible=flipped), NOW
        )
    reasons = [e.reason for e in mfa.pending_events if type(e) is UserMfa.VerificationFailed]
    assert reasons == ["backup_eligibility_changed"]
    same = VerifiedAssertion("c1", 0, backup_eligible=eligible_at_registration)
    assert mfa.accept_webauthn_assertion(same, NOW).backup_eligible is eligible_at_registration
