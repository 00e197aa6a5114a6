"""Push MFA: device sync, challenges with number matching, signed approve/deny, history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import Principal, admin_only, authenticated, internal_only
from api.deps import (
    Limit,
    OptionalBody,
    PageCursor,
    Runtime,
    TimeQuery,
    parse_time,
    problems,
    written,
)
from api.schemas.common import UNSHOWN, USER_ID_BOUNDS
from api.schemas.push import (
    ApprovePushRequest,
    CreatePushChallengeRequest,
    DenyPushRequest,
    InternalPushChallengeResponse,
    PushChallengeCreatedResponse,
    PushChallengeResponse,
    PushContext,
    PushDeviceListResponse,
    PushDeviceResponse,
    PushHistoryItem,
    PushHistoryResponse,
    PushStatsResponse,
    SyncDeviceRequest,
    SyncedDeviceResponse,
)
from commands import push
from domain.errors import NotFoundError
from domain.push import PushDevice
from domain.push_challenge import PushChallenge
from domain.user_mfa import KNOWN_METHODS
from projections.base import InvalidCursorError, decode_cursor, encode_cursor, iso, utc_time
from projections.push import list_push_challenges, list_push_devices, push_stats

ChallengeId = Annotated[str, PathParameter(min_length=1, max_length=64)]
OptionalUserId = Annotated[str | None, QueryParameter(**USER_ID_BOUNDS)]


def challenge_response(challenge: PushChallenge, now: datetime) -> PushChallengeResponse:
    """A push challenge's state; the number is never shown again after creation."""
    return PushChallengeResponse(
        challenge_id=str(challenge.id),
        status=challenge.status_at(now),
        created_at=challenge.created_on,
        expires_at=challenge.expires_at,
        responded_at=challenge.responded_at,
        device_id=challenge.responding_device,
        reason=challenge.reason,
        context=dict(challenge.context),
    )


def login_context(request: Request[Any, Any, Any], given: PushContext | None) -> dict[str, str]:
    """What the phone shows about the login it is asked to approve: the context the app gave,
    else the caller's address and user agent (without what the schema refuses in a given
    context: controls and bidi overrides)."""
    context = {
        "ip": (given.ip if given and given.ip else None)
        or (request.client.host if request.client else None),
        "user_agent": (given.user_agent if given and given.user_agent else None)
        or request.headers.get("user-agent"),
        "app": given.app if given and given.app else None,
    }
    shown = {k: UNSHOWN.sub("", v)[:256] for k, v in context.items() if v}
    return {k: v for k, v in shown.items() if v}


def device_page(
    rows: list[dict[str, Any]], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a user's push devices, oldest first by (created_at, device_id), with a
    keyset cursor. A user has at most 10 (`domain.push.MAX_PUSH_DEVICES`): they are read whole
    and paged here. A re-sync keeps a device's `created_at`, so the order holds between pages."""
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["device_id"]))
    if cursor:
        created_at, device_id = decode_cursor(cursor, 2, (str, str))
        try:
            after = (utc_time(created_at), device_id)
        except (ValueError, OverflowError) as exc:
            raise InvalidCursorError("malformed cursor") from exc
        ordered = [r for r in ordered if (r["created_at"], r["device_id"]) > after]
    page = ordered[:limit]
    if len(ordered) <= limit:
        return page, None
    last = page[-1]
    return page, encode_cursor([iso(last["created_at"]), last["device_id"]])


def _synced(device: PushDevice, *, created: bool, revoked: bool = False) -> SyncedDeviceResponse:
    return SyncedDeviceResponse(
        device_id=device.device_id,
        name=device.name,
        platform=device.platform,
        app_version=device.app_version,
        created_at=device.created_at,
        updated_at=device.updated_at,
        created=created,
        revoked=revoked,
    )


