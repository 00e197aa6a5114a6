"""Backup codes: ten one-time recovery codes, stored only as salted hashes."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from domain.base import UserMfaEvent, UserMfaState, reset_lock
from domain.errors import NotEnrolledError

BACKUP_CODE_COUNT = 10
BACKUP_CODE_BYTES = 8  # 64 bits of entropy per code
BACKUP_CODE = "backup_code"  # the method, and its own lockout factor


def normalise_backup_code(code: str) -> str:
    """Users may type codes with dashes, spaces or capitals, or in full-width forms (an East
    Asian input method's, U+FF10 and on); compare the bare lowercase hex. NFKC folds the
    full-width forms into ASCII; anything else that is not a letter or digit is dropped."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", code).lower() if ch.isalnum())


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


class BackupCodesGenerated(UserMfaEvent):
    TOPIC = "mfa.backup_codes.generated.v1"
    set_id: str
    codes: list[list[str]]

    def apply(self, aggregate: BackupCodeMixin) -> None:
        aggregate.backup_codes = BackupCodeSet(
            set_id=self.set_id,
            generated_at=self.timestamp,
            codes=[BackupCode(salt=salt, hash=digest) for salt, digest in self.codes],
        )


class BackupCodeUsed(UserMfaEvent):
    TOPIC = "mfa.backup_codes.used.v1"
    set_id: str
    index: int
    reset_lock: bool

    def apply(self, aggregate: BackupCodeMixin) -> None:
        assert aggregate.backup_codes is not None
        aggregate.backup_codes.codes[self.index].used_at = self.timestamp
        reset_lock(aggregate, BACKUP_CODE, self.reset_lock)


class BackupCodeMixin(UserMfaState):
    """A user's backup codes: generate a set, spend codes one by one."""

    backup_codes: BackupCodeSet | None

    def generate_backup_codes(
        self, set_id: str, hashed: list[tuple[str, str]], at: datetime
    ) -> None:
        """Replace any earlier set with one of (salt, hash) pairs; the old codes stop working."""
        self.trigger_event(
            BackupCodesGenerated,
            set_id=set_id,
            codes=[[salt, digest] for salt, digest in hashed],
            timestamp=at,
        )

    def use_backup_code(self, code: str, at: datetime) -> int:
        """Spend one unused code; returns how many remain. Its own failure budget.

        Once every code of a set is spent, any code is a wrong or reused one (403, counted
        like any other failure), as while some remain; only a user who never had a set (or
        whose set was reset) is not enrolled.
        """
        self._ensure_unlocked(BACKUP_CODE, at)
        codes = self.backup_codes
        if codes is None:
            raise NotEnrolledError("no backup codes")
        index = codes.find_unused(code)
        if index is None:
            raise self._fail(BACKUP_CODE, "wrong_code", at, codes.set_id)
        self.trigger_event(
            BackupCodeUsed,
            set_id=codes.set_id,
            index=index,
            reset_lock=self._succeed(BACKUP_CODE),
            timestamp=at,
        )
        return codes.remaining()
