"""Admin views of TOTP and backup codes (scope `mfa:admin`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from api.auth import admin_only
from api.controllers.backup_codes import overview_response
from api.controllers.totp import device_response
from api.deps import Limit, PageCursor, Runtime, UserIdPath, problems
from api.schemas.backup_codes import BackupCodeOverviewListResponse, BackupCodeOverviewResponse
from api.schemas.totp import AdminTotpStatusResponse
from commands.totp import get_totp_devices
from projections.backup_codes import get_backup_codes, list_backup_codes


class AdminTotpController(Controller):
    """`/admin/mfa/totp/{user_id}` and `/admin/mfa/backup-codes`."""

    path = "/admin/mfa"
    guards = [admin_only]
    tags = ["admin"]

    @get("/totp/{user_id:str}", sync_to_thread=True, responses=problems(403))
    def totp_status(
        self, user_id: UserIdPath, runtime: NamedDependency[Runtime]
    ) -> AdminTotpStatusResponse:
        """A user's TOTP devices and whether TOTP is on."""
        devices = get_totp_devices(runtime.services, user_id)
        # The order of the user's own device list (`oldest_first_page`), ties included.
        in_list_order = sorted(devices, key=lambda d: (d.created_at, d.device_id))
        return AdminTotpStatusResponse(
            user_id=user_id,
            enabled=any(d.is_active() for d in devices),
            devices=[device_response(d) for d in in_list_order],
        )

    @get("/backup-codes", sync_to_thread=True, responses=problems(403))
    def list_backup_codes(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> BackupCodeOverviewListResponse:
        """Every user's backup-code overview."""
        with runtime.read(None, request) as cur:
            rows, next_cursor = list_backup_codes(cur, limit, cursor)
        return BackupCodeOverviewListResponse(
            items=[overview_response(r["user_id"], r) for r in rows], next_cursor=next_cursor
        )

    @get("/backup-codes/{user_id:str}", sync_to_thread=True, responses=problems(403))
    def backup_codes_of(
        self,
        request: Request[Any, Any, Any],
        user_id: UserIdPath,
        runtime: NamedDependency[Runtime],
    ) -> BackupCodeOverviewResponse:
        """One user's backup-code count."""
        with runtime.read(user_id, request) as cur:
            row = get_backup_codes(cur, user_id)
        return overview_response(user_id, row)
