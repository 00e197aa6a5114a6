"""Aggregate ids: a keyed hash of the user id, shaped as a UUIDv8."""

from __future__ import annotations

import uuid

import pytest

from domain.ids import user_mfa_id

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_the_same_user_and_key_always_give_the_same_id():
    assert user_mfa_id("user-42", KEY) == user_mfa_id("user-42", KEY)


def test_the_id_of_a_user_never_changes_between_releases():
    # A change here would orphan every stored aggregate: ids are computed, not stored.
    assert user_mfa_id("user-42", KEY) == uuid.UUID("74ea6318-fd90-8a36-b325-175cdf62f55d")


def test_different_users_get_different_ids():
    assert user_mfa_id("user-42", KEY) != user_mfa_id("user-43", KEY)


def test_a_different_key_gives_a_different_id():
    assert user_mfa_id("user-42", KEY) != user_mfa_id("user-42", OTHER_KEY)


@pytest.mark.parametrize("user_id", ["user-42", "", "ünïcødé@example.org", "x" * 500])
def test_the_id_is_a_version_8_rfc_4122_uuid(user_id: str):
    mfa_id = user_mfa_id(user_id, KEY)

    assert mfa_id.version == 8
    assert mfa_id.variant == uuid.RFC_4122
    assert uuid.UUID(str(mfa_id)) == mfa_id


@pytest.mark.parametrize(
    "namespace",
    [uuid.NAMESPACE_DNS, uuid.NAMESPACE_URL, uuid.NAMESPACE_OID, uuid.NAMESPACE_X500],
)
def test_the_id_is_not_a_uuid5_anyone_could_recompute(namespace: uuid.UUID):
    mfa_id = user_mfa_id("user-42", KEY)

    assert mfa_id != uuid.uuid5(namespace, "user-42")
    assert mfa_id != uuid.uuid5(uuid.UUID(bytes=KEY[:16]), "user-42")


def test_the_id_does_not_contain_the_user_id():
    user_id = "deadbeefcafe"

    assert user_id not in user_mfa_id(user_id, KEY).hex
