"""RFC 6238 (TOTP) and RFC 4226 (HOTP) test vectors, computed through commands.verifiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from commands.verifiers import new_totp_secret, totp_code, totp_timecode
from domain.totp import TotpDevice, TotpStatus

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

RFC6238_SECRETS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}

# RFC 6238 Appendix B: (unix time, SHA1, SHA256, SHA512)
RFC6238_TABLE = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]

RFC6238_VECTORS = [
    pytest.param(algorithm, unix_time, code, id=f"{algorithm}-{unix_time}")
    for unix_time, *codes in RFC6238_TABLE
    for algorithm, code in zip(("SHA1", "SHA256", "SHA512"), codes, strict=True)
]

# RFC 4226 Appendix D: HOTP values for counters 0..9
RFC4226_HOTP = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]


def device(secret: bytes, *, digits: int, algorithm: str = "SHA1", period: int = 30) -> TotpDevice:
    return TotpDevice(
        device_id="dev-1",
        name="RFC",
        secret=new_totp_secret(secret),
        digits=digits,
        period=period,
        algorithm=algorithm,
        status=TotpStatus.ACTIVE,
        created_at=T0,
    )


def at_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(("algorithm", "unix_time", "expected"), RFC6238_VECTORS)
def test_totp_code_matches_the_rfc_6238_vector(algorithm: str, unix_time: int, expected: str):
    # Given the RFC 6238 seed for the algorithm, 8 digits and a 30 s step
    rfc_device = device(RFC6238_SECRETS[algorithm], digits=8, algorithm=algorithm)

    # When the code is computed at the vector's time
    code = totp_code(rfc_device, at_unix(unix_time))

    # Then it is the published value
    assert code == expected


@pytest.mark.parametrize(("algorithm", "unix_time", "expected"), RFC6238_VECTORS)
def test_totp_timecode_accepts_the_rfc_6238_vector_at_its_own_step(
    algorithm: str, unix_time: int, expected: str
):
    rfc_device = device(RFC6238_SECRETS[algorithm], digits=8, algorithm=algorithm)

    timecode = totp_timecode(rfc_device, expected, at_unix(unix_time))

    assert timecode == unix_time // 30


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_HOTP)))
def test_the_totp_code_at_step_c_is_the_rfc_4226_hotp_value_for_counter_c(
    counter: int, expected: str
):
    # Given the RFC 4226 secret as a 6-digit, 30 s TOTP device
    hotp_device = device(RFC6238_SECRETS["SHA1"], digits=6)

    # When the code is computed at time c * 30 (time step c)
    code = totp_code(hotp_device, at_unix(counter * 30))

    # Then it is HOTP(K, c)
    assert code == expected


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_HOTP))[1:])
def test_totp_timecode_reports_counter_c_for_the_rfc_4226_hotp_value(counter: int, expected: str):
    hotp_device = device(RFC6238_SECRETS["SHA1"], digits=6)

    assert totp_timecode(hotp_device, expected, at_unix(counter * 30 + 15)) == counter


# ---------------------------------------------------------------- the acceptance window

HOTP_DEVICE = device(RFC6238_SECRETS["SHA1"], digits=6)
NOW = T0
NOW_STEP = int(NOW.timestamp()) // 30


@pytest.mark.parametrize("offset_steps", [-1, 0, 1])
def test_totp_timecode_accepts_a_code_one_step_either_side(offset_steps: int):
    # Given the code the device showed `offset_steps` steps away from now
    code = totp_code(HOTP_DEVICE, NOW + timedelta(seconds=30 * offset_steps))

    # When it is checked now
    timecode = totp_timecode(HOTP_DEVICE, code, NOW)

    # Then it matches, and the matched step is the one the code belongs to
    assert timecode == NOW_STEP + offset_steps


@pytest.mark.parametrize("offset_steps", [-3, -2, 2, 3])
def test_totp_timecode_refuses_a_code_two_or_more_steps_away(offset_steps: int):
    code = totp_code(HOTP_DEVICE, NOW + timedelta(seconds=30 * offset_steps))
    assert code != totp_code(HOTP_DEVICE, NOW)  # guard: the codes really differ

    assert totp_timecode(HOTP_DEVICE, code, NOW) is None


@pytest.mark.parametrize(
    "bad_code",
    ["12a456", "abcdef", "12 456", "-12345", "+12345", "", "1234.5"],
)
def test_totp_timecode_refuses_a_code_with_non_digits(bad_code: str):
    assert totp_timecode(HOTP_DEVICE, bad_code, NOW) is None


def test_totp_timecode_refuses_a_code_of_the_wrong_length():
    # Given the right code, and the same code with a digit too many or too few
    code = totp_code(HOTP_DEVICE, NOW)
    longer = code + "0"
    shorter = code[:-1]

    # Then only the right length passes
    assert totp_timecode(HOTP_DEVICE, code, NOW) == NOW_STEP
    assert totp_timecode(HOTP_DEVICE, longer, NOW) is None
    assert totp_timecode(HOTP_DEVICE, shorter, NOW) is None
    assert totp_timecode(HOTP_DEVICE, " " + code, NOW) is None


def test_totp_timecode_refuses_an_eight_digit_code_on_a_six_digit_device():
    eight = device(RFC6238_SECRETS["SHA1"], digits=8)
    code8 = totp_code(eight, NOW)

    assert totp_timecode(HOTP_DEVICE, code8, NOW) is None
    assert totp_timecode(eight, code8, NOW) == NOW_STEP


def test_a_different_secret_does_not_produce_the_same_timecode():
    other = device(b"abcdefghijabcdefghij", digits=6)
    code = totp_code(HOTP_DEVICE, NOW)

    assert totp_code(other, NOW) != code
    assert totp_timecode(other, code, NOW) is None


def test_new_totp_secret_is_unpadded_base32_of_160_bits():
    secret = new_totp_secret(bytes(range(20)))

    assert len(secret) == 32
    assert "=" not in secret
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_a_code_in_other_than_ascii_digits_matches_nothing():
    """pyotp normalises (NFKC) what it compares, so fullwidth digits would pass for ASCII ones."""
    code = totp_code(HOTP_DEVICE, NOW)
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in code)
    arabic_indic = "".join(chr(0x0660 + int(c)) for c in code)
    assert totp_timecode(HOTP_DEVICE, code, NOW) is not None
    assert totp_timecode(HOTP_DEVICE, fullwidth, NOW) is None
    assert totp_timecode(HOTP_DEVICE, arabic_indic, NOW) is None
