"""MfaApplication: the eventsourcing application, its persistence and the unit of work."""

from __future__ import annotations

import contextlib
import random as _random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
    Repository,
)
from eventsourcing.persistence import EventStore, IntegrityError, Mapper, OperationalError
from eventsourcing.utils import Environment, EnvType

from commands.decoys import DecoyLockouts
from commands.ports import (
    Clock,
    DecoyLocks,
    EmailSender,
    KeyDestroyedError,
    KeyVault,
    PushSender,
    Random,
    SmsSender,
    TokenSigner,
    UserEpochs,
)
from commands.store import EncryptingMapper, SnapshotStore, build_transcoder
from commands.verifiers import RelyingParty
from domain.allowlist import AllowlistEntry
from domain.backup_codes import BackupCode, BackupCodeSet
from domain.challenge import MfaChallenge
from domain.config import LastChange, MfaConfig
from domain.delivery_throttle import DeliveryThrottle
from domain.errors import DomainError
from domain.ids import user_mfa_id
from domain.lockout import FactorLock
from domain.oob_codes import OobCode, OobFactor
from domain.push import PushDevice, PushRequest
from domain.risk import LevelPolicy, RiskPolicy
from domain.totp import TotpDevice
from domain.trusted_devices import TrustedDevice
from domain.user_mfa import UserMfa
from domain.webauthn import PendingRegistration, WebAuthnCredential

ENTITY_TYPES: list[type[Any]] = [
    LastChange,
    TotpDevice,
    BackupCode,
    BackupCodeSet,
    FactorLock,
    WebAuthnCredential,
    PendingRegistration,
    TrustedDevice,
    MfaChallenge,
    PushDevice,
    PushRequest,
    OobFactor,
    OobCode,
]
# The configuration's values, stored by their own as_dict/from_dict (in its snapshots).
VALUE_TYPES: list[type[Any]] = [RiskPolicy, LevelPolicy, AllowlistEntry]
SNAPSHOT_INTERVAL = 100
MAX_ATTEMPTS = 8

R = TypeVar("R")


class ConcurrencyConflictError(Exception):
    """The aggregate kept changing under the command; the caller answers 409."""


class StoreUnavailableError(Exception):
    """The event store could not be reached; the caller answers 503."""


class LockingRepository(Repository[UUID]):
    """The library's repository, with each aggregate's cached copy read under a lock.

    `Repository.get` fast-forwards a cached aggregate in place under a per-aggregate lock but
    deep-copies it after releasing that lock: two requests for one user in this process
    could copy it while the other applies new events to it ("dictionary changed size during
    iteration", a 500). Here the whole get, copy included, holds one of a fixed set of locks.
    """

    STRIPES = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = [threading.Lock() for _ in range(self.STRIPES)]

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        if self.cache is None or kwargs.get("version") is not None:
            return super().get(aggregate_id, **kwargs)  # no cached copy is involved
        with self._stripes[hash(aggregate_id) % self.STRIPES]:
            return super().get(aggregate_id, **kwargs)