class PushDeviceController(Controller):
    """`/mfa/devices/sync`: the user's authenticator apps."""

    path = "/mfa/devices/sync"
    guards = [authenticated]
    tags = ["push"]

    @post("/", status_code=200, sync_to_thread=True, responses=problems(404, 409))
    def sync(
        self,
        data: JSONBody[SyncDeviceRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[SyncedDeviceResponse]:
        """Register or update an app (a new key rotates it); `revoke: true` removes it."""
        if data.device_id in KNOWN_METHODS and not data.revoke:  # (one stored earlier may go)
            # `sms`, `email` and `backup_code` name those methods' credentials (the primary
            # one, `/mfa/credentials/{id}/primary`): a device under such an id took them over.
            message = "a method's name cannot be a device id"
            extra = [{"key": "device_id", "message": message, "source": "body"}]
            raise ValidationException(detail=f"device_id: {message}", extra=extra)
        if data.revoke:  # answered with the device as it was, not the request's fields
            outcome = push.revoke_device(runtime.services, user.sub, data.device_id)
            return written(_synced(outcome.value, created=False, revoked=True), outcome)
        synced = push.sync_device(
            runtime.services,
            user.sub,
            push.PushDeviceSync(
                data.device_id,
                data.name,
                data.platform.lower(),  # "iOS" and "ios" are one platform
                data.push_token,
                data.public_key,
                data.app_version,
            ),
        )
        device, created = synced.value
        return written(_synced(device, created=created), synced, 200)

    @get("/", sync_to_thread=True, responses=problems())
    def list_devices(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> PushDeviceListResponse:
        """The caller's synced apps (no push token, no key), oldest first."""
        with runtime.read(user.sub, request) as cur:
            rows = list_push_devices(cur, user.sub)
        page, next_cursor = device_page(rows, limit, cursor)
        return PushDeviceListResponse(
            items=[PushDeviceResponse(**r) for r in page], next_cursor=next_cursor
        )


class PushController(Controller):
    """`/mfa/push/*`."""

    path = "/mfa/push"
    guards = [authenticated]
    tags = ["push"]

    @post(
        "/challenge",
        status_code=201,
        sync_to_thread=True,
        responses=problems(409, 429, 502),
        operation_class=OptionalBody,
    )
    def create(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        data: JSONBody[CreatePushChallengeRequest | None] = None,
    ) -> Response[PushChallengeCreatedResponse]:
        """Send a push; `number` is shown on the login screen and typed into the app."""
        outcome = push.create_challenge(
            runtime.services, user.sub, login_context(request, data.context if data else None)
        )
        challenge = outcome.value
        body = PushChallengeCreatedResponse(
            challenge_id=str(challenge.id),
            status=challenge.status,
            number=challenge.number,
            expires_at=challenge.expires_at,
        )
        return written(body, outcome, 201)

    @post("/approve", status_code=200, sync_to_thread=True, responses=problems(403, 404, 409, 410))
    def approve(
        self,
        data: JSONBody[ApprovePushRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[PushChallengeResponse]:
        """Approve with the number and an Ed25519 signature of `mfa-push:{id}:approve`."""
        outcome = push.respond(
            runtime.services,
            user.sub,
            data.challenge_id,
            data.device_id,
            approve=True,
            signature=data.signature,
            number=data.number,
        )
        return written(challenge_response(outcome.value, runtime.services.clock.now()), outcome)

    @post("/deny", status_code=200, sync_to_thread=True, responses=problems(403, 404, 409, 410))
    def deny(
        self,
        data: JSONBody[DenyPushRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[PushChallengeResponse]:
        """Deny with a signature of `mfa-push:{id}:deny`; reason `not_me` reports fraud."""
        outcome = push.respond(
            runtime.services,
            user.sub,
            data.challenge_id,
            data.device_id,
            approve=False,
            signature=data.signature,
            reason=data.reason or "denied",
        )
        return written(challenge_response(outcome.value, runtime.services.clock.now()), outcome)

    @get("/challenge/{challenge_id:str}", sync_to_thread=True, responses=problems(404))
    def status(
        self,
        challenge_id: ChallengeId,
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> PushChallengeResponse:
        """One of the caller's push challenges (status computed from time)."""
        challenge = push.own_challenge(runtime.services, user.sub, challenge_id)
        return challenge_response(challenge, runtime.services.clock.now())

    @get("/history", sync_to_thread=True, responses=problems())
    def history(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> PushHistoryResponse:
        """The caller's push challenges, newest first."""
        now = runtime.services.clock.now()
        with runtime.read(user.sub, request) as cur:
            rows, next_cursor = list_push_challenges(cur, now, user.sub, limit, cursor)
        return PushHistoryResponse(
            items=[PushHistoryItem(**r) for r in rows], next_cursor=next_cursor
        )


class InternalPushController(Controller):
    """`/internal/mfa/push/challenge/{id}`."""

    path = "/internal/mfa/push"
    guards = [internal_only]
    tags = ["internal"]

    @get("/challenge/{challenge_id:str}", sync_to_thread=True, responses=problems(403, 404))
    def status(
        self,
        challenge_id: ChallengeId,
        runtime: NamedDependency[Runtime],
        user_id: OptionalUserId = None,
    ) -> InternalPushChallengeResponse:
        """Any push challenge's status, with the user it belongs to, for the service that
        asked for it. With `?user_id=`, another user's challenge is 404: a login service
        that took the challenge id from the client must not accept an approval of the
        attacker's own push for the victim's login."""
        challenge = push.load_challenge(runtime.services, challenge_id)
        if user_id is not None and challenge.user_id != user_id:
            raise NotFoundError("no such push challenge for this user")
        answer = challenge_response(challenge, runtime.services.clock.now())
        return InternalPushChallengeResponse(
            **msgspec.structs.asdict(answer), user_id=challenge.user_id
        )


class AdminPushController(Controller):
    """`/admin/mfa/push/*`."""

    path = "/admin/mfa/push"
    guards = [admin_only]
    tags = ["admin"]

    @get("/challenges", sync_to_thread=True, responses=problems(403))
    def challenges(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        limit: Limit = 50,
        cursor: PageCursor = None,
    ) -> PushHistoryResponse:
        """Every user's push challenges, newest first."""
        now = runtime.services.clock.now()
        with runtime.read(None, request) as cur:
            rows, next_cursor = list_push_challenges(cur, now, None, limit, cursor)
        return PushHistoryResponse(
            items=[PushHistoryItem(**r) for r in rows], next_cursor=next_cursor
        )

    @get("/stats", sync_to_thread=True, responses=problems(403))
    def stats(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        since: TimeQuery = None,
    ) -> PushStatsResponse:
        """Counts by status, approval rate, median and p95 response time, fraud reports."""
        now = runtime.services.clock.now()
        with runtime.read(None, request) as cur:
            stats = push_stats(cur, runtime.db.dialect, now, parse_time("since", since))
            return PushStatsResponse(**stats)
