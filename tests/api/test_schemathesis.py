"""The OpenAPI contract: Schemathesis drives the running service from `/schema/openapi.json`.

One uvicorn server per event store (SQLite, then PostgreSQL) for the module. Each identity
fuzzes the operations it may call (positive and negative data, every phase but stateful),
and every response must be one the document describes: status, content type and body
(problems included). Without a valid token every `/mfa`, `/admin` and `/internal`
operation must answer 401. Generation is derandomized and bounded per operation so that
this file stays within a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import build_runtime
from tests.conftest import (
    LiveServer,
    MutableClock,
    create_pg_database,
    drop_pg_database,
    make_settings,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
PROTECTED = ("/mfa/", "/admin/", "/internal/")
PUBLIC_PATHS = r"^/(health|ready|\.well-known/)"


def bounded(max_examples: int) -> Any:
    """Hypothesis settings for one operation: few examples, reproducible, no example database."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The service on each event store: PostgreSQL refuses some input SQLite takes."""
    tmp = tmp_path_factory.mktemp("contract")
    clock = MutableClock()
    admin = request.getfixturevalue("postgres_admin_url") if request.param == "postgres" else ""
    url = create_pg_database(admin) if admin else f"sqlite:///{tmp / 'mfa.sqlite'}"
    server = LiveServer(runtime=build_runtime(make_settings(tmp, url), clock=clock), clock=clock)
    server.start()
    yield server
    server.stop()
    if admin:
        drop_pg_database(admin, url)


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 reads `Node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def foreign_token(sub: str) -> str:
    """A well-formed token signed with a secret the service does not know."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 3600, "scope": "mfa:admin mfa:internal"}
    return jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")


def contract(live: LiveServer, token: str | None) -> schemathesis.BaseSchema:
    """The service's own document; the token goes with every request (as configured headers,
    so that negative cases never drop or mangle it)."""
    loaded = schemathesis.openapi.from_url(live.url + "/schema/openapi.json")
    if token is not None:
        loaded.config.update(headers=bearer(token))
    return loaded


@pytest.fixture(scope="module")
def as_user(live: LiveServer) -> schemathesis.BaseSchema:
    return contract(live, live.token("contract-user"))


@pytest.fixture(scope="module")
def as_admin(live: LiveServer) -> schemathesis.BaseSchema:
    return contract(live, live.token("contract-admin", "mfa:admin"))


@pytest.fixture(scope="module")
def as_service(live: LiveServer) -> schemathesis.BaseSchema:
    return contract(live, live.token("contract-service", "mfa:internal"))


@pytest.fixture(scope="module")
def anonymous(live: LiveServer) -> schemathesis.BaseSchema:
    return contract(live, None)


@pytest.fixture(scope="module")
def as_stranger(live: LiveServer) -> schemathesis.BaseSchema:
    return contract(live, foreign_token("intruder"))


USER = schemathesis.pytest.from_fixture("as_user")
ADMIN = schemathesis.pytest.from_fixture("as_admin")
SERVICE = schemathesis.pytest.from_fixture("as_service")
ANONYMOUS = schemathesis.pytest.from_fixture("anonymous")
STRANGER = schemathesis.pytest.from_fixture("as_stranger")


def call(case: schemathesis.Case) -> schemathesis.Response:
    """Send a case and run the checks. The configured token is also named explicitly, so that
    `ignored_auth` takes it for a real one (and probes without it and with a wrong one)."""
    headers = case.operation.schema.config.headers_for(operation=case.operation)
    return case.call_and_validate(headers=headers, checks=CHECKS)


def refused_without_valid_token(case: schemathesis.Case, status: int) -> None:
    """Every protected operation answers 401 (cases probing another method excepted: 405)."""
    if case.operation.path.startswith(PROTECTED) and case.method == case.operation.method.upper():
        assert status == 401, f"{case.operation.label} answered {status} without a valid token"


@USER.include(path_regex=rf"^/mfa/|{PUBLIC_PATHS}").parametrize()
@bounded(max_examples=20)
def test_as_a_user(case: schemathesis.Case) -> None:
    call(case)


@ADMIN.include(path_regex=r"^/admin/|^/mfa/status/").parametrize()
@bounded(max_examples=20)
def test_as_an_admin(case: schemathesis.Case) -> None:
    call(case)


@SERVICE.include(path_regex=r"^/internal/").parametrize()
@bounded(max_examples=20)
def test_as_an_internal_service(case: schemathesis.Case) -> None:
    call(case)


@ANONYMOUS.parametrize()
@bounded(max_examples=5)
def test_without_a_token(case: schemathesis.Case) -> None:
    refused_without_valid_token(case, call(case).status_code)


@STRANGER.parametrize()
@bounded(max_examples=5)
def test_with_a_foreign_token(case: schemathesis.Case) -> None:
    refused_without_valid_token(case, call(case).status_code)
