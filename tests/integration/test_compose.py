"""compose.yaml, the Dockerfile and docs/operations.md agree with the settings the code reads.

Decision: every compose service declares its own healthcheck. The image's HEALTHCHECK probes
`mfa serve` over HTTP, which the worker (no HTTP port) must override, so api and worker
both spell theirs out instead of inheriting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("postgres", "nats", "api", "worker")
MFA_SERVICES = ("api", "worker")


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = load_compose()["services"]
    return dict(services[name])


def environment_of(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment, given as a mapping or as a list of KEY=VALUE."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_of(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, arguments = stripped.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_compose_defines_postgres_nats_api_and_worker() -> None:
    assert set(SERVICES) <= set(load_compose()["services"])


def test_nats_runs_with_jetstream() -> None:
    assert "-js" in command_of(service("nats"))


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_declares_a_healthcheck(name: str) -> None:
    healthcheck = service(name).get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    assert healthcheck.get("test"), f"{name}'s healthcheck has no test"


def test_the_api_healthcheck_probes_the_health_endpoint() -> None:
    probe = " ".join(str(part) for part in service("api")["healthcheck"]["test"])
    assert "/health" in probe


@pytest.mark.parametrize("name", MFA_SERVICES)
def test_services_start_only_after_their_dependencies_are_healthy(name: str) -> None:
    depends_on = service(name).get("depends_on")
    assert isinstance(depends_on, dict), "depends_on must name a condition per service"
    assert {"postgres", "nats"} <= set(depends_on)
    for dependency, spec in depends_on.items():
        assert spec.get("condition") == "service_healthy", dependency


@pytest.mark.parametrize("name", SERVICES)
def test_every_mfa_variable_in_compose_is_one_the_service_reads(name: str) -> None:
    used = {key for key in environment_of(service(name)) if key.startswith("MFA_")}
    unknown = used - set(ENVIRONMENT)
    assert not unknown, f"{name} sets variables the service never reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", MFA_SERVICES)
def test_api_and_worker_use_postgresql_and_nats(name: str) -> None:
    env = environment_of(service(name))
    assert env["MFA_DATABASE_URL"].startswith("postgresql://")
    assert env["MFA_NATS_URL"].startswith("nats://")


@pytest.mark.parametrize("name", MFA_SERVICES)
def test_projections_run_in_the_worker_not_the_api(name: str) -> None:
    assert environment_of(service(name))["MFA_PROJECTIONS"] == "worker"


def test_the_worker_runs_mfa_worker_and_the_api_runs_mfa_serve() -> None:
    assert command_of(service("worker"))[:2] == ["mfa", "worker"]
    assert command_of(service("api"))[:2] == ["mfa", "serve"]


@pytest.mark.parametrize("name", MFA_SERVICES)
@pytest.mark.parametrize("secret", ["MFA_JWT_SECRET", "MFA_MASTER_KEY"])
def test_secrets_are_required_from_the_host_environment(name: str, secret: str) -> None:
    value = environment_of(service(name))[secret]
    assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", value), value


def test_the_operations_doc_names_every_environment_variable() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in doc]
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage of the Dockerfile sets no USER"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0", "")


def test_the_image_checks_its_health_and_serves_on_all_interfaces() -> None:
    stage = dict(final_stage())
    assert "/health" in stage["HEALTHCHECK"]
    assert stage["EXPOSE"] == "8000"
    assert stage["CMD"] == '["mfa", "serve", "--host", "0.0.0.0"]'
