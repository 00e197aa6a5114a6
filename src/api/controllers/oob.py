"""SMS and email codes: `/mfa/sms/*` and `/mfa/email/*` (enrol, verify, send, disable)."""

from __future__ import annotations

from litestar import Controller, Response, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth import Principal, authenticated
from api.deps import Runtime, problems, written
from api.schemas.oob import (
    CodeSentResponse,
    EnrolEmailRequest,
    EnrolSmsRequest,
    OobDisabledResponse,
    OobVerifiedResponse,
    VerifyOobCodeRequest,
)
from commands import oob
from commands.app import Outcome
from commands.oob import CodeDelivery
from domain.oob_codes import EMAIL, SMS

SEND_PROBLEMS = problems(409, 429, 502)
VERIFY_PROBLEMS = problems(403, 409, 429)


def sent(outcome: Outcome[CodeDelivery]) -> Response[CodeSentResponse]:
    delivery = outcome.value
    body = CodeSentResponse(
        method=delivery.method,
        purpose=delivery.purpose,
        expires_at=delivery.expires_at,
        destination_hint=delivery.destination_hint,
    )
    return written(body, outcome, 202)


def verified(method: str, outcome: Outcome[str]) -> Response[OobVerifiedResponse]:
    body = OobVerifiedResponse(method=method, purpose=outcome.value, verified=True, enabled=True)
    return written(body, outcome)


class SmsController(Controller):
    """`/mfa/sms`: the caller's SMS factor."""

    path = "/mfa/sms"
    guards = [authenticated]
    tags = ["sms"]

    @put("/enroll", status_code=202, sync_to_thread=True, responses=SEND_PROBLEMS)
    def enroll(
        self,
        data: JSONBody[EnrolSmsRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[CodeSentResponse]:
        """Send a code to a phone number (E.164); the code confirms it (`/verify`)."""
        return sent(oob.enrol(runtime.services, user.sub, SMS, data.phone_number))

    @post("/verify", status_code=200, sync_to_thread=True, responses=VERIFY_PROBLEMS)
    def verify(
        self,
        data: JSONBody[VerifyOobCodeRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[OobVerifiedResponse]:
        """Confirm the enrolment, or pass a login: `purpose` says which."""
        return verified(SMS, oob.verify(runtime.services, user.sub, SMS, data.code))

    @post("/send", status_code=202, sync_to_thread=True, responses=SEND_PROBLEMS)
    def send(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[CodeSentResponse]:
        """Send a login code to the verified phone number."""
        return sent(oob.send_login_code(runtime.services, user.sub, SMS))

    @post("/disable", status_code=200, sync_to_thread=True, responses=problems(409))
    def disable(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[OobDisabledResponse]:
        """Remove the SMS factor (the phone number is forgotten)."""
        outcome = oob.disable(runtime.services, user.sub, SMS)
        return written(OobDisabledResponse(method=SMS, enabled=False), outcome)


class EmailController(Controller):
    """`/mfa/email`: the caller's email factor (a weaker one: see `/mfa/methods`)."""

    path = "/mfa/email"
    guards = [authenticated]
    tags = ["email"]

    @put("/enroll", status_code=202, sync_to_thread=True, responses=SEND_PROBLEMS)
    def enroll(
        self,
        data: JSONBody[EnrolEmailRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[CodeSentResponse]:
        """Send a code to an email address; the code confirms it (`/verify`)."""
        return sent(oob.enrol(runtime.services, user.sub, EMAIL, data.email))

    @post("/verify", status_code=200, sync_to_thread=True, responses=VERIFY_PROBLEMS)
    def verify(
        self,
        data: JSONBody[VerifyOobCodeRequest],
        user: NamedDependency[Principal],
        runtime: NamedDependency[Runtime],
    ) -> Response[OobVerifiedResponse]:
        """Confirm the enrolment, or pass a login: `purpose` says which."""
        return verified(EMAIL, oob.verify(runtime.services, user.sub, EMAIL, data.code))

    @post("/send", status_code=202, sync_to_thread=True, responses=SEND_PROBLEMS)
    def send(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[CodeSentResponse]:
        """Send a login code to the verified email address."""
        return sent(oob.send_login_code(runtime.services, user.sub, EMAIL))

    @post("/disable", status_code=200, sync_to_thread=True, responses=problems(409))
    def disable(
        self, user: NamedDependency[Principal], runtime: NamedDependency[Runtime]
    ) -> Response[OobDisabledResponse]:
        """Remove the email factor (the address is forgotten)."""
        outcome = oob.disable(runtime.services, user.sub, EMAIL)
        return written(OobDisabledResponse(method=EMAIL, enabled=False), outcome)
