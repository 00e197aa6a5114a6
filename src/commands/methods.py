"""Commands across methods: remove a method, choose the primary credential."""

from __future__ import annotations

from commands.app import Outcome, Services, execute


def remove_method(services: Services, user_id: str, method: str) -> Outcome[None]:
    """Remove every credential of one method."""
    return execute(services, user_id, lambda mfa, now: mfa.remove_method(method, now), create=False)


def set_primary(services: Services, user_id: str, credential_id: str) -> Outcome[str]:
    """Make a credential the primary one; the value is its method."""
    return execute(
        services, user_id, lambda mfa, now: mfa.set_primary(credential_id, now), create=False
    )
