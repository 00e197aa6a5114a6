"""The write side end to end on SQLite: commands, the encrypted store, snapshots, races."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import pytest
from eventsourcing.application import Application, LRUCache, project_aggregate
from eventsourcing.domain import Aggregate, event

from commands import backup_codes as backup_commands
from commands import methods as method_commands
from commands import totp as totp_commands
from commands.app import (
    SNAPSHOT_INTERVAL,
    ConcurrencyConflictError,
    LockingRepository,
    Services,
    execute,
    load_user,
)
from commands.store import DamagedEventError, RedactedEvent
from commands.verifiers import totp_code
from domain.errors import (
    CodeReplayedError,
    DomainError,
    FactorLockedError,
    InvalidCodeError,
    NotEnrolledError,
    NotFoundError,
)
from domain.totp import PENDING_TOTP_TTL, TotpStatus
from domain.user_mfa import UserMfa

if TYPE_CHECKING:
    from tests.commands.conftest import Store

USER = "alice.liddell@example.org"  # '@' and '.' cannot occur inside base64 ciphertext
OTHER_USER = "bob.builder@example.org"


def state(mfa: UserMfa) -> dict[str, Any]:
    return {key: value for key, value in vars(mfa).items() if key != "_pending_events"}


def stored_types(store: Store, user_id: str) -> list[type[Any]]:
    return [type(event) for event in store.app.events.get(store.aggregate_id(user_id))]


def envelope(row: tuple[Any, ...]) -> dict[str, Any]:
    return json.loads(row[3])


# ---------------------------------------------------------------- commands round trip


def test_set_up_totp_stores_a_pending_device_and_shows_its_secret_once(store: Store):
    # When a user sets up TOTP
    outcome = totp_commands.set_up_totp(store.services, USER, "My phone")

    # Then the setup shows the secret, an otpauth URI and a QR code
    setup = outcome.value
    assert setup.device.status == TotpStatus.PENDING
    assert setup.device.name == "My phone"
    assert setup.otpauth_uri.startswith("otpauth://totp/")
    assert f"secret={setup.secret}" in setup.otpauth_uri
    assert "<svg" in setup.qr_svg
    # And the write is tracked for read-your-writes
    assert outcome.position == store.app.max_position() > 0
    assert store.services.writes is not None
    assert store.services.writes.position(USER) == outcome.position
    # And a restarted application sees the same pending device
    reloaded = store.load(USER, store.open())
    assert reloaded.totp_device(setup.device.device_id).secret == setup.secret
    assert reloaded.totp_device(setup.device.device_id).status == TotpStatus.PENDING


def test_verify_then_validate_round_trip_through_the_store(store: Store):
    # Given a device set up and verified with its first code
    setup = totp_commands.set_up_totp(store.services, USER, None).value
    verified = totp_commands.verify_totp(
        store.services, USER, totp_code(setup.device, store.clock.now()), None
    )
    assert verified.value.status == TotpStatus.ACTIVE

    # When the next time step's code is presented
    store.clock.advance(30)
    accepted = totp_commands.validate_totp(
        store.services, USER, totp_code(setup.device, store.clock.now())
    )

    # Then it is accepted and the log holds the whole story
    assert accepted.value == setup.device.device_id
    assert accepted.position > verified.position
    assert stored_types(store, USER) == [
        UserMfa.Created,
        UserMfa.TotpDeviceRegistered,
        UserMfa.TotpDeviceVerified,
        UserMfa.TotpCodeAccepted,
    ]
    # And a restarted application rebuilds exactly the same state
    assert state(store.load(USER, store.open())) == state(store.load(USER))


def test_validate_rejects_a_replayed_code_after_a_restart(store: Store):
    device = store.enrol_totp(USER)
    store.clock.advance(30)
    code = totp_code(device, store.clock.now())
    totp_commands.validate_totp(store.services, USER, code)

    with pytest.raises(CodeReplayedError):
        totp_commands.validate_totp(store.open(), USER, code)


def test_a_wrong_code_is_refused_and_its_failure_is_saved(store: Store):
    store.enrol_totp(USER)

    with pytest.raises(InvalidCodeError) as raised:
        totp_commands.validate_totp(store.services, USER, "000000")

    assert raised.value.attempts_remaining == 4
    assert stored_types(store, USER)[-1] is UserMfa.VerificationFailed
    assert store.load(USER, store.open()).lock_for("otp").failures == 1


def test_five_wrong_codes_lock_totp_across_a_restart_until_the_lock_expires(store: Store):
    # Given five wrong codes
    device = store.enrol_totp(USER)
    for _ in range(5):
        with pytest.raises(InvalidCodeError):
            totp_commands.validate_totp(store.services, USER, "000000")

    # When the right code comes to a restarted application
    store.clock.advance(10)
    restarted = store.open()
    with pytest.raises(FactorLockedError) as raised:
        totp_commands.validate_totp(restarted, USER, totp_code(device, store.clock.now()))

    # Then it is refused for the rest of the 30 s lock, and accepted after it
    assert raised.value.retry_after_s == 20
    store.clock.advance(20)
    accepted = totp_commands.validate_totp(restarted, USER, totp_code(device, store.clock.now()))
    assert accepted.value == device.device_id


def test_backup_codes_are_ten_distinct_codes_and_each_spends_once(store: Store):
    # Given a fresh set of backup codes
    generated = backup_commands.generate_backup_codes(store.services, USER).value
    assert len(set(generated.codes)) == 10
    assert generated.generated_at == store.clock.now()

    # When one is spent
    remaining = backup_commands.verify_backup_code(store.services, USER, generated.codes[0])

    # Then nine remain, and the same code cannot be spent again, even after a restart
    assert remaining.value == 9
    with pytest.raises(InvalidCodeError):
        backup_commands.verify_backup_code(store.open(), USER, generated.codes[0])
    typed = generated.codes[1].upper().replace("-", " ")
    assert backup_commands.verify_backup_code(store.open(), USER, typed).value == 8


def test_regenerating_backup_codes_revokes_the_old_set(store: Store):
    old = backup_commands.generate_backup_codes(store.services, USER).value
    new = backup_commands.generate_backup_codes(store.services, USER).value
    assert not set(old.codes) & set(new.codes)

    with pytest.raises(InvalidCodeError):
        backup_commands.verify_backup_code(store.services, USER, old.codes[0])
    assert backup_commands.verify_backup_code(store.services, USER, new.codes[0]).value == 9


def test_switching_totp_off_and_on_round_trips_through_the_store(store: Store):
    device = store.enrol_totp(USER)

    assert totp_commands.disable_totp(store.services, USER).value == [device.device_id]
    store.clock.advance(30)
    with pytest.raises(NotEnrolledError):
        totp_commands.validate_totp(store.services, USER, totp_code(device, store.clock.now()))
    assert totp_commands.enable_totp(store.open(), USER).value == [device.device_id]

    accepted = totp_commands.validate_totp(
        store.services, USER, totp_code(device, store.clock.now())
    )
    assert accepted.value == device.device_id


def test_disabling_enabling_and_revoking_a_device_round_trip_through_the_store(store: Store):
    device = store.enrol_totp(USER)

    disabled = totp_commands.disable_totp_device(store.services, USER, device.device_id)
    assert disabled.value.status == TotpStatus.DISABLED
    enabled = totp_commands.enable_totp_device(store.services, USER, device.device_id)
    assert enabled.value.status == TotpStatus.ACTIVE
    totp_commands.revoke_totp_device(store.services, USER, device.device_id)

    assert totp_commands.get_totp_devices(store.open(), USER) == []


def test_set_primary_and_remove_method_round_trip_through_the_store(store: Store):
    device = store.enrol_totp(USER)

    assert method_commands.set_primary(store.services, USER, device.device_id).value == "totp"
    assert store.load(USER, store.open()).primary_credential == device.device_id
    method_commands.remove_method(store.services, USER, "totp")

    reloaded = store.load(USER, store.open())
    assert reloaded.totp_devices == {}
    assert reloaded.primary_method is None


def test_set_up_totp_without_a_name_after_a_revocation_picks_a_free_default_name(
    store: Store,
):
    # Given "Authenticator 1" and "Authenticator 2", and the first one revoked
    first = totp_commands.set_up_totp(store.services, USER, None).value.device
    second = totp_commands.set_up_totp(store.services, USER, None).value.device
    assert (first.name, second.name) == ("Authenticator 1", "Authenticator 2")
    totp_commands.revoke_totp_device(store.services, USER, first.device_id)

    # When another device is set up without a name
    third = totp_commands.set_up_totp(store.services, USER, None).value.device

    # Then it gets a default name that is not taken (today: AlreadyEnrolledError, a 409
    # for a request that named nothing, because the default is "Authenticator {count + 1}")
    assert third.name != second.name


def test_an_expired_set_ups_default_name_is_free_for_the_next_one(store: Store) -> None:
    """The set-up removes the expired one: its name was counted as taken all the same."""
    first = totp_commands.set_up_totp(store.services, USER, None).value.device
    store.clock.advance(PENDING_TOTP_TTL.total_seconds())

    second = totp_commands.set_up_totp(store.services, USER, None).value.device

    assert second.name == first.name == "Authenticator 1"


# ---------------------------------------------------------------- unknown users


UNKNOWN_USER_COMMANDS: dict[str, Callable[[Services], Any]] = {
    "verify_totp": lambda s: totp_commands.verify_totp(s, "ghost", "123456", None),
    "validate_totp": lambda s: totp_commands.validate_totp(s, "ghost", "123456"),
    "disable_totp": lambda s: totp_commands.disable_totp(s, "ghost"),
    "enable_totp": lambda s: totp_commands.enable_totp(s, "ghost"),
    "disable_totp_device": lambda s: totp_commands.disable_totp_device(s, "ghost", "dev"),
    "revoke_totp_device": lambda s: totp_commands.revoke_totp_device(s, "ghost", "dev"),
    "verify_backup_code": lambda s: backup_commands.verify_backup_code(s, "ghost", "0000"),
    "remove_method": lambda s: method_commands.remove_method(s, "ghost", "totp"),
    "set_primary": lambda s: method_commands.set_primary(s, "ghost", "dev"),
}


@pytest.mark.parametrize("command", list(UNKNOWN_USER_COMMANDS))
def test_a_command_for_an_unknown_user_is_refused_and_writes_nothing(store: Store, command: str):
    with pytest.raises((NotEnrolledError, NotFoundError)):
        UNKNOWN_USER_COMMANDS[command](store.services)

    assert store.app.max_position() == 0
    assert store.rows() == []
    assert load_user(store.services, "ghost") is None


def test_execute_without_create_raises_the_callers_missing_error_and_writes_nothing(
    store: Store,
):
    class MissingUserError(DomainError):
        pass

    def decide(mfa: UserMfa, now: datetime) -> None:
        raise AssertionError("decide must not run for an unknown user")

    with pytest.raises(MissingUserError):
        execute(
            store.services,
            "ghost",
            decide,
            create=False,
            missing=lambda: MissingUserError("gone"),
        )

    assert store.rows() == []


def test_execute_with_create_starts_the_aggregate_of_a_new_user(store: Store):
    outcome = execute(store.services, "newcomer", lambda mfa, now: mfa.user_id)

    assert outcome.value == "newcomer"
    assert outcome.position == 1
    assert stored_types(store, "newcomer") == [UserMfa.Created]


def test_a_new_users_refused_first_call_writes_nothing_not_even_created(store: Store):
    """A new user's first call refused before anything happened (a throttled SMS enrolment,
    say) stored the user's `Created` (published as `mfa.user.created`) with no state."""

    def refuse(mfa: UserMfa, now: datetime) -> None:
        raise NotEnrolledError("refused")

    with pytest.raises(NotEnrolledError):
        execute(store.services, "newcomer", refuse)

    assert store.rows() == []
    assert load_user(store.services, "newcomer") is None


