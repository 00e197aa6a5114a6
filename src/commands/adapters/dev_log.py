"""Development delivery: the message goes to the log, nothing is sent.

Used for SMS when `MFA_SMS_WEBHOOK_URL` is unset and for email when `MFA_SMTP_URL` is unset.
The code appears in exactly one log line: the one that stands in for the message.
"""

from __future__ import annotations

import logging

from domain.oob_codes import EMAIL, SMS, destination_hint

log = logging.getLogger("mfa.delivery.dev")


class LogSender:
    """Writes each SMS or email to the log instead of sending it (development only)."""

    def send_sms(self, to: str, body: str) -> None:
        log.warning("DEVELOPMENT, not sent: SMS to %s: %s", destination_hint(SMS, to), body)

    def send_email(self, to: str, subject: str, body: str) -> None:
        log.warning(
            "DEVELOPMENT, not sent: email to %s, %r: %s",
            destination_hint(EMAIL, to),
            subject,
            body,
        )
