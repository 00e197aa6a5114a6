"""Admin configuration: the IP allowlist and the config audit log.

Changes go through the same helpers as the risk policies (`api.controllers.config`): each
records the acting admin and the request id, which is echoed back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import Principal, admin_only
from api.controllers.config import changed, changed_by, invalid_value_handler
from api.deps import Limit, PageCursor, Runtime, TimeQuery, parse_time, problems
from api.schemas.config import (
    AllowlistEntryBody,
    AllowlistEntryDeletedResponse,
    AllowlistEntryListResponse,
    AllowlistEntryResponse,
    ConfigAuditLogEntryResponse,
    ConfigAuditLogListResponse,
)
from commands import config as config_commands
from commands.config import AllowlistEntryDraft
from domain.allowlist import AllowlistEntry
from domain.risk import InvalidValueError
from projections.audit_log import RESOURCE_TYPES, list_config_audit_log
from projections.base import InvalidCursorError, decode_cursor, encode_cursor

EntryIdPath = Annotated[str, PathParameter(min_length=1, max_length=128)]
ResourceType = Annotated[
    str | None, QueryParameter(pattern=rf"^({'|'.join(RESOURCE_TYPES)})$(?!\n)")
]
Actor = Annotated[str | None, QueryParameter(min_length=1, max_length=256)]


def entry_response(entry: AllowlistEntry, now: datetime) -> AllowlistEntryResponse:
    return AllowlistEntryResponse(
        id=entry.entry_id,
        cidr=entry.cidr,
        description=entry.description,
        expires_at=entry.expires_at,
        expired=not entry.is_active(now),
        too_broad=entry.too_broad(),
        created_by=entry.created_by,
        created_at=entry.created_at,
        updated_by=entry.updated_by,
        updated_at=entry.updated_at,
    )


class IpAllowlistController(Controller):
    """`/admin/mfa/ip-whitelist`: networks whose logins count as lower risk."""

    path = "/admin/mfa/ip-whitelist"
    guards = [admin_only]
    tags = ["admin: ip allowlist"]
    exception_handlers = {InvalidValueError: invalid_value_handler}

    @get("/", sync_to_thread=True, responses=problems(403))
    def list_entries(
        self, runtime: NamedDependency[Runtime], limit: Limit = 50, cursor: PageCursor = None
    ) -> AllowlistEntryListResponse:
        """Every entry (expired ones too), oldest first."""
        after = None
        if cursor:
            created_at, entry_id = decode_cursor(cursor, 2)
            if not isinstance(created_at, str) or not isinstance(entry_id, str):
                raise InvalidCursorError("malformed cursor")
            after = (created_at, entry_id)
        entries, last = config_commands.list_allowlist_entries(runtime.services, limit, after)
        now = runtime.services.clock.now()
        return AllowlistEntryListResponse(
            items=[entry_response(e, now) for e in entries],
            next_cursor=None if last is None else encode_cursor(list(last)),
        )

    @post("/", status_code=201, sync_to_thread=True, responses=problems(403, 409))
    def add_entry(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AllowlistEntryBody],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[AllowlistEntryResponse]:
        """List a network (IPv4 or IPv6 CIDR, host bits zero), optionally until a time."""
        by = changed_by(request, user, runtime)
        draft = AllowlistEntryDraft(data.cidr, data.description, data.expires_at)
        outcome = config_commands.add_allowlist_entry(runtime.services, draft, by)
        return changed(
            entry_response(outcome.value, runtime.services.clock.now()), outcome, by, 201
        )

    @get("/{credential_id:str}", sync_to_thread=True, responses=problems(403, 404))
    def get_entry(
        self, credential_id: EntryIdPath, runtime: NamedDependency[Runtime]
    ) -> AllowlistEntryResponse:
        """One entry."""
        entry = config_commands.get_allowlist_entry(runtime.services, credential_id)
        return entry_response(entry, runtime.services.clock.now())

    @put(
        "/{credential_id:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(403, 404, 409),
    )
    def update_entry(
        self,
        request: Request[Any, Any, Any],
        credential_id: EntryIdPath,
        data: JSONBody[AllowlistEntryBody],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[AllowlistEntryResponse]:
        """Replace an entry's network, description and expiry."""
        by = changed_by(request, user, runtime)
        draft = AllowlistEntryDraft(data.cidr, data.description, data.expires_at)
        outcome = config_commands.update_allowlist_entry(runtime.services, credential_id, draft, by)
        return changed(entry_response(outcome.value, runtime.services.clock.now()), outcome, by)

    @delete(
        "/{credential_id:str}",
        status_code=200,
        sync_to_thread=True,
        responses=problems(403, 404, 409),
    )
    def remove_entry(
        self,
        request: Request[Any, Any, Any],
        credential_id: EntryIdPath,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[AllowlistEntryDeletedResponse]:
        """Remove an entry."""
        by = changed_by(request, user, runtime)
        outcome = config_commands.remove_allowlist_entry(runtime.services, credential_id, by)
        return changed(AllowlistEntryDeletedResponse(id=credential_id, deleted=True), outcome, by)


class ConfigAuditLogController(Controller):
    """`/admin/mfa/config-audit-logs`: every configuration change, newest first."""

    path = "/admin/mfa/config-audit-logs"
    guards = [admin_only]
    tags = ["admin: audit"]
    exception_handlers = {InvalidValueError: invalid_value_handler}

    @get("/", sync_to_thread=True, responses=problems(403))
    def list_changes(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        resource_type: ResourceType = None,
        actor: Actor = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> ConfigAuditLogListResponse:
        """Changes newest first, with who made them and the state before and after; filter by
        resource type, actor and time (`since` inclusive, `until` exclusive)."""
        if resource_type is not None and resource_type not in RESOURCE_TYPES:
            raise InvalidValueError("resource_type", f"must be one of {', '.join(RESOURCE_TYPES)}")
        with runtime.read(None, request) as cur:
            rows, next_cursor = list_config_audit_log(
                cur,
                limit=limit,
                cursor=cursor,
                resource_type=resource_type,
                actor=actor,
                since=parse_time("since", since),
                until=parse_time("until", until),
            )
        return ConfigAuditLogListResponse(
            items=[
                ConfigAuditLogEntryResponse(
                    id=r["id"],
                    at=r["at"],
                    actor=r["actor"],
                    action=r["action"],
                    resource_type=r["resource_type"],
                    resource_id=r["resource_id"],
                    before=r["before"],
                    after=r["after"],
                    request_id=r["request_id"],
                )
                for r in rows
            ],
            next_cursor=next_cursor,
        )
