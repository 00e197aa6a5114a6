"""The `mfa` command: serve, worker, token."""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
import jwt
import msgspec

from api.settings import Settings
from cli_errors import starting, store_errors_in_one_line
from domain.ids import is_user_id
from infra.log_redaction import LOG_FORMAT, quiet_library_loggers


@click.group()
def main() -> None:
    """MFA service."""


def _settings(*, generate_secrets: bool = True) -> Settings:
    """The settings; the log in the service's format from the first line (reading them may
    warn), at their level once read."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    quiet_library_loggers()
    with starting():
        settings = Settings.from_env(generate_secrets=generate_secrets)
    logging.getLogger().setLevel(settings.log_level)
    return settings


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="MFA_WORKERS",
    show_envvar=True,
    help="server processes (PostgreSQL only); one core each, background work in one of them",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP API (with the projections in-process unless MFA_PROJECTIONS=worker)."""
    import uvicorn

    from api.app import build_runtime, close_runtime, create_app
    from api.http_protocol import HTTP_PROTOCOL

    settings = _settings()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": HTTP_PROTOCOL,  # httptools, with a bound on the request head
        # uvicorn's lines go to the service's own log (its format, with times), at WARNING
        # or MFA_LOG_LEVEL if higher: its INFO banner is noise, and its own handler ignored
        # MFA_LOG_LEVEL=ERROR
        "log_config": None,
        "log_level": max(logging.WARNING, logging.getLevelName(settings.log_level)),
        "access_log": False,
    }
    listening = "the API listens on http://%s:%d (OpenAPI at /schema, readiness at /ready)"
    if workers == 1:
        with starting():
            app = create_app(settings)
        logging.getLogger("mfa").info(listening, host, port)
        uvicorn.run(app, **options)
        return
    if not settings.uses_postgres:
        raise click.BadParameter("several workers need MFA_DATABASE_URL=postgresql://...")
    # What would make every server process fail at start is found here, once, before forking
    # (uvicorn would start a failed process again and again).
    with starting():
        close_runtime(build_runtime(settings, run_projections=False))
    # Each process builds its own app; leases keep the projections and the relay in one.
    logging.getLogger("mfa").info(listening, host, port)
    uvicorn.run("api.app:create_app", factory=True, workers=workers, **options)


@main.command()
def worker() -> None:
    """Run the projections (and, once configured, the NATS relay) until stopped."""
    from api.app import build_runtime

    settings = _settings()
    with starting():
        runtime = build_runtime(settings, run_projections=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.start()
    relay = "on" if runtime.relay else "off (MFA_NATS_URL unset)"
    logging.getLogger("mfa").info("mfa worker: projections running, NATS relay %s", relay)
    stop.wait()
    runtime.stop()


@main.command()
@click.option("--sub", required=True, help="the user id (token subject)")
@click.option("--scope", default="", help='space-separated scopes, e.g. "mfa:admin"')
@click.option(
    "--ttl",
    type=click.IntRange(1, 366 * 86400),
    help="lifetime in seconds  [default: 3600, or MFA_JWT_MAX_TTL_SECONDS if lower]",
)
def token(sub: str, scope: str, ttl: int | None) -> None:
    """Print a development JWT signed with MFA_JWT_SECRET."""
    from api.auth import SCOPE_PATTERN

    _user_id(sub, "--sub")
    if not SCOPE_PATTERN.fullmatch(scope):
        raise click.BadParameter("printable ASCII scopes separated by spaces", param_hint="--scope")
    settings = _settings()
    if settings.jwt_public_key:
        raise click.ClickException(
            "the service takes RS256/ES256 tokens (MFA_JWT_PUBLIC_KEY): get them from the "
            "identity provider; mfa token signs only with MFA_JWT_SECRET"
        )
    if not settings.jwt_secret:
        raise click.ClickException("mfa token signs with MFA_JWT_SECRET, which is not set")
    if ttl is None:
        ttl = min(3600, settings.jwt_max_ttl_seconds)
    if ttl > settings.jwt_max_ttl_seconds:
        raise click.BadParameter(
            f"at most MFA_JWT_MAX_TTL_SECONDS ({settings.jwt_max_ttl_seconds}): the service "
            "refuses longer-lived tokens",
            param_hint="--ttl",
        )
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4())}
    if scope:
        claims["scope"] = scope
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    _echo(jwt.encode(claims, settings.jwt_secret, algorithm="HS256"))


@contextmanager
def _offline_runtime() -> Iterator[Any]:
    """The stores without background work (for the audit and projections commands), closed
    at the end. A URL that names no store the service wrote is refused: these commands
    create nothing. Two connections at least: a rebuild reads data keys while it holds a
    transaction (with one, it waited for itself and failed as if the database were down)."""
    from api.app import build_runtime, close_runtime

    settings = _settings(generate_secrets=False)  # (new ones would read nothing stored)
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = dataclasses.replace(settings, db_pool_size=max(2, settings.db_pool_size))
    with starting():
        runtime = build_runtime(settings, run_projections=False, create=False)
    try:
        yield runtime
    finally:
        close_runtime(runtime)


def _user_id(text: str, hint: str) -> str:
    """A user id as the API takes one (a usage error otherwise)."""
    if not is_user_id(text):
        raise click.BadParameter("1 to 256 characters, no control characters", param_hint=hint)
    return text


