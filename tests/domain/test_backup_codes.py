"""Backup codes: 64-bit codes, forgiving input, salted hashes, one use each."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from domain.backup_codes import (
    BACKUP_CODE_BYTES,
    BACKUP_CODE_COUNT,
    BackupCode,
    BackupCodeSet,
    format_backup_code,
    hash_backup_code,
    normalise_backup_code,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RAW = bytes.fromhex("0123456789abcdef")
SALT = bytes(range(16)).hex()


def code_set(*codes: str) -> BackupCodeSet:
    return BackupCodeSet(
        set_id="set-1",
        generated_at=T0,
        codes=[BackupCode(salt=SALT, hash=hash_backup_code(code, SALT)) for code in codes],
    )


def test_a_user_gets_ten_codes_of_64_bits_each():
    assert BACKUP_CODE_COUNT == 10
    assert BACKUP_CODE_BYTES * 8 == 64


def test_a_code_is_shown_as_four_dash_separated_groups_of_four_hex_digits():
    code = format_backup_code(RAW)

    assert code == "0123-4567-89ab-cdef"
    assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", code)


def test_a_formatted_code_carries_all_64_random_bits():
    raw = bytes([0xFF, 0x00, 0x10, 0x01, 0xA5, 0x5A, 0x80, 0x7F])

    assert bytes.fromhex(normalise_backup_code(format_backup_code(raw))) == raw


@pytest.mark.parametrize(
    "typed",
    [
        "0123-4567-89ab-cdef",
        "0123456789abcdef",
        "0123 4567 89AB CDEF",
        "  0123-4567-89Ab-cDeF  ",
        "0123--4567 - 89ab\tcdef",
        # full-width, as an East Asian input method types it
        "".join(chr(ord(ch) + 0xFEE0) for ch in "0123-4567-89AB-cdef"),
        "0123\u20104567\u201389ab\u2212cdef",  # Unicode hyphen, en dash, minus
    ],
)
def test_normalising_ignores_dashes_spaces_case_and_width(typed: str):
    assert normalise_backup_code(typed) == "0123456789abcdef"


@pytest.mark.parametrize(
    "typed", ["0123 4567 89AB CDEF", "0123456789ABCDEF", "0123-4567-89ab-cdef"]
)
def test_a_code_matches_however_it_is_typed(typed: str):
    stored = BackupCode(salt=SALT, hash=hash_backup_code("0123-4567-89ab-cdef", SALT))

    assert stored.matches(typed)


def test_a_different_code_does_not_match():
    stored = BackupCode(salt=SALT, hash=hash_backup_code("0123-4567-89ab-cdef", SALT))

    assert not stored.matches("0123-4567-89ab-cdee")
    assert not stored.matches("")


def test_the_hash_is_salted_sha256_and_does_not_contain_the_code():
    digest = hash_backup_code("0123-4567-89ab-cdef", SALT)

    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert "0123456789abcdef" not in digest
    assert digest != hash_backup_code("0123-4567-89ab-cdef", "00" * 16)


def test_the_same_code_hashes_the_same_under_the_same_salt():
    assert hash_backup_code("0123-4567-89ab-cdef", SALT) == hash_backup_code(
        "0123456789ABCDEF", SALT
    )


def test_find_unused_returns_the_index_of_the_matching_code():
    codes = code_set("aaaa-aaaa-aaaa-aaaa", "bbbb-bbbb-bbbb-bbbb", "cccc-cccc-cccc-cccc")

    assert codes.find_unused("BBBB BBBB BBBB BBBB") == 1
    assert codes.find_unused("dddd-dddd-dddd-dddd") is None


def test_find_unused_skips_a_code_that_was_used():
    codes = code_set("aaaa-aaaa-aaaa-aaaa", "bbbb-bbbb-bbbb-bbbb")
    codes.codes[1].used_at = T0

    assert codes.find_unused("bbbb-bbbb-bbbb-bbbb") is None
    assert codes.find_unused("aaaa-aaaa-aaaa-aaaa") == 0


def test_remaining_counts_only_unused_codes():
    codes = code_set("aaaa-aaaa-aaaa-aaaa", "bbbb-bbbb-bbbb-bbbb", "cccc-cccc-cccc-cccc")
    assert codes.remaining() == 3

    codes.codes[0].used_at = T0

    assert codes.remaining() == 2
