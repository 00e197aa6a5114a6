"""Configuration: every variable is parsed strictly, and a value the service cannot use is a
ConfigError naming the variable, before anything starts."""

from __future__ import annotations

import base64
import logging
import os
import threading
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


_RSA_PEM = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MFA_DATABASE_URL", "mysql://x/y"),
        # the keys went to SQLite's temporary database: every event then read as erased
        ("MFA_DATABASE_URL", "sqlite:///"),
        ("MFA_DATABASE_URL", "sqlite:///:memory:"),
        ("MFA_DATABASE_URL", "sqlite:///mfa.sqlite?mode=ro"),  # the "?..." named the file
        ("MFA_MASTER_KEY", "not-base64!!"),
        ("MFA_MASTER_KEY", base64.b64encode(b"short").decode()),
        ("MFA_STEP_UP_TTL_SECONDS", "abc"),
        ("MFA_DB_POOL_SIZE", "5_0"),  # int() takes these; a typo should not be a number
        ("MFA_DB_POOL_SIZE", "\u0663"),  # an Arabic-Indic three
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
        # the library reads the first block: the second key of a rotation was dropped silently
        ("MFA_JWT_PUBLIC_KEY", _RSA_PEM + pem(ec.generate_private_key(ec.SECP256R1()))),
        ("MFA_JWT_PUBLIC_KEY", _RSA_PEM + "and some text\n"),
        # the identity provider's key pasted as the shared secret: every token answered 401
        ("MFA_JWT_SECRET", _RSA_PEM),
        ("MFA_JWT_SECRET", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 operator@host"),
        # accepted, these failed later and for ever: the relay retrying, /ready 503, every
        # push to the gateway, every WebAuthn ceremony, every email code
        ("MFA_NATS_URL", "garbage"),
        ("MFA_NATS_URL", "localhost:4222"),  # no scheme
        ("MFA_NATS_URL", "http://nats.example:4222"),
        ("MFA_NATS_URL", "nats://a:4222,nats://b:4222"),  # the relay connects to one URL
        ("MFA_NATS_URL", "nats://a,nats://b"),
        ("MFA_NATS_URL", "nats://:4222"),
        ("MFA_PUSH_WEBHOOK_URL", "garbage"),
        ("MFA_PUSH_WEBHOOK_URL", "ftp://push.example/send"),
        ("MFA_PUSH_WEBHOOK_URL", "https:///send"),
        ("MFA_WEBAUTHN_ORIGINS", "localhost:8000"),  # no scheme
        ("MFA_WEBAUTHN_ORIGINS", "http://localhost:8000/"),  # browsers send no path
        ("MFA_WEBAUTHN_ORIGINS", "http://localhost:8000,http://localhost:8000/login"),
        ("MFA_WEBAUTHN_ORIGINS", "http://LOCALHOST:8000"),  # compared exactly
        ("MFA_WEBAUTHN_ORIGINS", "ftp://localhost"),
        ("MFA_WEBAUTHN_RP_ID", "https://example.com/x"),
        ("MFA_WEBAUTHN_RP_ID", "localhost:8000"),
        ("MFA_WEBAUTHN_RP_ID", "Localhost"),
        ("MFA_EMAIL_FROM", "not an address"),
        ("MFA_EMAIL_FROM", "mfa@"),
        ("MFA_EMAIL_FROM", "mfa@example.com, other@example.com"),
        ("MFA_EMAIL_FROM", "mfa@example.com\r\nBcc: someone@example.com"),
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


def test_a_private_key_as_the_secret_is_not_sent_to_the_public_key_variable(
    tmp_path: Path,
) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ConfigError, match="is a private key") as refused:
        Settings.from_env(env(tmp_path, MFA_JWT_SECRET=private))
    assert "never the private one" in str(refused.value)


