"""WebAuthn verification: py_webauthn behind commands/verifiers.py, the domain's sign-count rule,
and the step-up command, driven by a software authenticator that signs like a real one."""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commands import step_up as step_up_commands
from commands import webauthn as webauthn_commands
from commands.adapters.signing import Es256Signer
from commands.app import Services
from commands.verifiers import (
    REASON_CODES,
    RelyingParty,
    WebAuthnVerificationError,
    authentication_options,
    b64url,
    presented_credential_id,
    registration_options,
    verify_assertion,
    verify_registration,
)
from domain.errors import InvalidCodeError
from domain.user_mfa import UserMfa
from domain.webauthn import VerifiedAssertion, VerifiedRegistration, WebAuthnCredential
from tests.commands.conftest import Store
from tests.support.soft_authenticator import SoftAuthenticator, unb64url

RP = RelyingParty("localhost", "Test", ("http://localhost:8000",))
ORIGIN = "http://localhost:8000"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------- helpers


def creation_options(exclude: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """A fresh registration challenge (base64url) and its creation options."""
    challenge = os.urandom(32)
    options = registration_options(RP, os.urandom(16), "alice", challenge, exclude or [])
    return b64url(challenge), options


def request_options(credentials: list[WebAuthnCredential]) -> tuple[str, dict[str, Any]]:
    """A fresh assertion challenge (base64url) and its request options."""
    challenge = os.urandom(32)
    return b64url(challenge), authentication_options(RP, challenge, credentials)


@dataclass
class Enrolled:
    """A user aggregate (in memory) holding one credential of `authenticator`."""

    mfa: UserMfa
    authenticator: SoftAuthenticator
    credential: WebAuthnCredential
    handle: bytes  # the user handle the credential was registered under

    def assertion(self, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        challenge, options = request_options([self.credential])
        return challenge, self.authenticator.get(options, ORIGIN, **kwargs)

    def sign_in(self, at: datetime = T0, **kwargs: Any) -> WebAuthnCredential:
        """Verify an assertion and let the domain accept it."""
        challenge, response = self.assertion(**kwargs)
        verified = verify_assertion(RP, response, challenge, self.credential, self.handle)
        return self.mfa.accept_webauthn_assertion(verified, at)


def enrolled(user_id: str = "alice", **register_kwargs: Any) -> Enrolled:
    """Run a registration ceremony through the domain and the verifier."""
    mfa = UserMfa.start(user_id, uuid4(), T0)
    authenticator = SoftAuthenticator()
    challenge, options = creation_options()
    pending = mfa.start_webauthn_registration("reg-1", challenge, "key", T0)
    response = authenticator.register(options, ORIGIN, **register_kwargs)
    verified = verify_registration(RP, response, pending.challenge)
    credential = mfa.complete_webauthn_registration("reg-1", verified, None, T0)
    mfa.collect_events()
    return Enrolled(mfa, authenticator, credential, unb64url(options["user"]["id"]))


def drain(mfa: UserMfa) -> list[Any]:
    """The aggregate's new events (and forget them, as a save would)."""
    return list(mfa.collect_events())


def event_names(mfa: UserMfa) -> list[str]:
    return [type(e).__name__ for e in drain(mfa)]


def services_for(store: Store) -> Services:
    return replace(store.services, relying_party=RP, signer=Es256Signer(store.master_key))


def register_via_commands(
    services: Services, user_id: str, authenticator: SoftAuthenticator, **kwargs: Any
) -> WebAuthnCredential:
    started = webauthn_commands.start_registration(services, user_id, None).value
    response = authenticator.register(started.options, ORIGIN, **kwargs)
    return webauthn_commands.finish_registration(
        services, user_id, started.registration_id, response, None
    ).value


def step_up_via_commands(
    services: Services,
    user_id: str,
    authenticator: SoftAuthenticator,
    **kwargs: Any,
) -> step_up_commands.StepUpResult:
    issued = step_up_commands.create_challenge(services, user_id, "webauthn").value
    assert issued.options is not None
    response = authenticator.get(issued.options, ORIGIN, **kwargs)
    return step_up_commands.step_up(
        services, user_id, issued.challenge.challenge_id, None, response
    ).value


def stored_events(store: Store, user_id: str, kind: str | None = None) -> list[Any]:
    """The user's stored events (decrypted), optionally only those of one class name."""
    events = list(store.app.events.get(store.aggregate_id(user_id)))
    return [e for e in events if kind is None or type(e).__name__ == kind]


# ------------------------------------------------------------------------ the happy path


def test_a_valid_registration_and_assertion_pass() -> None:
    user = enrolled()
    credential = user.credential
    assert credential.public_key
    assert (
        unb64url(credential.credential_id)
        == user.authenticator.credentials[credential.credential_id].credential_id
    )
    assert credential.sign_count == 0
    assert credential.transports == ["usb"]
    assert credential.aaguid == "00000000-0000-0000-0000-000000000000"
    assert credential.user_verified is True
    assert credential.backup_eligible is False
    assert credential.name == "key"

    challenge, response = user.assertion()
    verified = verify_assertion(RP, response, challenge, credential, user.handle)
    assert verified.credential_id == credential.credential_id
    assert verified.sign_count == 1
    assert verified.user_verified is True
    assert verified.backed_up is False

    accepted = user.mfa.accept_webauthn_assertion(verified, T0 + timedelta(seconds=5))
    assert accepted.sign_count == 1
    assert accepted.last_used_at == T0 + timedelta(seconds=5)
    assert accepted.clone_suspected is False
    assert event_names(user.mfa) == ["WebAuthnAssertionAccepted"]


def test_the_soft_authenticator_offers_assert_and_its_get_alias() -> None:
    user = enrolled()
    challenge, options = request_options([user.credential])
    first = user.authenticator.assert_(options, ORIGIN)  # noqa: PT009 - not unittest's
    second = user.authenticator.get(options, ORIGIN)
    assert verify_assertion(RP, first, challenge, user.credential, user.handle).sign_count == 1
    assert verify_assertion(RP, second, challenge, user.credential, user.handle).sign_count == 2


def test_registration_reports_user_verification_and_backup_eligibility() -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(
        options, ORIGIN, user_verified=False, backup_eligible=True, backed_up=True
    )
    verified = verify_registration(RP, response, challenge)
    assert isinstance(verified, VerifiedRegistration)
    assert verified.user_verified is False
    assert verified.backup_eligible is True
    assert verified.backed_up is True


def test_options_carry_the_relying_party_the_challenge_and_the_credentials() -> None:
    challenge, options = creation_options(exclude=["AAEC"])
    assert options["rp"] == {"name": "Test", "id": "localhost"}
    assert options["challenge"] == challenge
    assert options["attestation"] == "none"
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert [c["id"] for c in options["excludeCredentials"]] == ["AAEC"]

    user = enrolled()
    request_challenge, request = request_options([user.credential])
    assert request["rpId"] == "localhost"
    assert request["challenge"] == request_challenge
    assert request["allowCredentials"] == [
        {"id": user.credential.credential_id, "type": "public-key", "transports": ["usb"]}
    ]


# ------------------------------------------------------------------- what must not pass


def test_a_registration_for_another_challenge_is_refused() -> None:
    _, options = creation_options()
    other_challenge, _ = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    with pytest.raises(WebAuthnVerificationError, match=r"^challenge_mismatch$"):
        verify_registration(RP, response, other_challenge)


def test_an_assertion_for_another_challenge_is_refused() -> None:
    user = enrolled()
    _, response = user.assertion()
    other_challenge, _ = request_options([user.credential])
    with pytest.raises(WebAuthnVerificationError, match=r"^challenge_mismatch$"):
        verify_assertion(RP, response, other_challenge, user.credential, user.handle)


def test_an_assertion_signed_over_a_forged_challenge_is_refused() -> None:
    user = enrolled()
    challenge, response = user.assertion(challenge=b64url(os.urandom(32)))
    with pytest.raises(WebAuthnVerificationError, match=r"^challenge_mismatch$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_a_registration_from_another_origin_is_refused() -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, "https://evil.example")
    with pytest.raises(WebAuthnVerificationError, match=r"^origin_mismatch$"):
        verify_registration(RP, response, challenge)


def test_a_credential_id_over_1023_bytes_fails_the_registration_ceremony() -> None:
    """WebAuthn L2 §7.1: a credentialId longer than 1023 bytes fails the ceremony."""
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN, credential_id=os.urandom(1024))
    with pytest.raises(WebAuthnVerificationError, match=r"^credential_id_too_long$"):
        verify_registration(RP, response, challenge)


def test_a_credential_id_of_1023_bytes_registers_and_can_be_presented() -> None:
    challenge, options = creation_options()
    raw = os.urandom(1023)
    response = SoftAuthenticator().register(options, ORIGIN, credential_id=raw)
    verified = verify_registration(RP, response, challenge)
    assert unb64url(verified.credential_id) == raw
    assert len(verified.credential_id) == 1364
    assert presented_credential_id({"rawId": verified.credential_id}) == verified.credential_id
    assert presented_credential_id({"rawId": verified.credential_id + "A"}) is None


def test_an_assertion_from_another_origin_is_refused() -> None:
    user = enrolled()
    challenge, options = request_options([user.credential])
    response = user.authenticator.get(options, "http://localhost:8001")
    with pytest.raises(WebAuthnVerificationError, match=r"^origin_mismatch$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_a_registration_for_another_rp_id_is_refused() -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN, rp_id="evil.example")
    with pytest.raises(WebAuthnVerificationError, match=r"^rp_id_mismatch$"):
        verify_registration(RP, response, challenge)


def test_an_assertion_for_another_rp_id_is_refused() -> None:
    user = enrolled()
    challenge, response = user.assertion(rp_id="example.com")
    with pytest.raises(WebAuthnVerificationError, match=r"^rp_id_mismatch$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_a_registration_without_user_presence_is_refused() -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN, user_present=False)
    with pytest.raises(WebAuthnVerificationError, match=r"^user_not_present$"):
        verify_registration(RP, response, challenge)


def test_an_assertion_without_user_presence_is_refused() -> None:
    user = enrolled()
    challenge, response = user.assertion(user_present=False)
    with pytest.raises(WebAuthnVerificationError, match=r"^user_not_present$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_an_assertion_without_user_verification_passes_but_says_so() -> None:
    user = enrolled()
    challenge, response = user.assertion(user_verified=False)
    verified = verify_assertion(RP, response, challenge, user.credential, user.handle)
    assert verified.user_verified is False


def test_a_tampered_signature_is_refused() -> None:
    user = enrolled()
    challenge, response = user.assertion()
    signature = bytearray(unb64url(response["response"]["signature"]))
    signature[-1] ^= 0x01
    response["response"]["signature"] = b64url(bytes(signature))
    with pytest.raises(WebAuthnVerificationError, match=r"^bad_signature$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_authenticator_data_changed_after_signing_is_refused() -> None:
    user = enrolled()
    challenge, response = user.assertion(user_verified=False)
    data = bytearray(unb64url(response["response"]["authenticatorData"]))
    data[32] |= 0x04  # claim user verification after the fact
    response["response"]["authenticatorData"] = b64url(bytes(data))
    with pytest.raises(WebAuthnVerificationError, match=r"^bad_signature$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_an_assertion_signed_by_another_key_is_refused() -> None:
    alice, bob = enrolled("alice"), enrolled("bob")
    challenge, options = request_options([alice.credential])
    forged = bob.authenticator.get(options, ORIGIN, credential_id=bob.credential.credential_id)
    forged["id"] = forged["rawId"] = alice.credential.credential_id
    forged["response"]["userHandle"] = b64url(alice.handle)  # (outside the signature)
    with pytest.raises(WebAuthnVerificationError, match=r"^bad_signature$"):
        verify_assertion(RP, forged, challenge, alice.credential, alice.handle)


def test_the_domain_refuses_an_unknown_credential_and_counts_a_failure() -> None:
    user = enrolled()
    with pytest.raises(InvalidCodeError) as refused:
        user.mfa.accept_webauthn_assertion(VerifiedAssertion("no-such-credential", 1), T0)
    assert refused.value.attempts_remaining == 4
    events = drain(user.mfa)
    assert [type(e).__name__ for e in events] == ["VerificationFailed"]
    assert events[0].reason == "unknown_credential"
    assert events[0].factor == "webauthn"


# ------------------------------------------------------------------------- sign counts


def test_a_regressed_sign_count_is_refused_and_recorded_as_a_suspected_clone() -> None:
    user = enrolled()
    assert user.sign_in(sign_count=5).sign_count == 5
    drain(user.mfa)

    with pytest.raises(InvalidCodeError):
        user.sign_in(sign_count=3)
    events = drain(user.mfa)
    assert [type(e).__name__ for e in events] == ["WebAuthnCloneSuspected", "VerificationFailed"]
    assert events[0].presented_sign_count == 3
    assert events[0].stored_sign_count == 5
    assert events[1].reason == "sign_count_regressed"
    assert events[1].credential_id == user.credential.credential_id
    assert user.credential.clone_suspected is True
    assert user.credential.sign_count == 5


def test_an_unchanged_non_zero_sign_count_is_a_regression() -> None:
    user = enrolled()
    user.sign_in(sign_count=7)
    with pytest.raises(InvalidCodeError):
        user.sign_in(sign_count=7)
    assert user.credential.clone_suspected is True


def test_a_sign_count_of_zero_after_a_non_zero_one_is_a_regression() -> None:
    user = enrolled()
    user.sign_in(sign_count=2)
    with pytest.raises(InvalidCodeError):
        user.sign_in(sign_count=0)
    assert user.credential.clone_suspected is True


def test_a_sign_count_that_stays_zero_forever_is_accepted_for_passkeys() -> None:
    user = enrolled(backup_eligible=True)
    for minute in range(4):
        accepted = user.sign_in(T0 + timedelta(minutes=minute), sign_count=0)
        assert accepted.sign_count == 0
    assert user.credential.clone_suspected is False
    assert event_names(user.mfa) == ["WebAuthnAssertionAccepted"] * 4


def test_a_growing_sign_count_is_accepted_each_time() -> None:
    user = enrolled()
    for expected in (1, 2, 3):
        assert user.sign_in().sign_count == expected
    assert user.credential.clone_suspected is False


# --------------------------------------------------------------- through the commands


def test_step_up_through_the_commands_accepts_a_valid_assertion(store: Store) -> None:
    services = services_for(store)
    authenticator = SoftAuthenticator()
    credential = register_via_commands(services, "alice", authenticator)
    result = step_up_via_commands(services, "alice", authenticator)
    assert result.method == "webauthn"
    assert result.credential_id == credential.credential_id
    assert result.acr == "urn:mfa:acr:phishing-resistant"
    assert store.load("alice").webauthn_credentials[credential.credential_id].sign_count == 1


def test_step_up_with_an_unknown_credential_is_refused_and_counted(store: Store) -> None:
    services = services_for(store)
    register_via_commands(services, "alice", SoftAuthenticator())
    stranger = SoftAuthenticator()
    issued = step_up_commands.create_challenge(services, "alice", "webauthn").value
    assert issued.options is not None
    _, options = creation_options()
    stranger.register(options, ORIGIN)  # a key the service never saw
    response = stranger.get(issued.options, ORIGIN, credential_id=next(iter(stranger.credentials)))
    with pytest.raises(InvalidCodeError) as refused:
        step_up_commands.step_up(services, "alice", issued.challenge.challenge_id, None, response)
    assert refused.value.attempts_remaining == 4
    failures = [
        e for e in stored_events(store, "alice") if type(e).__name__ == "VerificationFailed"
    ]
    assert [(f.factor, f.reason) for f in failures] == [("webauthn", "unknown_credential")]


def test_step_up_with_a_credential_of_another_user_is_refused(store: Store) -> None:
    services = services_for(store)
    alice_key, bob_key = SoftAuthenticator(), SoftAuthenticator()
    register_via_commands(services, "alice", alice_key)
    bob_credential = register_via_commands(services, "bob", bob_key)

    issued = step_up_commands.create_challenge(services, "alice", "webauthn").value
    assert issued.options is not None
    response = bob_key.get(issued.options, ORIGIN, credential_id=bob_credential.credential_id)
    with pytest.raises(InvalidCodeError):
        step_up_commands.step_up(services, "alice", issued.challenge.challenge_id, None, response)

    failures = [
        e for e in stored_events(store, "alice") if type(e).__name__ == "VerificationFailed"
    ]
    assert [f.reason for f in failures] == ["unknown_credential"]
    bob = store.load("bob").webauthn_credentials[bob_credential.credential_id]
    assert bob.sign_count == 0
    assert bob.last_used_at is None
    assert store.load("alice").open_challenge(issued.challenge.challenge_id, store.clock.now())


def test_step_up_with_a_regressed_sign_count_is_refused_and_the_clone_is_recorded(
    store: Store,
) -> None:
    services = services_for(store)
    authenticator = SoftAuthenticator()
    credential = register_via_commands(services, "alice", authenticator)
    step_up_via_commands(services, "alice", authenticator, sign_count=10)

    with pytest.raises(InvalidCodeError):
        step_up_via_commands(services, "alice", authenticator, sign_count=4)

    clones = stored_events(store, "alice", "WebAuthnCloneSuspected")
    assert [(c.presented_sign_count, c.stored_sign_count) for c in clones] == [(4, 10)]
    failures = stored_events(store, "alice", "VerificationFailed")
    assert [(f.factor, f.reason) for f in failures] == [("webauthn", "sign_count_regressed")]
    stored = store.load("alice", store.open()).webauthn_credentials[credential.credential_id]
    assert stored.clone_suspected is True
    assert stored.sign_count == 10


def test_a_failed_registration_consumes_its_ceremony(store: Store) -> None:
    services = services_for(store)
    started = webauthn_commands.start_registration(services, "alice", None).value
    authenticator = SoftAuthenticator()
    bad = authenticator.register(started.options, "https://evil.example")
    with pytest.raises(webauthn_commands.InvalidCredentialError):
        webauthn_commands.finish_registration(services, "alice", started.registration_id, bad, None)
    rejected = [
        e
        for e in stored_events(store, "alice")
        if type(e).__name__ == "WebAuthnRegistrationRejected"
    ]
    assert len(rejected) == 1
    assert "origin" in rejected[0].reason
    assert started.registration_id not in store.load("alice").webauthn_registrations


def test_a_registration_with_an_overlong_credential_id_is_recorded_as_rejected(
    store: Store,
) -> None:
    services = services_for(store)
    started = webauthn_commands.start_registration(services, "alice", None).value
    overlong = SoftAuthenticator().register(started.options, ORIGIN, credential_id=os.urandom(1024))
    with pytest.raises(webauthn_commands.InvalidCredentialError, match="credential_id_too_long"):
        webauthn_commands.finish_registration(
            services, "alice", started.registration_id, overlong, None
        )
    [rejected] = stored_events(store, "alice", "WebAuthnRegistrationRejected")
    assert rejected.reason == "credential_id_too_long"
    mfa = store.load("alice")
    assert mfa.webauthn_credentials == {}
    assert started.registration_id not in mfa.webauthn_registrations


# ------------------------------------------------------------------ malformed responses

Mutation = Callable[[dict[str, Any]], None]


def _delete(*path: str) -> Mutation:
    def mutate(credential: dict[str, Any]) -> None:
        target = credential
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _set(value: Any, *path: str) -> Mutation:
    def mutate(credential: dict[str, Any]) -> None:
        target = credential
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


COMMON_MUTATIONS: dict[str, Mutation] = {
    "no id": _delete("id"),
    "no rawId": _delete("rawId"),
    "no type": _delete("type"),
    "no response": _delete("response"),
    "no clientDataJSON": _delete("response", "clientDataJSON"),
    "id is a number": _set(42, "id"),
    "rawId is a list": _set([1, 2], "rawId"),
    "id differs from rawId": _set("AAAA", "id"),
    "type is not public-key": _set("password", "type"),
    "response is a string": _set("response", "response"),
    "garbage base64 rawId": _set("!!!***", "rawId"),
    "garbage base64 clientDataJSON": _set("%%%", "response", "clientDataJSON"),
    "one-character base64": _set("A", "response", "clientDataJSON"),
    "clientDataJSON is not JSON": _set(_b64(b"\xff\xfenot json"), "response", "clientDataJSON"),
    "clientDataJSON is a list": _set(_b64(b"[]"), "response", "clientDataJSON"),
    "clientDataJSON lacks fields": _set(_b64(b'{"type":"x"}'), "response", "clientDataJSON"),
    "clientDataJSON challenge is a number": _set(
        _b64(b'{"type":"webauthn.get","challenge":5,"origin":"http://localhost:8000"}'),
        "response",
        "clientDataJSON",
    ),
    "authenticatorAttachment unknown": _set("pocket", "authenticatorAttachment"),
}

REGISTRATION_MUTATIONS: dict[str, Mutation] = {
    **COMMON_MUTATIONS,
    "no attestationObject": _delete("response", "attestationObject"),
    "attestationObject not CBOR": _set(_b64(b"\xff" * 40), "response", "attestationObject"),
    "attestationObject a CBOR list": _set(_b64(b"\x81\x01"), "response", "attestationObject"),
    "attestationObject garbage base64": _set("@@@", "response", "attestationObject"),
    "attestationObject empty": _set("", "response", "attestationObject"),
}

ASSERTION_MUTATIONS: dict[str, Mutation] = {
    **COMMON_MUTATIONS,
    "no authenticatorData": _delete("response", "authenticatorData"),
    "no signature": _delete("response", "signature"),
    "authenticatorData too short": _set(_b64(b"\x00" * 36), "response", "authenticatorData"),
    "authenticatorData garbage base64": _set("~~~", "response", "authenticatorData"),
    "authenticatorData with trailing bytes": _set(
        _b64(b"\x00" * 32 + b"\x01" + b"\x00" * 4 + b"junk"), "response", "authenticatorData"
    ),
    "authenticatorData claims attested data": _set(
        _b64(b"\x00" * 32 + b"\x41" + b"\x00" * 4 + b"\x00" * 5), "response", "authenticatorData"
    ),
    "signature not DER": _set(_b64(b"\x00\x01\x02"), "response", "signature"),
    "signature empty": _set("", "response", "signature"),
    "userHandle is a number": _set(7, "response", "userHandle"),
}


@pytest.mark.parametrize("mutation", REGISTRATION_MUTATIONS.values(), ids=REGISTRATION_MUTATIONS)
def test_a_malformed_registration_response_is_refused_cleanly(mutation: Mutation) -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    broken = copy.deepcopy(response)
    mutation(broken)
    with pytest.raises(WebAuthnVerificationError) as refused:
        verify_registration(RP, broken, challenge)
    assert refused.value.reason in REASON_CODES


@pytest.mark.parametrize("mutation", ASSERTION_MUTATIONS.values(), ids=ASSERTION_MUTATIONS)
def test_a_malformed_assertion_response_is_refused_cleanly(mutation: Mutation) -> None:
    user = enrolled()
    challenge, response = user.assertion()
    broken = copy.deepcopy(response)
    mutation(broken)
    with pytest.raises(WebAuthnVerificationError) as refused:
        verify_assertion(RP, broken, challenge, user.credential, user.handle)
    assert refused.value.reason in REASON_CODES


@pytest.mark.parametrize("transports", [None, 0, 1.5, True], ids=repr)
def test_a_registration_with_non_list_transports_never_raises_anything_but_a_verification_error(
    transports: Any,
) -> None:
    """BUG (src/commands/verifiers.py, verify_registration): after py_webauthn accepts the
    response, `response.get("transports", [])` is iterated unchecked, so `null` or a number
    raises TypeError (a 500 over HTTP). py_webauthn itself ignores non-list transports."""
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    response["response"]["transports"] = transports
    try:
        verified = verify_registration(RP, response, challenge)
    except WebAuthnVerificationError:
        return
    assert verified.transports == []


def test_a_string_transports_value_is_not_split_into_characters() -> None:
    """BUG (same line): a string is iterated character by character, storing ["u", "s", "b"]."""
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    response["response"]["transports"] = "usb"
    try:
        verified = verify_registration(RP, response, challenge)
    except WebAuthnVerificationError:
        return
    assert verified.transports in ([], ["usb"])


def test_what_the_browser_sent_never_becomes_the_reason() -> None:
    """py_webauthn quotes the client's origin in its message; only a fixed code is kept, for
    problem responses and `mfa.verification.failed` alike."""
    challenge, options = creation_options()
    origin = 'https://evil.example/"\n{"forged": true}'
    response = SoftAuthenticator().register(options, origin)
    with pytest.raises(WebAuthnVerificationError) as refused:
        verify_registration(RP, response, challenge)
    assert refused.value.reason == "origin_mismatch"
    assert "evil" not in str(refused.value)


def test_a_presented_id_that_is_not_base64url_is_not_recorded() -> None:
    assert presented_credential_id({"rawId": "AbC-_9"}) == "AbC-_9"
    for made_up in ("abc\n{evil}", "a b", "ab=", "ab/c+", "", "é"):
        assert presented_credential_id({"rawId": made_up}) is None


def test_only_the_transports_webauthn_defines_are_kept_each_once() -> None:
    """`transports` is outside the signature and is stored and shown: control characters and
    7 KB strings were kept as sent."""
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    response["response"]["transports"] = ["usb\x00\x1b[31m\r\n", "x" * 7000, "nfc", "usb", "nfc"]
    assert verify_registration(RP, response, challenge).transports == ["nfc", "usb"]


def _certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attestation")])
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1))
        .not_valid_after(datetime(2040, 1, 1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    return der


def _with_an_unknown_curve(der: bytes) -> bytes:
    p256, unknown = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030109")
    return der.replace(p256, unknown)


def _with_an_unknown_version(der: bytes) -> bytes:
    v3, v8 = bytes.fromhex("a003020102"), bytes.fromhex("a003020107")
    return der.replace(v3, v8)


@pytest.mark.parametrize("spoil", [_with_an_unknown_curve, _with_an_unknown_version])
def test_an_attestation_certificate_cryptography_cannot_read_is_a_verification_error(
    spoil: Callable[[bytes], bytes],
) -> None:
    """py_webauthn reads a `packed` attestation's certificate outside its own error handling:
    a key cryptography does not know raised UnsupportedAlgorithm, an unknown X.509 version
    InvalidVersion (a plain Exception), each a 500 over HTTP that left the ceremony open."""
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    attestation = cbor2.loads(unb64url(response["response"]["attestationObject"]))
    attestation["fmt"] = "packed"
    certificate = spoil(_certificate())
    attestation["attStmt"] = {"alg": -7, "sig": b"\x30\x00", "x5c": [certificate]}
    response["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    with pytest.raises(WebAuthnVerificationError, match=r"^malformed_response$"):
        verify_registration(RP, response, challenge)


def test_a_ceremony_in_an_iframe_of_another_site_is_refused() -> None:
    """py_webauthn checks `origin` but not `crossOrigin`/`topOrigin`: a page of ours framed
    by another site passes its origin check."""
    challenge, options = creation_options()
    framed = SoftAuthenticator().register(options, ORIGIN, top_origin="https://evil.example")
    with pytest.raises(WebAuthnVerificationError, match=r"^cross_origin$"):
        verify_registration(RP, framed, challenge)
    user = enrolled()
    challenge, options = request_options([user.credential])
    framed = user.authenticator.get(options, ORIGIN, top_origin="https://evil.example")
    with pytest.raises(WebAuthnVerificationError, match=r"^cross_origin$"):
        verify_assertion(RP, framed, challenge, user.credential, user.handle)


def test_client_data_nested_thousands_deep_is_refused_not_raised() -> None:
    challenge, options = creation_options()
    response = SoftAuthenticator().register(options, ORIGIN)
    response["response"]["clientDataJSON"] = b64url(b"[" * 40_000)
    with pytest.raises(WebAuthnVerificationError):
        verify_registration(RP, response, challenge)


# ---------------------------------------------------------------------- the user handle


def test_an_assertion_returning_another_user_handle_is_refused() -> None:
    """WebAuthn L3 §7.2 step 6: a returned userHandle must be the account's."""
    user = enrolled()
    challenge, response = user.assertion()
    assert unb64url(response["response"]["userHandle"]) == user.handle
    response["response"]["userHandle"] = b64url(os.urandom(16))
    with pytest.raises(WebAuthnVerificationError, match=r"^user_handle_mismatch$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


@pytest.mark.parametrize("absent", [None, "", "missing"])
def test_an_assertion_without_a_user_handle_passes_on_its_signature(absent: str | None) -> None:
    """Authenticators of non-discoverable credentials may return no handle (null or empty)."""
    user = enrolled()
    challenge, response = user.assertion()
    if absent == "missing":
        del response["response"]["userHandle"]
    else:
        response["response"]["userHandle"] = absent
    assert verify_assertion(RP, response, challenge, user.credential, user.handle).sign_count == 1


@pytest.mark.parametrize("handle", [7, ["AAAA"], "A", "not base64!", "A" * 87, "\ud800"])
def test_a_user_handle_that_is_not_base64url_is_a_malformed_response(handle: object) -> None:
    user = enrolled()
    challenge, response = user.assertion()
    response["response"]["userHandle"] = handle
    with pytest.raises(WebAuthnVerificationError, match=r"^malformed_response$"):
        verify_assertion(RP, response, challenge, user.credential, user.handle)


def test_credentials_are_registered_under_the_users_aggregate_id_and_step_up_checks_it(
    store: Store,
) -> None:
    services = services_for(store)
    authenticator = SoftAuthenticator()
    credential = register_via_commands(services, "alice", authenticator)
    held = authenticator.credentials[credential.credential_id]
    assert held.user_handle is not None
    assert unb64url(held.user_handle) == store.aggregate_id("alice").bytes  # no user id

    held.user_handle = b64url(store.aggregate_id("bob").bytes)
    with pytest.raises(InvalidCodeError):
        step_up_via_commands(services, "alice", authenticator)
    failures = stored_events(store, "alice", "VerificationFailed")
    assert [(f.factor, f.reason) for f in failures] == [("webauthn", "user_handle_mismatch")]

    held.user_handle = b64url(store.aggregate_id("alice").bytes)
    assert step_up_via_commands(services, "alice", authenticator).method == "webauthn"