def test_a_new_users_refused_first_call_keeps_what_it_recorded(store: Store):
    """...but a refusal that recorded something (a failure that counts) is saved with it."""

    def fail(mfa: UserMfa, now: datetime) -> None:
        raise mfa.reject_webauthn_assertion(None, "malformed_response", now)

    with pytest.raises(InvalidCodeError):
        execute(store.services, "newcomer", fail)

    assert stored_types(store, "newcomer") == [UserMfa.Created, UserMfa.VerificationFailed]


# ---------------------------------------------------------------- what the store holds


def test_stored_events_hold_neither_secret_nor_backup_codes_nor_user_id(store: Store):
    # Given a user with a TOTP device, a validation, a failure and backup codes
    device = store.enrol_totp(USER)
    store.clock.advance(30)
    totp_commands.validate_totp(store.services, USER, totp_code(device, store.clock.now()))
    with pytest.raises(InvalidCodeError):
        totp_commands.validate_totp(store.services, USER, "000000")
    codes = backup_commands.generate_backup_codes(store.services, USER).value.codes
    backup_commands.verify_backup_code(store.services, USER, codes[0])

    # When the stored rows and files are read as they are
    rows = store.rows()
    raw = store.raw_files()

    # Then no secret, code or user id is readable in them
    assert len(rows) == 7
    forbidden = [device.secret, device.secret.lower(), USER, "alice"]
    forbidden += codes + [code.replace("-", "") for code in codes]
    for needle in forbidden:
        assert all(needle.encode() not in row[3] for row in rows), needle
        assert all(needle not in str(row[0]) for row in rows), needle
        assert needle.encode() not in raw, needle
    # And the rows are keyed by the keyed-hash aggregate id, not by the user id
    assert {str(row[0]).replace("-", "") for row in rows} == {store.aggregate_id(USER).hex}


