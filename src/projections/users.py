"""Which user each aggregate belongs to: the key other projections join on."""

from __future__ import annotations

from typing import Any, ClassVar

from domain.user_mfa import UserMfa
from infra.sql import Cursor
from projections.base import USERS_DDL, iso


class UserProjection:
    """Follows `UserMfa.Created` into `mfa_users` (aggregate id → user id)."""

    name: ClassVar[str] = "users"
    tables: ClassVar[tuple[str, ...]] = ("mfa_users",)

    def create_tables(self, cur: Cursor) -> None:
        cur.execute(USERS_DDL)

    def process(self, cur: Cursor, event: Any) -> None:
        if type(event) is UserMfa.UserErased:
            cur.execute(
                "DELETE FROM mfa_users WHERE aggregate_id = %s", (str(event.originator_id),)
            )
            return
        if type(event) is UserMfa.Created:
            cur.execute(
                "INSERT INTO mfa_users (aggregate_id, user_id, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (aggregate_id) DO NOTHING",
                (str(event.originator_id), event.user_id, iso(event.timestamp)),
            )