class MfaApplication(Application[UUID]):
    """The event store of every UserMfa; events encrypted per user, snapshots every 100."""

    name = "mfa"
    snapshotting_intervals = {
        UserMfa: SNAPSHOT_INTERVAL,
        DeliveryThrottle: SNAPSHOT_INTERVAL,
        MfaConfig: SNAPSHOT_INTERVAL,
    }

    def __init__(self, env: dict[str, str], vault: KeyVault) -> None:
        self.vault = vault
        self.listeners: list[Callable[[], None]] = []
        env = {"AGGREGATE_CACHE_MAXSIZE": "10000", **env}
        super().__init__(env)

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The service's settings alone. The library merges in the whole process environment,
        where `MFA_<KEY>` (this application's name) wins over the service's `<KEY>`: a stray
        `MFA_SQLITE_DBNAME` or `MFA_POSTGRES_SCHEMA` moved the event store elsewhere."""
        settings = dict(type(self).env)
        if type(self).is_snapshotting_enabled or type(self).snapshotting_intervals:
            settings["IS_SNAPSHOTTING_ENABLED"] = "y"
        return Environment(name, {**settings, **(env or {})})

    def construct_repository(self) -> Repository[UUID]:
        # The library reads the settings (AGGREGATE_CACHE_*); the same ones, and a lock.
        plain = super().construct_repository()
        cache_maxsize = None if plain.cache is None else 0  # 0: unbounded
        if isinstance(plain.cache, LRUCache):
            cache_maxsize = plain.cache.maxsize
        return LockingRepository(
            event_store=plain.event_store,
            snapshot_store=plain.snapshot_store,
            cache_maxsize=cache_maxsize,
            fastforward=plain.fastforward,
            fastforward_skipping=plain.fastforward_skipping,
            deepcopy_from_cache=plain.deepcopy_from_cache,
        )

    def construct_mapper(self) -> Mapper[UUID]:
        return EncryptingMapper(build_transcoder(ENTITY_TYPES, VALUE_TYPES), self.vault)

    def construct_snapshot_store(self) -> EventStore[UUID]:
        # the events' transcoder and vault; only its messages say "snapshot"
        mapper = EncryptingMapper(self.mapper.transcoder, self.vault, kind="snapshot")
        return SnapshotStore(mapper, self.factory.aggregate_recorder(purpose="snapshots"))

    def _notify(self, recordings: list[Any]) -> None:
        super()._notify(recordings)
        for listener in self.listeners:
            listener()

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot the aggregate just saved when it stands at the snapshot's version.

        The library's way reloads it from the store (the previous snapshot and up to 100
        events read and decrypted) although it is in memory: every 100th command of a user
        paid a full load. When a save took an aggregate past the snapshot's version (several
        events at once) we leave it to the library, which reloads at that version.
        """
        if self.snapshots is None:
            return
        try:
            self._snapshot(processing_event)
        except (KeyDestroyedError, AggregateNotFoundError):
            # The owner was erased since the events were stored: no snapshot (it is only a
            # shortcut), and above all not one under a data key made anew.
            return

    def _snapshot(self, processing_event: ProcessingEvent[UUID]) -> None:
        assert self.snapshots is not None
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate)) if aggregate else None
            if aggregate is None or interval is None or event.originator_version % interval:
                continue
            snapshot_class = getattr(type(aggregate), "Snapshot", self.snapshot_class)
            if aggregate.version == event.originator_version and snapshot_class is not None:
                self.snapshots.put([snapshot_class.take(aggregate)])
            else:
                self.take_snapshot(event.originator_id, version=event.originator_version)

    def max_position(self) -> int:
        """The newest notification id in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0


class WriteTracker:
    """The last log position each user's writes reached in this process (read-your-writes)."""

    def __init__(self, size: int = 100_000) -> None:
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._size = size
        self._latest = 0
        self._lock = threading.Lock()

    def wrote(self, user_id: str, position: int) -> None:
        with self._lock:
            self._positions[user_id] = max(position, self._positions.get(user_id, 0))
            self._latest = max(self._latest, position)
            self._positions.move_to_end(user_id)
            while len(self._positions) > self._size:
                self._positions.popitem(last=False)

    def position(self, user_id: str | None) -> int:
        """The user's last write position; with no user, the newest write of this process."""
        with self._lock:
            if user_id is None:
                return self._latest
            return self._positions.get(user_id, 0)


@dataclass
class Services:
    """What every command handler needs: the application and the injected ports."""

    app: MfaApplication
    clock: Clock
    random: Random
    id_key: bytes = field(repr=False)  # (the key behind aggregate ids and code hashes)
    totp_issuer: str = "MFA service"
    writes: WriteTracker | None = None
    relying_party: RelyingParty | None = None
    signer: TokenSigner | None = None
    step_up_ttl_seconds: int = 300
    trusted_device_days: int = 30
    epochs: UserEpochs | None = None
    push_sender: PushSender | None = None
    sms_sender: SmsSender | None = None
    email_sender: EmailSender | None = None
    decoys: DecoyLocks | None = None  # lockouts of users without an aggregate

    def __post_init__(self) -> None:
        if self.writes is None:
            self.writes = WriteTracker()
        if self.decoys is None:
            self.decoys = DecoyLockouts()


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """A command's result and the log position its events reached (0: nothing written)."""

    value: R
    position: int


def aggregate_id(services: Services, user_id: str, *, fresh: bool = False) -> UUID:
    """The id of the user's current UserMfa: a keyed hash of the user id and its epoch."""
    epoch = services.epochs.epoch(user_id, fresh=fresh) if services.epochs else 0
    return epoch_aggregate_id(services, user_id, epoch)


def epoch_aggregate_id(services: Services, user_id: str, epoch: int) -> UUID:
    """The aggregate id of one epoch (0: before any erasure)."""
    return user_mfa_id(user_id if epoch == 0 else f"{user_id}\x00{epoch}", services.id_key)


def user_aggregate_ids(services: Services, user_id: str) -> list[UUID]:
    """The aggregate ids of every epoch of a user, oldest first (auditors see them all)."""
    epoch = services.epochs.epoch(user_id, fresh=True) if services.epochs else 0
    return [epoch_aggregate_id(services, user_id, e) for e in range(epoch + 1)]