def test_the_event_time_is_readable_without_the_key(store: Store):
    # Given events written at two different times
    enrolled_at = store.clock.now()
    store.enrol_totp(USER)
    store.clock.advance(42)
    failed_at = store.clock.now()
    with pytest.raises(InvalidCodeError):
        totp_commands.validate_totp(store.services, USER, "000000")

    # When the stored envelopes are read without any key
    envelopes = [envelope(row) for row in store.rows()]

    # Then each one's time is in the clear, and everything else is ciphertext
    times = [datetime.fromisoformat(e["ts"]) for e in envelopes]
    assert times == [enrolled_at, enrolled_at, enrolled_at, failed_at]
    assert all(e["k"] == str(store.aggregate_id(USER)) for e in envelopes)
    assert all(set(e) == {"v", "ts", "k", "n", "c"} for e in envelopes)


def test_after_erasure_the_events_read_as_redacted_with_their_topic_and_time(store: Store):
    # Given a user with some history
    store.enrol_totp(USER)
    aggregate = store.aggregate_id(USER)
    before = list(store.app.events.get(aggregate))

    # When the user's data key is destroyed and the store is read again
    store.vault.destroy(str(aggregate))
    after = list(store.open().app.events.get(aggregate))

    # Then every event reads as redacted, keeping its type, time and version
    assert [type(e) for e in after] == [RedactedEvent] * len(before)
    assert [e.redacted_topic for e in after] == [r[2] for r in store.rows()]
    assert [e.redacted_topic for e in after] == [
        "mfa.user.created.v1",
        "mfa.totp.device_registered.v1",
        "mfa.totp.device_verified.v1",
    ]
    assert [e.timestamp for e in after] == [e.timestamp for e in before]
    assert [e.originator_version for e in after] == [1, 2, 3]
    assert store.vault.get(str(aggregate)) is None


