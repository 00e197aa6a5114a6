"""Checks of the configuration values that name other systems: URLs of NATS and the push
gateway, the WebAuthn relying party id and origins, the email sender. Each refuses what the
service could never use with a `ConfigError` naming its variable (never quoting a URL, which
may hold a password), or warns about what only browsers would refuse."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from email.headerregistry import HeaderRegistry
from typing import Any
from urllib.parse import urlsplit

from domain.ids import has_unsafe_characters

log = logging.getLogger("mfa.settings")


class ConfigError(ValueError):
    """A configuration variable holds a value the service cannot use; the message names it."""


# A host name as DNS and browsers write it (lower case, ASCII: an international name in its
# xn-- form), without the final dot.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# A host a NATS client or httpx may connect to: a name (container names may hold `_`) or an
# IP address (an IPv6 one without its brackets, as urlsplit gives it).
_CONNECTABLE_HOST = re.compile(r"[\w.-]+|[0-9A-Fa-f:.]+(?:%\w+)?")
# WebAuthn from an Android app: the origin is the hash of the app's signing key.
_ANDROID_ORIGIN = re.compile(r"android:apk-key-hash:[A-Za-z0-9_+/-]+={0,2}")
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_url(name: str, url: str, schemes: tuple[str, ...], shape: str) -> None:
    """ConfigError naming the variable unless `url` has one of `schemes` and a host; the URL
    is never quoted, since it may hold a password (as in commands.adapters.sms_http)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # (its message would quote the "port": an unescaped password's start)
    except ValueError:
        raise ConfigError(
            f"{name} cannot be read as a URL: it must be {shape} (percent-encode any /, @, : "
            "or # in the user name and password)"
        ) from None
    host = parts.hostname or ""
    written_scheme = url.startswith(tuple(f"{scheme}://" for scheme in schemes))  # nats-py: case
    if not written_scheme or not _CONNECTABLE_HOST.fullmatch(host) or port == 0:
        raise ConfigError(f"{name} must be {shape}")


def rp_id_of(env: Mapping[str, str]) -> str:
    """MFA_WEBAUTHN_RP_ID: a bare host name, which browsers then check each origin against."""
    rp_id = env.get("MFA_WEBAUTHN_RP_ID") or "localhost"
    if not (_HOST_NAME.fullmatch(rp_id) or _is_ip_address(rp_id)) or len(rp_id) > 253:
        raise ConfigError(
            "MFA_WEBAUTHN_RP_ID must be a bare host name in lower case such as example.com "
            f"(no scheme, port or path), not {rp_id[:80]!r}"
        )
    if _is_ip_address(rp_id):  # a software authenticator may not mind; browsers do
        log.warning("MFA_WEBAUTHN_RP_ID is an IP address: browsers refuse WebAuthn for one")
    return rp_id


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origins_of(env: Mapping[str, str], rp_id: str) -> tuple[str, ...]:
    """MFA_WEBAUTHN_ORIGINS: each one compared exactly with the origin a browser reports,
    whose host must be the RP id or a subdomain of it."""
    text = env.get("MFA_WEBAUTHN_ORIGINS") or ""
    origins = tuple(o.strip() for o in text.split(",") if o.strip()) or ("http://localhost:8000",)
    for origin in origins:
        if _ANDROID_ORIGIN.fullmatch(origin):
            continue
        host = _origin_host(origin)
        if host != rp_id and not host.endswith("." + rp_id):
            # Warned, not refused: a browser refuses such a ceremony, an authenticator that is
            # not a browser (a test's, an app's) may not.
            log.warning(
                "MFA_WEBAUTHN_ORIGINS: the host of %s is neither MFA_WEBAUTHN_RP_ID (%s) nor a "
                "subdomain of it: browsers refuse WebAuthn ceremonies from it",
                origin,
                rp_id,
            )
    return origins


def _origin_host(origin: str) -> str:
    """The host of an origin written as browsers report it: `scheme://host[:port]`."""
    shape = "scheme://host[:port] without a path, such as https://example.com"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        parts, port = urlsplit(""), None
    if "@" in parts.netloc:
        raise ConfigError(f"MFA_WEBAUTHN_ORIGINS: each origin must be {shape}, without a user")
    host = parts.hostname or ""
    named = _HOST_NAME.fullmatch(host) or _is_ip_address(host)
    if parts.scheme not in DEFAULT_PORTS or not named or port == 0:
        raise ConfigError(f"MFA_WEBAUTHN_ORIGINS: {origin[:80]!r} is not {shape}")
    if parts.scheme == "http" and host != "localhost" and not host.endswith(".localhost"):
        log.warning(
            "MFA_WEBAUTHN_ORIGINS: %s is plain http: browsers offer WebAuthn over http only on "
            "localhost",
            origin[:80],
        )
    written = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}"
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        written += f":{port}"
    if origin != written:  # a path, a query, a default port, capitals: never matched
        raise ConfigError(
            f"MFA_WEBAUTHN_ORIGINS: write {origin[:80]!r} as {written} "
            "(browsers report origins in that form, and they are compared exactly)"
        )
    return host


def email_from_of(env: Mapping[str, str]) -> str:
    """MFA_EMAIL_FROM: one address, `mfa@example.com` or `MFA <mfa@example.com>`."""
    sender = env.get("MFA_EMAIL_FROM") or "mfa@localhost"
    try:
        header = HeaderRegistry()("From", sender)
        addresses: tuple[Any, ...] = getattr(header, "addresses", ())
        usable = (
            not header.defects
            and len(addresses) == 1
            and bool(addresses[0].username and addresses[0].domain)
            and not has_unsafe_characters(sender)
        )
    except Exception:  # the parser raises more than HeaderParseError ("x@": an IndexError)
        usable = False
    if not usable:
        raise ConfigError(
            "MFA_EMAIL_FROM must be one email address such as mfa@example.com "
            f"(or MFA <mfa@example.com>), not {sender[:80]!r}"
        )
    return sender
