"""One live stack per test module and backend (SQLite, then PostgreSQL).

Starting a server costs about a second on SQLite and two on PostgreSQL, so the security tests
share one per module; every test works with users of its own, and the clock only moves
forwards, so they do not disturb each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.app import build_runtime
from tests.conftest import (
    LiveServer,
    MutableClock,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_settings,
)
from tests.integration.nats_support import PrivateNats
from tests.security.support import PushEndpoint, Stack
from tests.support.delivery import SmsProvider, SmtpServer


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The event store URL of this module's stack, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'mfa.sqlite'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_pg_database(admin)
    yield url
    drop_pg_database(admin, url)


@pytest.fixture(scope="module")
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture(scope="module")
def with_nats() -> bool:
    """Whether the stack publishes to a private nats-server (a module overrides this)."""
    return False


@pytest.fixture(scope="module")
def stack(
    backend: str,
    clock: MutableClock,
    with_nats: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    sms = SmsProvider().start()
    smtp = SmtpServer(free_port()).start()
    push = PushEndpoint().start()
    nats = PrivateNats(tmp_path_factory.mktemp("nats")).start() if with_nats else None
    overrides = {
        "MFA_SMS_WEBHOOK_URL": sms.url,
        "MFA_SMTP_URL": smtp.url,
        "MFA_EMAIL_FROM": "mfa@example.org",
        "MFA_PUSH_ALLOW_PRIVATE": "1",
    }
    if nats is not None:
        overrides["MFA_NATS_URL"] = nats.url
    settings = make_settings(tmp_path_factory.mktemp("stack"), backend, **overrides)
    server = LiveServer(runtime=build_runtime(settings, clock=clock), clock=clock).start()
    try:
        yield Stack(server=server, sms=sms, smtp=smtp, push=push, nats=nats)
    finally:
        server.stop()
        push.stop()
        smtp.stop()
        sms.stop()
        if nats is not None:
            nats.stop()


@pytest.fixture(scope="module")
def server(stack: Stack) -> LiveServer:
    return stack.server