def test_erasing_one_user_leaves_other_users_readable(store: Store):
    store.enrol_totp(USER)
    other_device = store.enrol_totp(OTHER_USER)

    store.vault.destroy(str(store.aggregate_id(USER)))

    reloaded = store.load(OTHER_USER, store.open())
    assert reloaded.totp_device(other_device.device_id).secret == other_device.secret


def test_after_erasure_loading_the_user_reports_not_found(store: Store):
    # Given a user whose data key was destroyed (erasure)
    store.enrol_totp(USER)
    store.vault.destroy(str(store.aggregate_id(USER)))

    # When a restarted application loads the user
    # Then the user reads as never enrolled. Today the repository's projector asserts that
    # every event can mutate, and a RedactedEvent cannot: AssertionError (a 500).
    assert load_user(store.open(), USER) is None


def test_a_tampered_ciphertext_reads_as_redacted_instead_of_decrypting(
    store: Store, caplog: pytest.LogCaptureFixture
):
    # Given a user's stored events, one with a flipped ciphertext bit
    store.enrol_totp(USER)
    originator_id, version, _, state_bytes = store.rows()[1]
    tampered = envelope((None, None, None, state_bytes))
    ciphertext = bytearray(base64.b64decode(tampered["c"]))
    ciphertext[0] ^= 0x01
    tampered["c"] = base64.b64encode(bytes(ciphertext)).decode()
    store.execute_sql(
        "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (json.dumps(tampered).encode(), originator_id, version),
    )

    # When the events are read
    with caplog.at_level(logging.ERROR, logger="mfa.store"):
        events = list(store.open().app.events.get(store.aggregate_id(USER)))

    # Then the tampered one is redacted, marked damaged (its key is there: not an erasure),
    # and logged; the others decrypt
    assert [type(e) for e in events] == [UserMfa.Created, RedactedEvent, UserMfa.TotpDeviceVerified]
    assert cast(RedactedEvent, events[1]).damaged
    assert [r.getMessage() for r in caplog.records] == [
        f"event {version} of aggregate {store.aggregate_id(USER)} does not decrypt with its key: "
        "the stored row was altered or damaged, or its key lost (it reads as redacted)"
    ]


