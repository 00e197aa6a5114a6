"""The auditor's state of a user at a time says what the live service said then."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest

from api.app import Runtime, build_runtime
from commands.app import aggregate_id, user_aggregate_ids
from commands.backup_codes import generate_backup_codes
from commands.methods import set_primary
from commands.totp import disable_totp_device, set_up_totp, verify_totp
from projections.audit import state_at, user_state_at
from tests.conftest import MutableClock, close_runtime, make_settings, new_user


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def runtime(tmp_path: Path, clock: MutableClock) -> Iterator[Runtime]:
    runtime = build_runtime(
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'mfa.sqlite'}"),
        clock=clock,
        run_projections=False,
    )
    yield runtime
    close_runtime(runtime)


def test_a_disabled_primary_device_is_not_the_primary_method(
    runtime: Runtime, clock: MutableClock
) -> None:
    """The live API answers `primary_method: null` while the chosen device is disabled; the
    auditor's state said `totp`, beside `mfa_enabled: false`."""
    services, user = runtime.services, new_user()
    setup = set_up_totp(services, user, "phone").value
    device_id = setup.device.device_id
    verify_totp(services, user, pyotp.TOTP(setup.secret).at(clock.now()), device_id)
    set_primary(services, user, device_id)
    clock.advance(1)
    primary = user_state_at(services.app, user_aggregate_ids(services, user), clock.now())
    assert primary is not None
    assert (primary["primary_method"], primary["primary_credential_id"]) == ("totp", device_id)

    disable_totp_device(services, user, device_id)
    clock.advance(1)
    state = user_state_at(services.app, user_aggregate_ids(services, user), clock.now())
    assert state is not None
    assert (state["primary_method"], state["primary_credential_id"]) == (None, None)
    assert state["mfa_enabled"] is False


def test_a_replay_to_a_time_stops_at_the_first_event_stamped_after_it(
    runtime: Runtime, clock: MutableClock
) -> None:
    """An instance whose clock was more than 5 s behind stamps its events earlier than the
    user's last one. The replay to 12:00:05 took in the event of 12:00:10 that came before
    that late one, and showed codes generated after the time asked about."""
    services, user = runtime.services, new_user()
    start = clock.now()  # 12:00:00
    generate_backup_codes(services, user)  # at 12:00:00
    first = services.app.repository.get(aggregate_id(services, user)).version
    clock.advance(10)
    generate_backup_codes(services, user)  # at 12:00:10
    clock.advance(-10)  # another instance, 10 s behind: not held to the last event's time
    generate_backup_codes(services, user)  # stamped 12:00:00
    last = services.app.repository.get(aggregate_id(services, user)).version

    state = state_at(services.app, aggregate_id(services, user), start + timedelta(seconds=5))
    assert state is not None
    assert state["version"] == first
    assert state["backup_codes"]["generated_at"] == start
    later = state_at(services.app, aggregate_id(services, user), start + timedelta(seconds=10))
    assert later is not None
    assert later["version"] == last