def get_aggregate(services: Services, agg_id: UUID) -> UserMfa | None:
    """The aggregate with this id, or None (never created, or its key was destroyed)."""
    try:
        mfa: UserMfa = services.app.repository.get(agg_id)
    except AggregateNotFoundError:
        return None
    except OperationalError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    return mfa


def forget_cached(services: Services, agg_id: UUID) -> None:
    """Drop an aggregate from this process's cache (its key was destroyed: what it holds,
    decrypted, must not outlive the key)."""
    cache = services.app.repository.cache
    if cache is not None:
        with contextlib.suppress(KeyError):
            cache.get(agg_id, evict=True)


def load_user(services: Services, user_id: str) -> UserMfa | None:
    """The user's current aggregate, or None when the user has nothing enrolled (yet).

    An erased or missing aggregate makes us look up the epoch again, so a process whose cached
    epoch predates an erasure elsewhere moves on to the user's new aggregate.
    """
    mfa = get_aggregate(services, aggregate_id(services, user_id))
    if (mfa is None or mfa.erased) and services.epochs is not None:
        epoch = services.epochs.epoch(user_id, fresh=True)
        mfa = get_aggregate(services, epoch_aggregate_id(services, user_id, epoch))
        if mfa is not None and mfa.erased:
            # An erasure that stopped before moving the user on: finish that step.
            services.epochs.advance(user_id, epoch)
            return None
    return mfa


MAX_CLOCK_SKEW = timedelta(seconds=5)


def not_before(now: datetime, last_change: datetime) -> datetime:
    """The time to record a change at, given when the aggregate last changed: an aggregate's
    events keep their order in time too, or an auditor's "state at T" would skip one. The
    last change can be later than `now` when another instance's clock is a little ahead, or
    when it was saved between our reading the clock and loading the aggregate. (Larger skews
    are left alone: one broken clock must not carry every later decision with it.)"""
    return last_change if now < last_change <= now + MAX_CLOCK_SKEW else now


def execute(
    services: Services,
    user_id: str,
    decide: Callable[[UserMfa, datetime], R],
    *,
    create: bool = True,
    missing: Callable[[], Exception] | None = None,
    extra: list[Any] | None = None,
) -> Outcome[R]:
    """Load → decide → save, retried on a concurrent write; refusals' events are saved too.

    `decide` calls one domain method. A DomainError it raises is re-raised after the events
    it recorded (failed attempts, lockouts) are saved; a user's first call that is refused
    with nothing recorded saves nothing. With `create=False` an unknown user
    raises `missing()` and nothing is written. Other aggregates that `decide` appends to
    `extra` are saved in the same atomic append (the list is emptied before each attempt).
    """
    for attempt in range(MAX_ATTEMPTS):
        if extra is not None:
            extra.clear()
        now = services.clock.now()
        mfa = load_user(services, user_id)
        started = mfa is None
        if mfa is not None:
            now = not_before(now, mfa.modified_on)
        if mfa is None:
            if not create:
                raise (missing or _not_enrolled)()
            mfa = UserMfa.start(user_id, aggregate_id(services, user_id), now)
        others = extra if extra is not None else []
        try:
            value = decide(mfa, now)
        except DomainError:
            if started and len(mfa.pending_events) == 1:
                raise  # a refused first call leaves no trace: not even the user's `Created`
            pending = mfa.pending_events or any(o.pending_events for o in others)
            if pending and not _save(services, user_id, mfa, *others):
                _backoff(attempt)
                continue
            raise
        position = _save(services, user_id, mfa, *others)
        if position is None:
            _backoff(attempt)
            continue
        return Outcome(value, position)
    raise ConcurrencyConflictError("the user's MFA state changed concurrently; try again")


def _not_enrolled() -> Exception:
    from domain.errors import NotEnrolledError

    return NotEnrolledError("no MFA enrolment for this user")


def _save(services: Services, user_id: str, mfa: UserMfa, *others: Any) -> int | None:
    """Save pending events atomically; the new log position, or None on a conflict."""
    try:
        recordings = services.app.save(mfa, *others)
    except (IntegrityError, KeyDestroyedError):  # (the user was erased meanwhile: load again)
        return None
    except OperationalError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    position = max((r.notification.id for r in recordings), default=0)
    assert services.writes is not None
    services.writes.wrote(user_id, position)
    return position


def _backoff(attempt: int) -> None:
    time.sleep(_random.uniform(0, 0.002 * (2**attempt)))  # noqa: S311 - jitter, not a secret
