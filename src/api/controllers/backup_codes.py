"""Backup codes: generate (shown once), verify, count, overview."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import Principal, authenticated
from api.deps import Runtime, problems, written
from api.schemas.backup_codes import (
    BackupCodeCountResponse,
    BackupCodeOverviewResponse,
    BackupCodeVerifiedResponse,
    GeneratedBackupCodesResponse,
    VerifyBackupCodeRequest,
)
from commands import backup_codes
from projections.backup_codes import get_backup_codes


def overview_response(user_id: str, row: dict[str, Any] | None) -> BackupCodeOverviewResponse:
    """The overview of a user's codes (no code, no hash)."""
    if row is None:
        return BackupCodeOverviewResponse(user_id=user_id, remaining=0, total=0)
    return BackupCodeOverviewResponse(
        user_id=user_id,
        remaining=row["remaining"],
        total=row["total"],
        generated_at=row["generated_at"],
        last_used_at=row["last_used_at"],
    )


class BackupCodeController(Controller):
    """`/mfa/backup-codes`: the caller's recovery codes."""

    path = "/mfa/backup-codes"
    guards = [authenticated]
    tags = ["backup codes"]

    @post("/generate", status_code=201, sync_to_thread=True, responses=problems(409))
    def generate(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[GeneratedBackupCodesResponse]:
        """Ten fresh codes replace any earlier set; they are never shown again."""
        outcome = backup_codes.generate_backup_codes(runtime.services, user.sub)
        body = GeneratedBackupCodesResponse(
            codes=outcome.value.codes, generated_at=outcome.value.generated_at
        )
        return written(body, outcome, 201)

    @post("/verify", status_code=200, sync_to_thread=True, responses=problems(403, 409, 429))
    def verify(
        self,
        data: JSONBody[VerifyBackupCodeRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[BackupCodeVerifiedResponse]:
        """Spend one code; each works once."""
        outcome = backup_codes.verify_backup_code(runtime.services, user.sub, data.code)
        return written(BackupCodeVerifiedResponse(verified=True, remaining=outcome.value), outcome)

    @get("/count", sync_to_thread=True, responses=problems())
    def count(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> BackupCodeCountResponse:
        """How many codes remain of the current set."""
        with runtime.read(user.sub, request) as cur:
            row = get_backup_codes(cur, user.sub)
        if row is None:
            return BackupCodeCountResponse(remaining=0, total=0)
        return BackupCodeCountResponse(remaining=row["remaining"], total=row["total"])

    @get("/", sync_to_thread=True, responses=problems())
    def view(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> BackupCodeOverviewResponse:
        """The overview of the current set; the codes themselves are never shown again."""
        with runtime.read(user.sub, request) as cur:
            row = get_backup_codes(cur, user.sub)
        return overview_response(user.sub, row)