def test_a_row_whose_envelope_cannot_be_read_is_a_damaged_event_error(store: Store):
    store.enrol_totp(USER)
    originator_id, version, _, _ = store.rows()[1]
    store.execute_sql(
        "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (b"{not json", originator_id, version),
    )
    with pytest.raises(DamagedEventError, match=f"event {version} of aggregate .* cannot be read"):
        list(store.open().app.events.get(store.aggregate_id(USER)))


def test_an_erased_users_events_are_redacted_not_damaged(store: Store):
    store.enrol_totp(USER)
    store.services.app.vault.destroy(str(store.aggregate_id(USER)))
    events = list(store.open().app.events.get(store.aggregate_id(USER)))
    assert events
    assert all(type(e) is RedactedEvent and not e.damaged for e in events)


def test_a_key_that_is_gone_without_an_erasure_is_damage_not_an_erasure(store: Store):
    """Only a destroyed key (its tombstone) is an erasure. An event naming another key (its
    `k`, which the tag does not cover), or whose key row was deleted by hand or lost with a
    restored backup, read as erased before."""
    store.enrol_totp(USER)
    originator_id, version, _, state_bytes = store.rows()[1]
    renamed = envelope((None, None, None, state_bytes))
    renamed["k"] = "00000000-0000-4000-8000-000000000000"
    store.execute_sql(
        "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (json.dumps(renamed).encode(), originator_id, version),
    )
    events = list(store.open().app.events.get(store.aggregate_id(USER)))
    assert [type(e) for e in events] == [UserMfa.Created, RedactedEvent, UserMfa.TotpDeviceVerified]
    assert cast(RedactedEvent, events[1]).damaged

    with sqlite3.connect(store.db_path) as keys:  # (the data keys are beside the events)
        keys.execute("DELETE FROM mfa_data_keys")
    keys.close()
    events = list(store.open().app.events.get(store.aggregate_id(USER)))
    assert [type(e) for e in events] == [RedactedEvent] * 3
    assert all(cast(RedactedEvent, e).damaged for e in events)


def test_swapping_the_state_of_two_rows_reads_both_as_redacted(store: Store):
    # Given two events of one user whose stored states are swapped
    store.enrol_totp(USER)
    rows = store.rows()
    (oid, v2, _, s2), (_, v3, _, s3) = rows[1], rows[2]
    update = "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?"
    store.execute_sql(update, (s3, oid, v2))
    store.execute_sql(update, (s2, oid, v3))

    events = list(store.open().app.events.get(store.aggregate_id(USER)))

    # Then neither decrypts under the other's version and topic
    assert [type(e) for e in events] == [UserMfa.Created, RedactedEvent, RedactedEvent]
    assert all(cast(RedactedEvent, e).damaged for e in events[1:])


def test_swapping_events_between_users_reads_them_as_redacted(store: Store):
    # Given the same event (same version and topic) of two users, swapped between them
    execute(store.services, USER, lambda mfa, now: None)
    execute(store.services, OTHER_USER, lambda mfa, now: None)
    (a_id, _, _, a_state), (b_id, _, _, b_state) = store.rows()
    update = "UPDATE stored_events SET state = ? WHERE originator_id = ?"
    store.execute_sql(update, (b_state, a_id))
    store.execute_sql(update, (a_state, b_id))

    services = store.open()

    for user in (USER, OTHER_USER):
        events = list(services.app.events.get(store.aggregate_id(user)))
        assert [type(e) for e in events] == [RedactedEvent]


# ---------------------------------------------------------------- snapshots


def make_history(store: Store, user_id: str, events: int) -> None:
    """Enrol a device (3 events), then one accepted code per 30 s step."""
    device = store.enrol_totp(user_id)
    for _ in range(events - 3):
        store.clock.advance(30)
        totp_commands.validate_totp(store.services, user_id, totp_code(device, store.clock.now()))


def test_a_snapshot_is_taken_every_100_events(store: Store):
    # Given a user with 105 events
    make_history(store, USER, 105)

    # Then exactly one snapshot exists, at version 100, encrypted like the events
    snapshots = store.rows("stored_snapshots")
    assert SNAPSHOT_INTERVAL == 100
    assert [(row[1], row[2]) for row in snapshots] == [(100, "mfa.user_mfa.snapshot.v1")]
    assert set(envelope(snapshots[0])) == {"v", "ts", "k", "n", "c"}
    secret = store.load(USER).totp_devices
    for device in secret.values():
        assert device.secret.encode() not in snapshots[0][3]
    # And a restarted application (snapshot + 5 events) rebuilds the same state
    in_process = store.load(USER)
    reloaded = store.load(USER, store.open())
    assert reloaded.version == in_process.version == 105
    assert state(reloaded) == state(in_process)


def test_a_snapshot_whose_envelope_cannot_be_read_is_passed_over_too(
    store: Store, caplog: pytest.LogCaptureFixture
):
    make_history(store, USER, 105)
    in_process = store.load(USER)
    originator_id, version, _, _ = store.rows("stored_snapshots")[0]
    store.execute_sql(
        "UPDATE stored_snapshots SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (b"{not json", originator_id, version),
    )

    with caplog.at_level(logging.ERROR, logger="mfa.store"):
        reloaded = store.load(USER, store.open())

    assert state(reloaded) == state(in_process)
    assert [r.getMessage() for r in caplog.records] == [
        f"snapshot {version} of aggregate {store.aggregate_id(USER)} cannot be read (the stored "
        "row was altered or damaged): passed over for the events"
    ]


def test_a_damaged_snapshot_is_passed_over_for_the_events(
    store: Store, caplog: pytest.LogCaptureFixture
):
    """A snapshot that does not decrypt read as a redacted event, and the events after it
    were applied to nothing: the user could not be loaded at all (AssertionError, a 500)."""
    make_history(store, USER, 105)
    in_process = store.load(USER)
    originator_id, version, _, state_bytes = store.rows("stored_snapshots")[0]
    damaged = envelope((None, None, None, state_bytes))
    damaged["c"] = damaged["c"][:-4] + ("AAAA" if damaged["c"][-4:] != "AAAA" else "BBBB")
    store.execute_sql(
        "UPDATE stored_snapshots SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (json.dumps(damaged).encode(), originator_id, version),
    )

    with caplog.at_level(logging.ERROR, logger="mfa.store"):
        reloaded = store.load(USER, store.open())

    assert reloaded.version == 105
    assert state(reloaded) == state(in_process)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"snapshot {version} of aggregate {store.aggregate_id(USER)} does not decrypt with its key"
    ]


def test_the_snapshot_is_taken_from_the_saved_aggregate_without_reading_it_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    make_history(store, USER, 99)
    agg_id = store.aggregate_id(USER)
    device = next(iter(store.load(USER).totp_devices.values()))
    versions_read: list[int | None] = []
    get = store.app.repository.get

    def counting_get(*args: Any, **kwargs: Any) -> Any:
        versions_read.append(kwargs.get("version"))
        return get(*args, **kwargs)

    monkeypatch.setattr(store.app.repository, "get", counting_get)
    store.clock.advance(30)
    totp_commands.validate_totp(store.services, USER, totp_code(device, store.clock.now()))
    assert versions_read == [None]  # the command's own load, no reload at version 100

    [snapshot] = list(store.app.snapshots.get(agg_id, desc=True, limit=1))
    assert snapshot.originator_version == 100
    from_snapshot = project_aggregate(None, [snapshot])
    replayed = project_aggregate(None, store.app.events.get(agg_id, lte=100))
    assert from_snapshot is not None
    assert replayed is not None
    assert state(from_snapshot) == state(replayed)


def test_a_restarted_application_keeps_the_replay_rule_of_a_snapshotted_user(store: Store):
    make_history(store, USER, 101)
    device = next(iter(store.load(USER).totp_devices.values()))
    code = totp_code(device, store.clock.now())

    with pytest.raises(CodeReplayedError):
        totp_commands.validate_totp(store.open(), USER, code)


FRESH_PROCESS_LOAD = """
import sys
from commands.adapters.vault import SqlKeyVault
from commands.app import MfaApplication, Services, load_user
from infra.event_store import event_store_env
from infra.sql import SqliteDatabase

db_path, master_hex, id_key_hex, user_id = sys.argv[1:]
vault = SqlKeyVault(SqliteDatabase(db_path), bytes.fromhex(master_hex))
app = MfaApplication(event_store_env("sqlite:///" + db_path), vault)
services = Services(app=app, clock=None, random=None, id_key=bytes.fromhex(id_key_hex))
mfa = load_user(services, user_id)
print(mfa.version, len(mfa.totp_devices))
"""


def test_a_snapshotted_user_loads_in_a_freshly_started_process(store: Store):
    # Given a user whose aggregate has a snapshot
    make_history(store, USER, 101)

    # When a new process (nothing written yet, so no topic cached) loads the user
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS_LOAD,
            str(store.db_path),
            store.master_key.hex(),
            store.id_key.hex(),
            USER,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then it loads. Today: TopicError "Failed to resolve topic 'mfa.user_mfa.snapshot.v1'",
    # because the snapshot class's explicit TOPIC is only registered when one is written.
    assert result.returncode == 0, result.stderr[-600:]
    assert result.stdout.split() == ["101", "1"]


# ---------------------------------------------------------------- concurrency


ALLOWED_REFUSALS = (InvalidCodeError, FactorLockedError, ConcurrencyConflictError)


def race(threads: int, command: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run `command` from `threads` threads released at the same moment."""
    barrier = threading.Barrier(threads)

    def attempt() -> tuple[Any, BaseException | None]:
        barrier.wait()
        try:
            return command(), None
        except Exception as exc:
            return None, exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda _: attempt(), range(threads)))
    successes = [value for value, error in results if error is None]
    errors = [error for _, error in results if error is not None]
    return successes, errors


def test_twenty_concurrent_validations_of_one_code_let_exactly_one_through(store: Store):
    # Given an enrolled device and the code of the next time step
    device = store.enrol_totp(USER)
    store.clock.advance(30)
    code = totp_code(device, store.clock.now())

    # When twenty requests present that code at the same moment
    successes, errors = race(20, lambda: totp_commands.validate_totp(store.services, USER, code))

    # Then exactly one passes and every other one is refused
    assert len(successes) == 1
    assert successes[0].value == device.device_id
    assert len(errors) == 19
    assert all(isinstance(error, ALLOWED_REFUSALS) for error in errors), errors
    assert stored_types(store, USER).count(UserMfa.TotpCodeAccepted) == 1


def test_twenty_concurrent_spends_of_one_backup_code_let_exactly_one_through(store: Store):
    codes = backup_commands.generate_backup_codes(store.services, USER).value.codes

    successes, errors = race(
        20, lambda: backup_commands.verify_backup_code(store.services, USER, codes[0])
    )

    assert [outcome.value for outcome in successes] == [9]
    assert len(errors) == 19
    assert all(isinstance(error, ALLOWED_REFUSALS) for error in errors), errors
    assert stored_types(store, USER).count(UserMfa.BackupCodeUsed) == 1
    assert store.load(USER, store.open()).backup_codes.remaining() == 9  # type: ignore[union-attr]


def test_concurrent_first_commands_of_a_new_user_create_one_aggregate(store: Store):
    successes, errors = race(
        10, lambda: backup_commands.generate_backup_codes(store.services, USER)
    )

    assert errors == []
    assert len(successes) == 10
    types = stored_types(store, USER)
    assert types.count(UserMfa.Created) == 1
    assert types.count(UserMfa.BackupCodesGenerated) == 10


class Bag(Aggregate):
    """An aggregate whose dict grows with each event (as UserMfa's device maps do)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    @event("Added")
    def add(self, key: str) -> None:
        self.items[key] = {"key": key, "list": [1, 2, 3]}


def test_reading_a_cached_aggregate_while_another_thread_fast_forwards_it_never_fails(
    tmp_path: Path,
):
    """The library deep-copies a cached aggregate after releasing the lock under which it
    fast-forwards it: concurrent loads of one aggregate raised "dictionary changed size
    during iteration" (one to five times in these 3 s with the plain Repository)."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "b")}
    writer = Application[UUID](env)
    bag = Bag()
    for i in range(2000):
        bag.add(str(i))
    writer.save(bag)
    reader = LockingRepository(writer.events, cache_maxsize=10)
    stop = time.monotonic() + 3
    errors: list[BaseException] = []

    def write() -> None:
        i = 10_000
        try:
            while time.monotonic() < stop:
                grown = writer.repository.get(bag.id)
                for _ in range(50):
                    grown.add(str(i))
                    i += 1
                writer.save(grown)
        except Exception as exc:
            errors.append(exc)

    def read() -> None:
        while time.monotonic() < stop:
            try:
                reader.get(bag.id)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(4))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(reader.get(bag.id).items) == len(writer.repository.get(bag.id).items) > 2000
    writer.close()


def test_the_application_reads_through_the_locking_repository_with_the_library_settings(
    store: Store,
):
    repository = store.app.repository
    assert isinstance(repository, LockingRepository)
    assert isinstance(repository.cache, LRUCache)
    assert repository.cache.maxsize == 10_000
    assert repository.fastforward
    assert repository.deepcopy_from_cache


def test_a_users_events_keep_their_order_in_time_across_a_clock_a_little_behind(store: Store):
    """Several instances' clocks differ a little: an event stamped before the one before it
    made an auditor's "state at T" skip it (replay stops at the first later-stamped event)."""
    user = "skewed"
    backup_commands.generate_backup_codes(store.services, user)
    store.clock.advance(1.0)
    backup_commands.generate_backup_codes(store.services, user)  # instance A
    store.clock.advance(-0.2)
    backup_commands.generate_backup_codes(store.services, user)  # instance B, 0.2 s behind
    store.clock.advance(-3600)
    backup_commands.generate_backup_codes(store.services, user)  # a clock an hour wrong
    times = [e.timestamp for e in store.services.app.events.get(store.load(user).id)]
    assert times[:4] == sorted(times[:4])
    assert times[4] < times[3]  # a broken clock is not followed into every later decision


def test_config_changes_keep_their_order_in_time_across_a_clock_a_little_behind(store: Store):
    """The config audit log lists changes by version, and filters them by time: a change
    stamped before the one before it (another instance's clock a little behind, or a change
    saved between our reading the clock and loading the configuration) fell out of order."""
    from commands import config as config_commands
    from commands import erase as erase_commands
    from domain.config import CONFIG_ID, ChangedBy

    by = ChangedBy(actor="admin", request_id="req")
    backup_commands.generate_backup_codes(store.services, "reset-me")
    store.clock.advance(1.0)
    for base_score in (11, 12):
        config_commands.update_risk_policy(
            store.services, config_commands.RiskPolicyDraft(base_score=base_score), by
        )
        store.clock.advance(-0.5)  # another instance, 0.5 s behind
    erase_commands.reset_user(store.services, "reset-me", by, "lost phone")
    times = [e.timestamp for e in store.services.app.events.get(CONFIG_ID)]
    assert len(times) == 4  # created, two policies, the reset
    assert times == sorted(times)


def test_the_configuration_is_snapshotted_and_loads_from_it_as_from_its_events(store: Store):
    """Every admin reset adds an event to the configuration: without snapshots each cold load
    (and every risk evaluation after the cache let it go) replayed every reset ever made."""
    from domain.config import CONFIG_ID, ChangedBy, MfaConfig
    from domain.risk import draft_level_policy, draft_risk_policy

    by = ChangedBy(actor="admin", request_id="req")
    now = store.clock.now()
    config = MfaConfig.start(now)
    config.update_risk_policy(draft_risk_policy(base_score=7), by, now)
    config.set_level_policy("high", draft_level_policy("high", "deny", []), by, now)
    config.add_allowlist_entry(
        "e1", cidr="10.0.0.0/8", description="office", expires_at=None, by=by, at=now
    )
    store.app.save(config)
    for n in range(105):
        config = store.app.repository.get(CONFIG_ID)
        config.record_user_reset(f"aggregate-{n}", ["totp"], by, store.clock.now())
        store.app.save(config)
    assert store.app.snapshots is not None
    assert [s.originator_version for s in store.app.snapshots.get(CONFIG_ID)] == [100]

    fresh = store.open().app  # empty caches: from the snapshot and the events after it
    loaded: MfaConfig = fresh.repository.get(CONFIG_ID)
    replayed = project_aggregate(None, list(fresh.events.get(CONFIG_ID)))
    assert isinstance(replayed, MfaConfig)
    assert loaded.version == replayed.version == 109
    assert loaded.risk_policy_in_force() == replayed.risk_policy_in_force()
    assert loaded.level_policies_in_force() == replayed.level_policies_in_force()
    assert loaded.allowlist_entries() == replayed.allowlist_entries()
    assert loaded.risk_policy_updated == replayed.risk_policy_updated  # the same type, too
    assert loaded.level_policies_updated == replayed.level_policies_updated
