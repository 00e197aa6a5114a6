"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NATS_URL, require_service
from tests.integration.nats_support import PrivateNats, nats_problem


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A nats-server of the test's own, with JetStream in a temporary folder."""
    require_service("NATS with JetStream", nats_problem(NATS_URL))
    server = PrivateNats(tmp_path / "nats-store").start()
    yield server
    server.stop()
