"""The `mfa` command on a bad configuration or an unreachable database: one line naming the
cause and exit 1, never a traceback; and MFA_LOG_LEVEL holds for `mfa serve`."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from click.testing import CliRunner

from api.app import build_runtime, close_runtime
from api.settings import Settings
from cli import main
from commands.backup_codes import generate_backup_codes
from infra.sql import DatabaseUnavailableError
from projections import rebuild
from projections.backup_codes import BackupCodeProjection
from projections.runner import ProjectionRunner
from tests.conftest import create_pg_database, drop_pg_database, make_settings, new_user
from tests.integration.test_faults import Service

MFA = Path(sys.executable).parent / "mfa"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": "",
        "MFA_JWT_SECRET": "cli-secret-" + "c" * 40,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    return subprocess.run(
        [str(MFA), *args],
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CASES = {
    "database url": ({"MFA_DATABASE_URL": "mysql://x/y"}, "MFA_DATABASE_URL"),
    "master key": ({"MFA_MASTER_KEY": "not-base64!!"}, "MFA_MASTER_KEY"),
    "number": ({"MFA_STEP_UP_TTL_SECONDS": "abc"}, "MFA_STEP_UP_TTL_SECONDS"),
    "range": ({"MFA_HANDLER_THREADS": "-3"}, "MFA_HANDLER_THREADS"),
    "log level": ({"MFA_LOG_LEVEL": "verbose"}, "MFA_LOG_LEVEL"),
    "smtp url": ({"MFA_SMTP_URL": "ftp://x"}, "MFA_SMTP_URL"),
    "public key": ({"MFA_JWT_SECRET": "", "MFA_JWT_PUBLIC_KEY": "garbage"}, "MFA_JWT_PUBLIC_KEY"),
    "nats url": ({"MFA_NATS_URL": "garbage"}, "MFA_NATS_URL"),
    "push webhook url": ({"MFA_PUSH_WEBHOOK_URL": "garbage"}, "MFA_PUSH_WEBHOOK_URL"),
    "webauthn origin": ({"MFA_WEBAUTHN_ORIGINS": "localhost:8000"}, "MFA_WEBAUTHN_ORIGINS"),
    "webauthn rp id": ({"MFA_WEBAUTHN_RP_ID": "https://example.com/x"}, "MFA_WEBAUTHN_RP_ID"),
    "email from": ({"MFA_EMAIL_FROM": "not an address"}, "MFA_EMAIL_FROM"),
    "no database": (
        {"MFA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/mfa"},
        "cannot open the database",
    ),
}


@pytest.mark.parametrize(("env", "named"), CASES.values(), ids=CASES)
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["audit", "export"]])
def test_a_bad_configuration_is_one_line_naming_it_and_exit_1(
    tmp_path: Path, command: list[str], env: dict[str, str], named: str
) -> None:
    done = run(tmp_path, *command, **env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert named in error, done.stderr


@pytest.mark.parametrize(
    "content",
    [
        "",  # a crash between creating the file and writing it
        "{}",  # was a KeyError: a traceback on every command
        '{"MFA_JWT_SECRET": "Hunter2-secret", "MFA_MASTER_KEY": "SHVudGVyMg=="}',
    ],
    ids=["empty", "no keys", "bad master key"],
)
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["audit", "export"]])
def test_a_damaged_development_secrets_file_is_one_line_naming_it_and_exit_1(
    tmp_path: Path, command: list[str], content: str
) -> None:
    path = tmp_path / "var" / "dev-secrets.json"
    path.parent.mkdir()
    path.write_text(content)
    done = run(tmp_path, *command, MFA_JWT_SECRET="", MFA_MASTER_KEY="")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert str(path) in error, done.stderr
    assert "delete it only if no stored data depends on its master key" in error
    assert "Hunter2" not in done.stderr
    assert "SHVudGVyMg" not in done.stderr
    assert path.read_text() == content


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:Hunter2%zzTopSecret@127.0.0.1:1/mfa",  # a bad %-escape
        "postgresql://postgres:Hunter2@TopSecret@127.0.0.1:1/mfa",  # an @ not escaped
        "postgresql://postgres:Hunter2/Top%zzSecret@127.0.0.1:1/mfa",  # a / not escaped
        "postgresql://postgres:Hunter2/Top Secret@127.0.0.1:1/mfa",  # a space
        "postgresql://postgres@127.0.0.1:1/mfa?password=Hunter2%zzTopSecret",  # in the query
    ],
)
def test_a_database_url_libpq_cannot_read_is_named_without_its_password(
    tmp_path: Path, url: str
) -> None:
    """libpq quotes what it could not read, which here is (part of) the password."""
    done = run(tmp_path, "projections", "status", MFA_DATABASE_URL=url)
    assert done.returncode == 1, done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "MFA_DATABASE_URL" in error or "cannot open the database" in error
    assert "Hunter2" not in done.stderr
    assert "TopSecret" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("MFA_SMS_WEBHOOK_URL", "https://AC123:Hunter2+Top/Secret==@sms.example/send"),
        ("MFA_SMS_WEBHOOK_URL", "https://Hunter2@sms.example:99999999/send"),
        ("MFA_SMTP_URL", "smtp://mailer:Hunter2[Top@mail.example"),
        ("MFA_SMTP_URL", "smtps://mailer:Top?Hunter2@mail.example"),  # was "unknown parameters"
        ("MFA_SMTP_URL", "smtps://mailer:Top#Hunter2@mail.example"),
        ("MFA_NATS_URL", "nats://mfa:Hunter2/Top@nats.example:4222"),
        ("MFA_NATS_URL", "mfa:Hunter2@nats.example:4222"),  # no scheme: "mfa" would be one
        ("MFA_PUSH_WEBHOOK_URL", "https://gw:Hunter2+Top/Secret==@push.example/send"),
    ],
)
def test_a_provider_url_urllib_cannot_split_is_named_without_its_password(
    tmp_path: Path, variable: str, url: str
) -> None:
    """urllib's own message quoted the "port", which was the start of an unescaped password
    (provider tokens are often base64, with a `/`), and named no variable."""
    done = run(tmp_path, "audit", "export", **{variable: url})
    assert done.returncode == 1, done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert variable in error
    assert "Hunter2" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("separator", ["?", "#"])
def test_a_database_password_libpq_reads_but_urllib_does_not_is_never_printed(
    tmp_path: Path, postgres_admin_url: str, separator: str
) -> None:
    """libpq takes a `?` or `#` in the password as part of it; urllib took it for the query
    or fragment, and the event store's set-up quoted the password's start back as a port
    it could not read ("Port could not be cast to integer value as 'Hunter2'")."""
    url = create_pg_database(postgres_admin_url)
    try:
        user, _, rest = url.partition("@")
        with_password = f"{user}:Hunter2{separator}TopSecret@{rest}"  # trust auth: ignored
        settings = make_settings(tmp_path, with_password)
        close_runtime(build_runtime(settings, run_projections=False))  # the service's tables
        done = run(tmp_path, "projections", "status", MFA_DATABASE_URL=with_password)
        assert done.returncode == 0, done.stderr
        failed = run(tmp_path, "projections", "status", MFA_DATABASE_URL=with_password + "x")
        assert failed.returncode == 1
        assert "Hunter2" not in failed.stderr + done.stderr
        assert "TopSecret" not in failed.stderr + done.stderr
    finally:
        drop_pg_database(postgres_admin_url, url)


def test_a_master_key_that_unwraps_nothing_is_one_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'var' / 'mfa.sqlite'}")
    runtime = build_runtime(settings, run_projections=False)
    generate_backup_codes(runtime.services, "someone")  # a data key wrapped by one master key
    close_runtime(runtime)
    done = run(tmp_path, "audit", "export")  # ... read with another (run() makes a new one)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "MFA_MASTER_KEY" in done.stderr


def test_mfa_token_refuses_what_the_service_would_refuse(tmp_path: Path) -> None:
    for args in (
        ["--sub", ""],
        ["--sub", "a\tb"],
        ["--sub", "x", "--ttl", "0"],
        ["--sub", "x", "--ttl", "86401"],  # longer than MFA_JWT_MAX_TTL_SECONDS
        ["--sub", "x", "--scope", "openid\u00a0mfa:admin"],
    ):
        done = run(tmp_path, "token", *args)
        assert done.returncode == 2, (args, done.stderr)
    public_key_only = run(
        tmp_path, "token", "--sub", "x", MFA_JWT_SECRET="", MFA_JWT_PUBLIC_KEY=_pem()
    )
    assert public_key_only.returncode == 1
    assert "MFA_JWT_PUBLIC_KEY" in public_key_only.stderr


def test_mfa_token_lasts_no_longer_than_the_service_accepts(tmp_path: Path) -> None:
    """Its default hour was refused (exit 2) under a shorter MFA_JWT_MAX_TTL_SECONDS."""
    done = run(tmp_path, "token", "--sub", "x", MFA_JWT_MAX_TTL_SECONDS="600")
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
    longer = run(tmp_path, "token", "--sub", "x", "--ttl", "601", MFA_JWT_MAX_TTL_SECONDS="600")
    assert longer.returncode == 2
    assert "MFA_JWT_MAX_TTL_SECONDS" in longer.stderr


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _served(tmp_path: Path, log_level: str) -> dict[str, str]:
    """The environment of an `mfa serve` on SQLite, logging at `log_level`."""
    return {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": "",
        "MFA_JWT_SECRET": "fault-test-secret-" + "f" * 32,
        "MFA_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "MFA_LOG_LEVEL": log_level,
    }


def test_mfa_log_level_holds_for_the_server(tmp_path: Path) -> None:
    """Litestar's default logging set the root logger to INFO again after the service had
    set it from MFA_LOG_LEVEL."""
    env = _served(tmp_path, "warning")
    log = tmp_path / "serve.log"
    service = Service(env, log).start()
    try:
        with service.client("someone") as client:
            assert client.post("/mfa/backup-codes/generate").status_code == 201
    finally:
        service.stop()
    lines = log.read_text().splitlines()
    assert any("WARNING" in line for line in lines), lines  # the log works...
    assert not [line for line in lines if " INFO " in line]  # ... and INFO stays out


def test_at_debug_the_log_holds_the_services_lines_not_a_librarys_locale_search(
    tmp_path: Path,
) -> None:
    """faker, which Litestar imports for OpenAPI examples, wrote 46 DEBUG lines about the
    locales it looked for at every start."""
    log = tmp_path / "serve.log"
    service = Service(_served(tmp_path, "debug"), log).start()
    with service.client("someone") as client:
        assert client.post("/mfa/backup-codes/generate").status_code == 201
    service.stop()
    lines = log.read_text().splitlines()
    assert any("projection lease acquired" in line for line in lines), lines[:20]  # INFO on
    assert not [line for line in lines if " faker" in line], lines[:20]


def test_the_server_says_where_it_listens_and_only_the_api_warns_about_delivery(
    tmp_path: Path,
) -> None:
    """uvicorn's banner is off (its log level is `warning`): after `make run` nothing said
    the API was up. And the audit and projections commands, which send nothing, warned that
    codes would be written to the log."""
    env = _served(tmp_path, "info")
    log = tmp_path / "serve.log"
    service = Service(env, log).start()
    service.stop()
    text = log.read_text()
    assert f"the API listens on http://127.0.0.1:{service.port}" in text, text
    assert "codes are written to the log" in text
    exported = run(tmp_path, "audit", "export", **env)
    assert exported.returncode == 0, exported.stderr
    assert "codes are written to the log" not in exported.stderr


def test_the_database_going_away_during_a_rebuild_is_one_line_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only failures at start were one line; one during the command was a traceback."""
    settings, env = _backup_codes_projected(tmp_path, users=3)
    before = _backup_code_rows(settings)
    fill = rebuild._catch_up
    calls: list[int] = []

    def going_away(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 2:  # the swap's catch-up
            raise DatabaseUnavailableError("server closed the connection unexpectedly")
        return fill(*args, **kwargs)

    monkeypatch.setattr(rebuild, "_catch_up", going_away)
    failed = CliRunner().invoke(main, ["projections", "rebuild", "backup_codes"], env=env)
    assert failed.exit_code == 1, failed.output
    assert isinstance(failed.exception, SystemExit)  # a ClickException, not a traceback
    assert "database became unavailable (DatabaseUnavailableError)" in failed.output
    monkeypatch.setattr(rebuild, "_catch_up", fill)
    again = CliRunner().invoke(main, ["projections", "rebuild", "backup_codes"], env=env)
    assert again.exit_code == 0, again.output
    assert '"matched_live":true' in again.output
    assert _backup_code_rows(settings) == before


def _backup_codes_projected(tmp_path: Path, users: int) -> tuple[Settings, dict[str, str]]:
    """A SQLite store where `users` users generated backup codes, projected; and the
    environment under which `mfa` opens it."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'var' / 'mfa.sqlite'}")
    runtime = build_runtime(settings, run_projections=False)
    try:
        for _ in range(users):
            generate_backup_codes(runtime.services, new_user())
        ProjectionRunner(runtime.services.app, runtime.read_models).catch_up()
    finally:
        close_runtime(runtime)
    return settings, {
        "MFA_DATA_DIR": str(tmp_path / "var"),
        "MFA_DATABASE_URL": settings.database_url,
        "MFA_JWT_SECRET": settings.jwt_secret or "",
        "MFA_MASTER_KEY": base64.b64encode(settings.master_key).decode(),
    }


def _backup_code_rows(settings: Settings) -> list[Any]:
    runtime = build_runtime(settings, run_projections=False)
    try:
        with runtime.db.read() as cur:
            cur.execute("SELECT * FROM mfa_backup_codes ORDER BY user_id")
            return list(cur.fetchall())
    finally:
        close_runtime(runtime)


@pytest.mark.parametrize(
    "refusal",
    [
        sqlite3.IntegrityError("NOT NULL constraint failed: mfa_backup_codes.code_hash"),
        sqlite3.OperationalError("no such column: code_hash"),  # an SQL mistake, not an outage
    ],
    ids=type,
)
def test_a_row_a_read_model_refuses_during_a_rebuild_is_not_called_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: sqlite3.Error
) -> None:
    """Running it again cannot cure a refused row (a bug): "the database became unavailable;
    run the command again" would send the operator the wrong way."""
    _, env = _backup_codes_projected(tmp_path, users=1)

    def refuses(self: Any, cur: Any, event: Any) -> None:
        raise refusal

    monkeypatch.setattr(BackupCodeProjection, "process", refuses)
    failed = CliRunner().invoke(main, ["projections", "rebuild", "backup_codes"], env=env)
    assert failed.exit_code == 1
    assert isinstance(failed.exception, type(refusal))
    assert "database became unavailable" not in failed.output


@pytest.mark.postgres
def test_a_privilege_the_role_lacks_at_start_is_named_not_called_an_unreadable_url(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    """PostgreSQL 15 grants no CREATE on schema public to a role that does not own the
    database; that refusal is a ProgrammingError too, like libpq's URL parse errors. (The
    store exists, written by its owner: the read-only commands refuse a database without.)"""
    url = create_pg_database(postgres_admin_url)
    close_runtime(build_runtime(make_settings(tmp_path / "owner", url), run_projections=False))
    role = f"mfa_limited_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        limited = url.replace("://postgres@", f"://{role}@", 1)
        assert limited != url
        done = run(tmp_path, "projections", "status", MFA_DATABASE_URL=limited)
        assert done.returncode == 1, done.stderr
        [error] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert "permission denied" in error, error
        assert "cannot be read as a PostgreSQL URL" not in error
    finally:
        drop_pg_database(postgres_admin_url, url)
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("command", [["audit", "export"], ["projections", "status"]])
def test_read_only_commands_refuse_a_database_the_service_never_wrote_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """An auditor's typo in the database name read as an empty log (exit 0), and left the
    service's tables behind in whatever database it named."""
    done = run(tmp_path, *command, MFA_DATABASE_URL=f"sqlite:///{tmp_path / 'typo.sqlite'}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "names no MFA event store" in done.stderr
    assert not list(tmp_path.glob("typo*")), list(tmp_path.iterdir())


@pytest.mark.postgres
def test_read_only_commands_create_no_table_in_a_postgresql_database(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    url = create_pg_database(postgres_admin_url)
    try:
        done = run(tmp_path, "audit", "history", "alice", MFA_DATABASE_URL=url)
        assert done.returncode == 1, done.stderr
        assert "names no MFA event store" in done.stderr
        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
        assert tables == (0,)
    finally:
        drop_pg_database(postgres_admin_url, url)


@pytest.mark.postgres
def test_a_rebuild_works_with_a_pool_of_one_connection(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    """The rebuild reads data keys while it holds a transaction: with one connection it
    waited for itself and failed as if the database were down, on every run."""
    url = create_pg_database(postgres_admin_url)
    try:
        settings = make_settings(tmp_path / "owner", url)
        runtime = build_runtime(settings, run_projections=False)
        try:
            for _ in range(20):  # (the start-up check of the master key caches a data key)
                generate_backup_codes(runtime.services, new_user())
        finally:
            close_runtime(runtime)
        env = {
            "MFA_DATABASE_URL": url,
            "MFA_DB_POOL_SIZE": "1",
            "MFA_JWT_SECRET": settings.jwt_secret or "",
            "MFA_MASTER_KEY": base64.b64encode(settings.master_key).decode(),
        }
        done = run(tmp_path, "projections", "rebuild", "users", **env)
        assert done.returncode == 0, done.stderr
        assert '"matched_live"' in done.stdout
    finally:
        drop_pg_database(postgres_admin_url, url)


def test_audit_output_is_one_line_per_event_and_bad_users_and_full_disks_are_one_line(
    tmp_path: Path,
) -> None:
    """U+2028 or NEL (a C1 control, which user ids may hold) in a user id split an export
    line for line readers; a user id that is not UTF-8 was a traceback; so was a full disk."""
    settings, env = _backup_codes_projected(tmp_path, users=0)
    runtime = build_runtime(settings, run_projections=False)
    users = ("line\u2028separated", 'next\x85{"position": 1}')
    try:
        for user in users:
            generate_backup_codes(runtime.services, user)
    finally:
        close_runtime(runtime)
    for user in users:
        history = run(tmp_path, "audit", "history", user, **env)
        assert history.returncode == 0, history.stderr
        assert len(history.stdout.splitlines()) == 2  # created, generated

    for user in ("\udcff", "tab\there", ""):
        refused = CliRunner().invoke(main, ["audit", "history", user], env=env)
        assert refused.exit_code == 2, (user, refused.output)
        assert "no control characters" in refused.output

    if Path("/dev/full").exists():
        full = subprocess.run(
            f"{MFA} audit export > /dev/full",
            shell=True,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        assert "could not write the output" in full.stderr


@pytest.mark.postgres
def test_a_store_is_found_whatever_search_path_the_url_gives(
    tmp_path: Path, postgres_admin_url: str
) -> None:
    """The event store lives in `public` (the URL's options reach the read models only): a
    search_path there made the read-only commands say no store existed."""
    from urllib.parse import quote

    from infra.event_store import missing_event_store_tables

    url = create_pg_database(postgres_admin_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA read_models")
        scoped = url + "?options=" + quote("-c search_path=read_models")
        assert missing_event_store_tables(scoped) == ["mfa_events", "mfa_snapshots"]
        close_runtime(build_runtime(make_settings(tmp_path, scoped), run_projections=False))
        assert missing_event_store_tables(scoped) == []
    finally:
        drop_pg_database(postgres_admin_url, url)


LOG_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ .+"


def test_every_command_logs_in_the_services_format_from_its_first_line(tmp_path: Path) -> None:
    """The development-secrets warning, written while the settings are read, came out bare
    (`mfa serve`, `mfa worker`, `mfa token`) or as `WARNING:mfa.settings:...` (`mfa audit`,
    `mfa projections`), and `mfa worker` announced itself in a bare line."""
    import re

    development = {"MFA_JWT_SECRET": "", "MFA_MASTER_KEY": ""}
    database = {"MFA_DATABASE_URL": f"sqlite:///{tmp_path / 'mfa.sqlite'}"}
    token = run(tmp_path, "token", "--sub", "someone", **development)
    assert token.returncode == 0, token.stderr
    worker = subprocess.Popen(
        [str(MFA), "worker"],
        env={**os.environ, "MFA_DATA_DIR": str(tmp_path / "var"), **development, **database},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    first: list[str] = []  # up to its start line (the runner's own lines may come first)
    while len(first) < 10 and not any("projections running" in line for line in first):
        first.append(worker.stderr.readline())
    worker.terminate()
    worker.wait(timeout=30)
    exported = run(tmp_path, "audit", "export", **development, **database)
    assert exported.returncode == 0, exported.stderr
    lines = [*token.stderr.splitlines(), *first, *exported.stderr.splitlines()]
    assert sum("DEVELOPMENT secrets" in line for line in lines) == 3, lines
    assert any("projections running" in line for line in lines), lines
    assert [line for line in lines if not re.fullmatch(LOG_LINE, line.rstrip("\n"))] == []
