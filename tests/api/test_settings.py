"""Configuration: every variable is parsed strictly, and a value the service cannot use is a
ConfigError naming the variable, before anything starts."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from api.settings import ConfigError, Settings


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {
        "MFA_DATA_DIR": str(tmp_path),
        "MFA_JWT_SECRET": "s" * 48,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        **values,
    }


def pem(key: object) -> str:
    public = key.public_key()  # type: ignore[attr-defined]
    return str(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    )


def test_unset_variables_take_their_documented_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path))
    assert (settings.step_up_ttl_seconds, settings.trusted_device_days) == (300, 30)
    assert (settings.db_pool_size, settings.handler_threads) == (10, 0)
    assert (settings.log_level, settings.projections_in_process) == ("INFO", True)
    assert settings.push_allow_private is False


def test_values_are_read_in_any_case_and_with_surrounding_blanks(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings.from_env(
        env(
            tmp_path,
            MFA_MASTER_KEY=key + "\n",  # as read from a secret file
            MFA_LOG_LEVEL="warning",
            MFA_PROJECTIONS=" Worker ",
            MFA_PUSH_ALLOW_PRIVATE="ON",
            MFA_DB_POOL_SIZE=" 4 ",
        )
    )
    assert settings.master_key == base64.b64decode(key)
    assert (settings.log_level, settings.projections_in_process) == ("WARNING", False)
    assert (settings.push_allow_private, settings.db_pool_size) == (True, 4)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MFA_DATABASE_URL", "mysql://x/y"),
        ("MFA_MASTER_KEY", "not-base64!!"),
        ("MFA_MASTER_KEY", base64.b64encode(b"short").decode()),
        ("MFA_STEP_UP_TTL_SECONDS", "abc"),
        ("MFA_STEP_UP_TTL_SECONDS", "-5"),  # every step-up token born expired
        ("MFA_STEP_UP_TTL_SECONDS", "0"),
        ("MFA_TRUSTED_DEVICE_DAYS", "ten"),
        ("MFA_TRUSTED_DEVICE_DAYS", "91"),
        ("MFA_DB_POOL_SIZE", "0"),
        ("MFA_DB_POOL_SIZE", "-1"),
        ("MFA_HANDLER_THREADS", "-3"),
        ("MFA_HANDLER_THREADS", "1.5"),
        ("MFA_LOG_LEVEL", "verbose"),
        ("MFA_PROJECTIONS", "workers"),
        ("MFA_PUSH_ALLOW_PRIVATE", "maybe"),
        ("MFA_TOTP_ISSUER", "x" * 65),  # it goes into every QR code
        ("MFA_WEBAUTHN_RP_NAME", "line\nbreak"),
        ("MFA_JWT_PUBLIC_KEY", "garbage"),
        ("MFA_JWT_PUBLIC_KEY", pem(ed25519.Ed25519PrivateKey.generate())),
        ("MFA_JWT_PUBLIC_KEY", pem(ec.generate_private_key(ec.SECP384R1()))),
        # RFC 7518 §3.3: RS256 needs 2048 bits; a 1024-bit key lets anyone mint admin tokens
        ("MFA_JWT_PUBLIC_KEY", pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else value,
)
def test_a_value_the_service_cannot_use_is_refused_naming_its_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env(tmp_path, **{name: value}))


def test_a_public_key_admits_only_its_own_algorithm(tmp_path: Path) -> None:
    from api.auth import TokenVerifier

    for key, algorithm in (
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ):
        settings = Settings.from_env(env(tmp_path, MFA_JWT_SECRET="", MFA_JWT_PUBLIC_KEY=pem(key)))
        assert TokenVerifier(settings)._algorithms == [algorithm]


def test_a_short_hs256_secret_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 7518 §3.2 asks for 32 bytes; refusing a shorter one would stop running deployments."""
    from api.app import build_runtime, close_runtime

    for secret, warned in (("secret", True), ("s" * 32, False)):
        caplog.clear()
        settings = Settings.from_env(env(tmp_path / secret[:8], MFA_JWT_SECRET=secret))
        with caplog.at_level(logging.WARNING, logger="mfa"):
            close_runtime(build_runtime(settings, run_projections=False))
        assert ("MFA_JWT_SECRET is shorter than 32 bytes" in caplog.text) is warned
        assert secret not in caplog.text.replace("MFA_JWT_SECRET", "")
