"""Auditors over HTTP: a user's event history (scope `mfa:admin`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency

from api.auth import admin_only
from api.deps import Limit, PageCursor, Runtime, UserIdPath, problems
from api.schemas.audit import AuditEventListResponse, AuditEventResponse
from commands.app import user_aggregate_ids
from projections.audit import user_history
from projections.base import InvalidCursorError, decode_cursor, encode_cursor


class AuditController(Controller):
    """`/admin/mfa/users/{user_id}/events`."""

    path = "/admin/mfa/users"
    guards = [admin_only]
    tags = ["audit"]

    @get("/{user_id:str}/events", sync_to_thread=True, responses=problems(403))
    def history(
        self,
        user_id: UserIdPath,
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> AuditEventListResponse:
        """The user's events in order: type, time, version, position, data with secrets masked."""
        epoch, after = 0, 0
        if cursor:
            epoch, after = decode_cursor(cursor, 2, (int, int))
            if epoch < 0 or after < 0:
                raise InvalidCursorError("malformed cursor")
        ids = user_aggregate_ids(runtime.services, user_id)
        entries: list[tuple[int, dict[str, Any]]] = []
        for index in range(epoch, len(ids)):
            start = after if index == epoch else 0
            history = user_history(
                runtime.services.app, ids[index], after_version=start, limit=limit + 1
            )
            entries += [(index, entry) for entry in history]
            if len(entries) > limit:
                break
        page = entries[:limit]
        next_cursor = (
            encode_cursor([page[-1][0], page[-1][1]["version"]]) if len(entries) > limit else None
        )
        return AuditEventListResponse(
            items=[AuditEventResponse(**entry) for _, entry in page], next_cursor=next_cursor
        )
