"""Backup-code commands: generate a fresh set (shown once), spend one code."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from commands.app import Outcome, Services, execute
from domain.backup_codes import (
    BACKUP_CODE_BYTES,
    BACKUP_CODE_COUNT,
    format_backup_code,
    hash_backup_code,
)
from domain.user_mfa import UserMfa


@dataclass(frozen=True)
class GeneratedCodes:
    """The plaintext codes, returned this once and never stored."""

    codes: list[str]
    generated_at: datetime


def generate_backup_codes(services: Services, user_id: str) -> Outcome[GeneratedCodes]:
    """Replace the user's backup codes with ten fresh 64-bit codes."""
    codes = [
        format_backup_code(services.random.token_bytes(BACKUP_CODE_BYTES))
        for _ in range(BACKUP_CODE_COUNT)
    ]
    salts = [services.random.token_bytes(16).hex() for _ in codes]
    hashed = [(salt, hash_backup_code(code, salt)) for code, salt in zip(codes, salts, strict=True)]
    set_id = str(uuid.UUID(bytes=services.random.token_bytes(16), version=4))

    def decide(mfa: UserMfa, now: datetime) -> GeneratedCodes:
        mfa.generate_backup_codes(set_id, hashed, now)
        return GeneratedCodes(codes, now)

    return execute(services, user_id, decide)


def verify_backup_code(services: Services, user_id: str, code: str) -> Outcome[int]:
    """Spend one code; the value is how many remain."""
    return execute(services, user_id, lambda mfa, now: mfa.use_backup_code(code, now), create=False)