def test_the_services_own_step_up_key_is_refused_as_the_bearer_token_key(tmp_path: Path) -> None:
    """Configured from the service's own JWKS by mistake, every step-up token (a proof for
    apps, with no audience) passed as a bearer token for its user."""
    from api.app import build_runtime
    from api.config_values import ConfigError
    from commands.adapters.signing import Es256Signer

    master = os.urandom(32)
    own = Es256Signer(master)._key.public_key()
    own_pem = own.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    settings = Settings.from_env(
        env(
            tmp_path,
            MFA_JWT_SECRET="",
            MFA_JWT_PUBLIC_KEY=own_pem,
            MFA_MASTER_KEY=base64.b64encode(master).decode(),
        )
    )
    with pytest.raises(ConfigError, match="MFA_JWT_PUBLIC_KEY"):
        build_runtime(settings, run_projections=False)


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
    caplog.clear()  # with a public key the secret verifies nothing: no warning about it
    settings = Settings.from_env(
        env(tmp_path / "pk", MFA_JWT_SECRET="secret", MFA_JWT_PUBLIC_KEY=_RSA_PEM)
    )
    with caplog.at_level(logging.WARNING, logger="mfa"):
        close_runtime(build_runtime(settings, run_projections=False))
    assert "MFA_JWT_SECRET" not in caplog.text


def test_usable_urls_origins_and_addresses_are_accepted_as_given(tmp_path: Path) -> None:
    for name, value in [
        ("MFA_NATS_URL", "nats://nats:4222"),
        ("MFA_NATS_URL", "tls://mfa:s%2Fcret@nats.example"),
        ("MFA_NATS_URL", "ws://127.0.0.1:8080"),
        ("MFA_NATS_URL", "wss://[::1]:443/nats"),
        ("MFA_NATS_URL", "nats://nats_1:4222"),  # a container name
        ("MFA_PUSH_WEBHOOK_URL", "https://gw:s%2Fcret@push.example/send?x=1"),
        ("MFA_PUSH_WEBHOOK_URL", "http://127.0.0.1:9000/push"),
        ("MFA_EMAIL_FROM", "mfa@example.org"),
        ("MFA_EMAIL_FROM", "MFA service <mfa@example.org>"),
        ("MFA_WEBAUTHN_ORIGINS", "http://localhost:8000, http://localhost:5173"),
        ("MFA_WEBAUTHN_ORIGINS", "http://app.localhost"),
    ]:
        settings = Settings.from_env(env(tmp_path, **{name: value}))
        read = {
            "MFA_NATS_URL": settings.nats_url,
            "MFA_PUSH_WEBHOOK_URL": settings.push_webhook_url,
            "MFA_EMAIL_FROM": settings.email_from,
            "MFA_WEBAUTHN_ORIGINS": ", ".join(settings.webauthn_origins),
        }[name]
        assert read == value
    settings = Settings.from_env(
        env(
            tmp_path,
            MFA_WEBAUTHN_RP_ID="example.com",
            MFA_WEBAUTHN_ORIGINS="https://example.com,https://login.example.com:8443,"
            "android:apk-key-hash:x2u6Dt-ZwGvcQ1xJ7Jv4cY0wZp2yq3L0y8hV9nM4Q_k",
        ),
    )
    assert settings.webauthn_rp_id == "example.com"
    assert len(settings.webauthn_origins) == 3


def test_defaults_of_webauthn_and_email_hold(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path))
    assert settings.webauthn_rp_id == "localhost"
    assert settings.webauthn_origins == ("http://localhost:8000",)
    assert settings.email_from == "mfa@localhost"


