"""Settings: every `MFA_*` environment variable, read once into a frozen object."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from api.config_values import (
    ConfigError,
    check_url,
    email_from_of,
    origins_of,
    rp_id_of,
)
from domain.ids import has_unsafe_characters

log = logging.getLogger("mfa.settings")

# Every environment variable the service reads, with what it means. compose.yaml and the docs
# are checked against this list by a test.
ENVIRONMENT: dict[str, str] = {
    "MFA_DATA_DIR": "folder for the embedded database and generated development secrets",
    "MFA_DATABASE_URL": "sqlite:///path or postgresql://user@host:port/db",
    "MFA_NATS_URL": "NATS server URL (nats://, tls://, ws:// or wss://); unset disables publishing",
    "MFA_JWT_SECRET": "HS256 secret for incoming bearer tokens",
    "MFA_JWT_PUBLIC_KEY": "PEM public key for RS256/ES256 bearer tokens (instead of the secret)",
    "MFA_JWT_ISSUER": "required `iss` of incoming tokens, when set",
    "MFA_JWT_AUDIENCE": "required `aud` of incoming tokens, when set",
    "MFA_JWT_MAX_TTL_SECONDS": "longest lifetime an incoming token may have (default 86400)",
    "MFA_MASTER_KEY": "base64 of 32 bytes; wraps every per-user data key",
    "MFA_WEBAUTHN_RP_ID": "WebAuthn relying party id (a bare host name such as example.com)",
    "MFA_WEBAUTHN_RP_NAME": "WebAuthn relying party display name",
    "MFA_WEBAUTHN_ORIGINS": "comma-separated allowed WebAuthn origins (https://host[:port])",
    "MFA_TOTP_ISSUER": "issuer shown in authenticator apps",
    "MFA_SMTP_URL": "smtp:// or smtps:// URL for email codes",
    "MFA_EMAIL_FROM": "sender address of email codes",
    "MFA_SMS_WEBHOOK_URL": "HTTP endpoint that sends SMS (POST {to, body})",
    "MFA_PUSH_WEBHOOK_URL": "push gateway endpoint",
    "MFA_STEP_UP_TTL_SECONDS": "lifetime of step-up tokens (default 300)",
    "MFA_STEP_UP_AUDIENCE": "`client`: step-up tokens carry the caller's client as `aud`",
    "MFA_TRUSTED_DEVICE_DAYS": "default lifetime of a trusted device (default 30, at most 90)",
    "MFA_PUSH_ALLOW_PRIVATE": "allow plain-HTTP and private-network push endpoints (tests, labs)",
    "MFA_PROJECTIONS": "`inprocess` (default) or `worker` (projections run in `mfa worker`)",
    "MFA_DB_POOL_SIZE": "PostgreSQL connections per process for the event store (default 10)",
    "MFA_HANDLER_THREADS": "threads running request handlers per process (default pool size + 2)",
    "MFA_WORKERS": "server processes of `mfa serve` (PostgreSQL only; default 1)",
    "MFA_LOG_LEVEL": "log level (default INFO)",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _text(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = _text(env, name)
    if not text:
        return default
    if not re.fullmatch(r"[+-]?[0-9]+", text):  # int() also takes "5_0" and other digits
        raise ConfigError(f"{name} must be a whole number, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _label(env: Mapping[str, str], name: str, default: str) -> str:
    """A name shown to users (in authenticator apps, in QR codes): 1 to 64 characters."""
    text = _text(env, name) or default
    if len(text) > 64 or has_unsafe_characters(text):
        raise ConfigError(f"{name} must be at most 64 characters, without control characters")
    return text


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """One of `choices`, in any case; `default` when unset."""
    text = _text(env, name)
    if not text:
        return default
    for choice in choices:
        if text.lower() == choice.lower():
            return choice
    raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {text!r}")


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = _text(env, name).lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{name} must be 1, true, yes or on (or 0, false, no, off), not {text!r}")


def _master_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ConfigError("MFA_MASTER_KEY must be base64 of exactly 32 bytes")
    return key


MIN_RSA_BITS = 2048


def load_jwt_public_key(pem: str) -> tuple[Any, list[str]]:
    """The public key of `MFA_JWT_PUBLIC_KEY` and the one algorithm it verifies (RS256 for an
    RSA key, ES256 for a P-256 one); ConfigError for anything else."""
    text = pem.strip()
    one_block = text.startswith("-----BEGIN") and text.endswith("-----")
    if text.count("-----BEGIN") != 1 or not one_block:
        # The library reads the first block and ignores the rest: a second key pasted in
        # (an old and a new one, during a rotation) would be dropped without a word.
        raise ConfigError("MFA_JWT_PUBLIC_KEY must be one PEM public key and nothing else")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError("MFA_JWT_PUBLIC_KEY must be a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:  # RFC 7518 §3.3: 2048 bits or more
            raise ConfigError(f"MFA_JWT_PUBLIC_KEY: an RSA key needs at least {MIN_RSA_BITS} bits")
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise ConfigError("MFA_JWT_PUBLIC_KEY must be an RSA or a P-256 (ES256) public key")


def check_jwt_secret(secret: str) -> None:
    """Refuse an `MFA_JWT_SECRET` that PyJWT will not use as an HMAC key (a PEM or SSH public
    key, a certificate: the identity provider's key pasted into the wrong variable), which
    would only answer 401 to every request."""
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError:
        if "PRIVATE KEY" in secret:
            raise ConfigError(
                "MFA_JWT_SECRET is a private key: give the identity provider's public key "
                "as MFA_JWT_PUBLIC_KEY (never the private one)"
            ) from None
        raise ConfigError(
            "MFA_JWT_SECRET is a public key or certificate, not a shared secret: "
            "set it as MFA_JWT_PUBLIC_KEY instead"
        ) from None


DEV_SECRETS = ("MFA_JWT_SECRET", "MFA_MASTER_KEY")
DEV_SECRETS_FILE = "dev-secrets.json"  # in the data folder


def _damaged(path: Path, what: str) -> ConfigError:
    """The development secrets file cannot serve: named, its contents never quoted."""
    return ConfigError(
        f"the development secrets file {path} {what}: restore it from a backup; delete it "
        "only if no stored data depends on its master key (a new one is then generated)"
    )


def _read_generated_secrets(path: Path) -> dict[str, str]:
    """The development secrets stored in `path`, checked: a JSON object with a non-empty
    MFA_JWT_SECRET and a valid MFA_MASTER_KEY."""
    try:
        loaded = json.loads(path.read_bytes())
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError:  # empty or cut short (a crash while it was written), not UTF-8, ...
        raise _damaged(path, "is damaged (not valid JSON)") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(loaded.get(name), str) and loaded[name].strip() for name in DEV_SECRETS
    ):
        raise _damaged(path, f"is damaged (not a JSON object with {' and '.join(DEV_SECRETS)})")
    try:
        _master_key(loaded["MFA_MASTER_KEY"])
    except ConfigError:
        raise _damaged(path, "is damaged (its MFA_MASTER_KEY is not base64 of 32 bytes)") from None
    return {name: loaded[name] for name in DEV_SECRETS}


def _create(path: Path, written: Path) -> bool:
    """Put the complete file `written` in place as `path`, unless `path` exists (False)."""
    try:
        os.link(written, path)  # all at once: `path` never exists empty or half-written
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: create it in place instead
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(written.read_bytes())
    return True


def _generated_secrets(data_dir: Path) -> dict[str, str]:
    """Development secrets, generated once into the data folder."""
    path = data_dir / DEV_SECRETS_FILE
    if path.exists():
        return _read_generated_secrets(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = {
        "MFA_JWT_SECRET": secrets.token_urlsafe(48),
        "MFA_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    # Written in full under a name of its own first: a crash leaves that file, not an empty
    # or truncated dev-secrets.json.
    written = data_dir / f".dev-secrets.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(generated, handle)
            handle.flush()
            os.fsync(handle.fileno())
        created = _create(path, written)
    finally:
        written.unlink(missing_ok=True)
    if not created:  # another process generated them first: use theirs
        time.sleep(0.2)  # (one without hard links may still be writing them)
        return _read_generated_secrets(path)
    return generated


@dataclass(frozen=True)
class Settings:
    """The service's configuration; construct with `Settings.from_env()`."""

    data_dir: Path
    database_url: str = field(repr=False)
    jwt_secret: str | None = field(repr=False)
    master_key: bytes = field(repr=False)
    nats_url: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_max_ttl_seconds: int = 86400
    webauthn_rp_id: str = "localhost"
    webauthn_rp_name: str = "MFA service"
    webauthn_origins: tuple[str, ...] = ("http://localhost:8000",)
    totp_issuer: str = "MFA service"
    smtp_url: str | None = field(default=None, repr=False)
    email_from: str = "mfa@localhost"
    sms_webhook_url: str | None = field(default=None, repr=False)
    push_webhook_url: str | None = field(default=None, repr=False)
    projections_in_process: bool = True
    step_up_ttl_seconds: int = 300
    step_up_audience_is_client: bool = False
    push_allow_private: bool = False
    trusted_device_days: int = 30
    db_pool_size: int = 10
    handler_threads: int = 0  # 0: db_pool_size + 2
    log_level: str = "INFO"
    development_secrets: bool = False  # the JWT secret was generated: `/demo/session` may sign

    @property
    def uses_postgres(self) -> bool:
        """True when the event store is PostgreSQL."""
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, generate_secrets: bool = True
    ) -> Settings:
        """Read the `MFA_*` variables; generate development secrets when they are unset
        (without `generate_secrets`, only read those generated before)."""
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("MFA_DATA_DIR") or "./var").resolve()
        database_url = env.get("MFA_DATABASE_URL") or f"sqlite:///{data_dir / 'mfa.sqlite'}"
        if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError("MFA_DATABASE_URL must start with sqlite:/// or postgresql://")
        sqlite_path = database_url.removeprefix("sqlite:///")
        if database_url.startswith("sqlite:///") and (
            not sqlite_path.strip() or sqlite_path.startswith(":") or "?" in sqlite_path
        ):
            # An empty path or `:memory:` put the keys in a database that vanishes on close
            # (every event then read as erased); `?mode=...` became part of the file name.
            raise ConfigError(
                "MFA_DATABASE_URL: sqlite:/// takes a file path (sqlite:////abs/path.sqlite, or "
                "a path relative to the working directory), nothing else"
            )
        # Demo sessions (`/demo/session`) sign tokens with the JWT secret: only a generated one
        # may serve, never an operator's (which the identity provider or others may share).
        development = not (env.get("MFA_JWT_SECRET") or env.get("MFA_JWT_PUBLIC_KEY"))
        if development or not env.get("MFA_MASTER_KEY"):
            if not generate_secrets and not (data_dir / DEV_SECRETS_FILE).exists():
                raise ConfigError(
                    "MFA_MASTER_KEY or MFA_JWT_SECRET is unset, and there are no development "
                    f"secrets ({data_dir / DEV_SECRETS_FILE}) to read: set them as the service "
                    "has them; read-only commands generate none"
                )
            generated = _generated_secrets(data_dir)
            log.warning(
                "MFA_MASTER_KEY or MFA_JWT_SECRET is unset: using DEVELOPMENT secrets from %s. "
                "Never run production like this.",
                data_dir / DEV_SECRETS_FILE,
            )
            for name in ("MFA_MASTER_KEY", "MFA_JWT_SECRET"):
                env.setdefault(name, generated[name])
                if not env[name]:
                    env[name] = generated[name]
        master_key = _master_key(env["MFA_MASTER_KEY"])
        public_key = env.get("MFA_JWT_PUBLIC_KEY") or None
        if public_key is not None:
            load_jwt_public_key(public_key)  # refused now, not on every request
        else:
            check_jwt_secret(env["MFA_JWT_SECRET"])
        nats_url = env.get("MFA_NATS_URL") or None
        if nats_url is not None:
            check_url(
                "MFA_NATS_URL",
                nats_url,
                ("nats", "tls", "ws", "wss"),
                "one NATS server URL: nats://, tls://, ws:// or wss:// and a host name",
            )
        push_webhook_url = env.get("MFA_PUSH_WEBHOOK_URL") or None
        if push_webhook_url is not None:
            check_url(
                "MFA_PUSH_WEBHOOK_URL",
                push_webhook_url,
                ("http", "https"),
                "an http:// or https:// URL with a host name",
            )
        rp_id = rp_id_of(env)
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            jwt_secret=env.get("MFA_JWT_SECRET") or None,
            master_key=master_key,
            nats_url=nats_url,
            jwt_public_key=public_key,
            jwt_issuer=env.get("MFA_JWT_ISSUER") or None,
            jwt_audience=env.get("MFA_JWT_AUDIENCE") or None,
            jwt_max_ttl_seconds=_int(env, "MFA_JWT_MAX_TTL_SECONDS", 86400, 60, 366 * 86400),
            webauthn_rp_id=rp_id,
            webauthn_rp_name=_label(env, "MFA_WEBAUTHN_RP_NAME", "MFA service"),
            webauthn_origins=origins_of(env, rp_id),
            totp_issuer=_label(env, "MFA_TOTP_ISSUER", "MFA service"),
            smtp_url=env.get("MFA_SMTP_URL") or None,
            email_from=email_from_of(env),
            sms_webhook_url=env.get("MFA_SMS_WEBHOOK_URL") or None,
            push_webhook_url=push_webhook_url,
            projections_in_process=_choice(
                env, "MFA_PROJECTIONS", ("inprocess", "worker"), "inprocess"
            )
            == "inprocess",
            step_up_ttl_seconds=_int(env, "MFA_STEP_UP_TTL_SECONDS", 300, 1, 3600),
            step_up_audience_is_client=_choice(
                env, "MFA_STEP_UP_AUDIENCE", ("none", "client"), "none"
            )
            == "client",
            push_allow_private=_flag(env, "MFA_PUSH_ALLOW_PRIVATE"),
            trusted_device_days=_int(env, "MFA_TRUSTED_DEVICE_DAYS", 30, 1, 90),
            db_pool_size=_int(env, "MFA_DB_POOL_SIZE", 10, 1, 200),
            handler_threads=_int(env, "MFA_HANDLER_THREADS", 0, 0, 512),
            log_level=_choice(env, "MFA_LOG_LEVEL", LOG_LEVELS, "INFO"),
            development_secrets=development,
        )