def _echo(line: str) -> None:
    """One line of output; a full disk is one `Error:` line, not a traceback."""
    try:
        click.echo(line)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise click.ClickException(f"could not write the output: {exc.strerror}") from None


# JSON allows them raw, but line readers break a line there: Python's `splitlines` at NEL
# (U+0085) and the other C1 separators, it and JavaScript at U+2028 and U+2029. User ids may
# hold C1 controls.
_LINE_BREAKERS = re.compile("[\u0080-\u009f\u2028\u2029]")


def _echo_json(value: object) -> None:
    """A JSON line, with C1 controls, U+2028 and U+2029 escaped (see _LINE_BREAKERS)."""
    text = msgspec.json.encode(value).decode()
    _echo(_LINE_BREAKERS.sub(lambda m: f"\\u{ord(m[0]):04x}", text))


def _echo_entries(entries: Iterable[dict[str, Any]]) -> int:
    """Audit entries as JSON lines, and how many; exit 1 after them when any was damaged."""
    count = damaged = 0
    for entry in entries:
        _echo_json(entry)
        count += 1
        damaged += entry["damaged"]
    if damaged:
        raise click.ClickException(
            f'{damaged} event(s) above ("damaged": true) do not decrypt with their key: the '
            "stored rows were altered or damaged"
        )
    return count


@main.group()
def audit() -> None:
    """Replay the log for auditors (secrets masked; erased users redacted)."""


@audit.command("history")
@click.argument("user")
@store_errors_in_one_line
def audit_history(user: str) -> None:
    """The user's events in order, as JSON lines."""
    from commands.app import user_aggregate_ids
    from projections.audit import user_history

    _user_id(user, "USER")
    with _offline_runtime() as runtime:
        ids = user_aggregate_ids(runtime.services, user)
        entries = (entry for agg in ids for entry in user_history(runtime.services.app, agg))
        if not _echo_entries(entries):  # (a mistyped id is not an empty history)
            raise click.ClickException(f"no MFA events for {user!r}")


# RFC 3339 date-time, the offset optional (then UTC). `datetime.fromisoformat` alone would
# also take a bare date, an hour, a week date or the basic format, each silently midnight or
# the start of the hour: an auditor who typed a day would get its first instant.
_AT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _rfc3339(text: str) -> datetime:
    """An RFC 3339 time as an aware UTC datetime (a usage error otherwise)."""
    try:
        if not _AT.fullmatch(text):
            raise ValueError(text)
        at = datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise click.BadParameter(f"not an RFC 3339 time: {text}", param_hint="--at") from exc


@audit.command("state")
@click.argument("user")
@click.option("--at", "at_text", required=True, help="RFC 3339 time, e.g. 2026-03-01T12:00:00Z")
@store_errors_in_one_line
def audit_state(user: str, at_text: str) -> None:
    """The user's MFA state as it was at a time, replayed from the events (across erasures:
    an erased epoch reads as redacted, with the time of its erasure)."""
    from commands.app import user_aggregate_ids
    from projections.audit import user_state_at

    _user_id(user, "USER")
    at = _rfc3339(at_text)
    with _offline_runtime() as runtime:
        ids = user_aggregate_ids(runtime.services, user)
        state = user_state_at(runtime.services.app, ids, at)
    if state is None:
        when = at.isoformat().replace("+00:00", "Z")  # as the JSON answers write times
        # (the user id as repr: no escapes or line breaks of its own reach the terminal)
        raise click.ClickException(f"no MFA events for {user!r} at or before {when}")
    _echo_json(state)


@audit.command("export")
@click.option(
    "--after",
    default=0,
    show_default=True,
    type=click.IntRange(0, 2**63 - 1),
    help="start after this log position",
)
@store_errors_in_one_line
def audit_export(after: int) -> None:
    """The whole log as JSON lines, streamed."""
    from projections.audit import export_log

    with _offline_runtime() as runtime:
        _echo_entries(export_log(runtime.services.app, after=after))


@main.group()
def projections() -> None:
    """Inspect and rebuild the read models."""


@projections.command("status")
@store_errors_in_one_line
def projections_status() -> None:
    """Each read model's position and lag behind the log, as JSON lines."""
    from projections.tracking import projection_status

    with _offline_runtime() as runtime:
        for status in projection_status(runtime.services.app, runtime.read_models):
            _echo_json(status)


@projections.command("rebuild")
@click.argument("name")
@click.option("--compare/--no-compare", default=True, help="compare with the live rows first")
@store_errors_in_one_line
def projections_rebuild(name: str, compare: bool) -> None:
    """Rebuild a read model from position 0 beside the live one, then swap it in."""
    from projections.rebuild import RebuildRunningError, rebuild_projection
    from projections.runner import default_projections

    names = [p.name for p in default_projections(relay=True)]
    if name not in names:
        raise click.BadParameter(f"unknown projection {name!r}; one of {', '.join(names)}")
    with _offline_runtime() as runtime:
        try:
            report = rebuild_projection(
                runtime.services.app, runtime.read_models, name, compare=compare
            )
        except RebuildRunningError as exc:
            raise click.ClickException(str(exc)) from None
    _echo_json(report)


if __name__ == "__main__":
    main()