def test_origins_browsers_would_refuse_are_warned_about_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser refuses a ceremony from an origin outside the RP id, over plain http other
    than localhost, or for an IP address as RP id; an authenticator that is not a browser (a
    test's, an app's) may not, so these start, with a warning naming what browsers refuse."""
    for overrides in (
        {"MFA_WEBAUTHN_RP_ID": "example.com"},  # the default origin is http://localhost:8000
        {"MFA_WEBAUTHN_RP_ID": "127.0.0.1", "MFA_WEBAUTHN_ORIGINS": "http://127.0.0.1:8000"},
        {"MFA_WEBAUTHN_ORIGINS": "http://[::1]:8000"},
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mfa.settings"):
            settings = Settings.from_env(env(tmp_path, **overrides))
        assert settings.webauthn_origins
        assert "browsers" in caplog.text, overrides


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("MFA_NATS_URL", "nats://mfa:Hunter2/Top@nats:4222"),  # a / not escaped
        ("MFA_NATS_URL", "nats://Hunter2@nats:99999999"),
        ("MFA_NATS_URL", "mfa:Hunter2@nats:4222"),  # no scheme: "mfa" is read as one
        ("MFA_NATS_URL", "nats://mfa:Hunter2@nats:4222,nats://mfa:Hunter2@other:4222"),
        ("MFA_PUSH_WEBHOOK_URL", "https://gw:Hunter2/Top@push.example/send"),
        ("MFA_PUSH_WEBHOOK_URL", "https://gw:Hunter2[Top@push.example/send"),
        ("MFA_PUSH_WEBHOOK_URL", "gw:Hunter2@push.example/send"),
    ],
)
def test_a_url_that_may_hold_a_password_is_named_never_quoted(
    tmp_path: Path, name: str, url: str
) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        Settings.from_env(env(tmp_path, **{name: url}))
    assert "Hunter2" not in str(refused.value)


def dev_env(tmp_path: Path) -> dict[str, str]:
    """Neither secret set: both come from dev-secrets.json in the data folder."""
    return {"MFA_DATA_DIR": str(tmp_path)}


def test_development_secrets_are_generated_once_and_reused(tmp_path: Path) -> None:
    first = Settings.from_env(dev_env(tmp_path))
    again = Settings.from_env(dev_env(tmp_path))
    assert first.development_secrets
    assert again.development_secrets
    assert (first.master_key, first.jwt_secret) == (again.master_key, again.jwt_secret)
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secrets.json"]
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"",  # a crash between creating the file and writing it
        b'{"MFA_JWT_SECRET": "Hunter2-secret", "MFA_MAS',  # cut short
        b"{}",
        b"[]",
        b'"Hunter2"',
        b'{"MFA_JWT_SECRET": "Hunter2-secret"}',
        b'{"MFA_JWT_SECRET": "Hunter2-secret", "MFA_MASTER_KEY": 32}',
        b'{"MFA_JWT_SECRET": " ", "MFA_MASTER_KEY": "%s"}' % base64.b64encode(bytes(32)),
        b'{"MFA_JWT_SECRET": "Hunter2-secret", "MFA_MASTER_KEY": "SHVudGVyMg=="}',  # 7 bytes
        b"\xff\xfe\x00",
    ],
    ids=lambda content: content[:20].decode(errors="replace") or "empty",
)
def test_a_damaged_development_secrets_file_is_named_and_not_quoted(
    tmp_path: Path, content: bytes
) -> None:
    """It was a KeyError (a traceback on every command) or json's "Expecting value: line 1
    column 1 (char 0)", naming no file."""
    path = tmp_path / "dev-secrets.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(dev_env(tmp_path))
    message = str(refused.value)
    assert str(path) in message
    assert "delete it only if no stored data depends on its master key" in message
    assert "Hunter2" not in message
    assert "SHVudGVyMg" not in message
    assert path.read_bytes() == content  # left for the operator to restore


def test_an_unreadable_development_secrets_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "dev-secrets.json").mkdir()  # read() fails with an OSError
    with pytest.raises(ConfigError, match=r"dev-secrets\.json cannot be read"):
        Settings.from_env(dev_env(tmp_path))


def test_a_damaged_development_secrets_file_is_not_read_when_both_secrets_are_set(
    tmp_path: Path,
) -> None:
    (tmp_path / "dev-secrets.json").write_text("{}")
    assert Settings.from_env(env(tmp_path)).development_secrets is False


def test_a_crash_while_generating_leaves_no_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was created empty and then written: a crash in between (here, a full disk)
    left an empty dev-secrets.json that every later start refused."""
    import api.settings

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(api.settings.json, "dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        Settings.from_env(dev_env(tmp_path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert Settings.from_env(dev_env(tmp_path)).development_secrets


def test_processes_generating_development_secrets_at_once_share_them(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(8)

    def read() -> bytes:
        start.wait()
        return Settings.from_env(dev_env(tmp_path)).master_key

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: read(), range(8)))
    assert len(keys) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secrets.json"]
