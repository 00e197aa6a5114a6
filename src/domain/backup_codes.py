"""Backup codes: ten one-time recovery codes, stored only as salted hashes."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime

BACKUP_CODE_COUNT = 10
BACKUP_CODE_BYTES = 8  # 64 bits of entropy per code


def normalise_backup_code(code: str) -> str:
    """Users may type codes with dashes, spaces or capitals; compare the bare lowercase hex."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def format_backup_code(raw: bytes) -> str:
    """Render 8 random bytes as `xxxx-xxxx-xxxx-xxxx`."""
    hexed = raw.hex()
    return "-".join(hexed[i : i + 4] for i in range(0, len(hexed), 4))


def hash_backup_code(code: str, salt: str) -> str:
    """Salted SHA-256 of the normalised code; 64-bit random codes need no slow KDF."""
    return hashlib.sha256(bytes.fromhex(salt) + normalise_backup_code(code).encode()).hexdigest()


@dataclass
class BackupCode:
    """The stored form of one code: salt, hash and when it was used."""

    salt: str
    hash: str
    used_at: datetime | None = None

    def matches(self, code: str) -> bool:
        """Constant-time comparison of the presented code against the stored hash."""
        return hmac.compare_digest(hash_backup_code(code, self.salt), self.hash)


@dataclass
class BackupCodeSet:
    """The current set; a new generation replaces (and so revokes) the earlier one."""

    set_id: str
    generated_at: datetime
    codes: list[BackupCode] = field(default_factory=list)

    def remaining(self) -> int:
        """How many codes are still unused."""
        return sum(1 for code in self.codes if code.used_at is None)

    def find_unused(self, code: str) -> int | None:
        """Index of the unused code matching `code`, checking every code (no early exit)."""
        found: int | None = None
        for index, stored in enumerate(self.codes):
            if stored.matches(code) and stored.used_at is None and found is None:
                found = index
        return found
