"""Which user each aggregate belongs to: the key other projections join on."""

from __future__ import annotations

from typing import Any, ClassVar

from domain.user_mfa import UserMfa
from infra.sql import Cursor
from projections.base import RELAY_SUBJECTS_DDL, USERS_DDL, iso


class UserProjection:
    """Follows `UserMfa.Created` into `mfa_users` (aggregate id → user id).

    With `forget_relay_subjects` (no NATS relay configured), an erasure also deletes the
    user's row of `mfa_relay_subjects`, the relay's own aggregate id → user id table. A relay
    deletes it itself once it has published `mfa.user.erased` with the user id as subject;
    a relay that ran once and was then switched off never would.
    """

    name: ClassVar[str] = "users"
    tables: ClassVar[tuple[str, ...]] = ("mfa_users",)

    def __init__(self, *, forget_relay_subjects: bool = False) -> None:
        self.forget_relay_subjects = forget_relay_subjects
        # Not among its tables (a rebuild does not copy the relay's): purged after erasures.
        self.also_deletes_from = ("mfa_relay_subjects",) if forget_relay_subjects else ()

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(USERS_DDL)
        if self.forget_relay_subjects:
            cur.execute(RELAY_SUBJECTS_DDL)

    def process(self, cur: Cursor, event: Any) -> None:
        if type(event) is UserMfa.UserErased:
            aggregate_id = str(event.originator_id)
            cur.execute("DELETE FROM mfa_users WHERE aggregate_id = %s", (aggregate_id,))
            if self.forget_relay_subjects:
                cur.execute(
                    "DELETE FROM mfa_relay_subjects WHERE aggregate_id = %s", (aggregate_id,)
                )
            return
        if type(event) is UserMfa.Created:
            cur.execute(
                "INSERT INTO mfa_users (aggregate_id, user_id, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (aggregate_id) DO NOTHING",
                (str(event.originator_id), event.user_id, iso(event.timestamp)),
            )
