"""The delivery adapters against real local servers: SMTP URL rules, TLS choices, SMS errors."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest

from commands.adapters.sms_http import HttpSmsSender
from commands.adapters.smtp import SmtpEmailSender, parse_smtp_url
from commands.ports import DeliveryError
from tests.conftest import free_port
from tests.support.delivery import SmsProvider, SmtpServer, code_in


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mail = SmtpServer(free_port()).start()
    yield mail
    mail.stop()


@pytest.fixture
def sms() -> Iterator[SmsProvider]:
    provider = SmsProvider().start()
    yield provider
    provider.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example", ("mail.example", 25, None, None, False, None)),
        ("smtp://mail.example?starttls=1", ("mail.example", 587, None, None, False, True)),
        ("smtp+starttls://u:p@mail.example", ("mail.example", 587, "u", "p", False, True)),
        ("smtp://mail.example:2525?starttls=0", ("mail.example", 2525, None, None, False, False)),
        ("smtps://a%40b:p%3Aw@mail.example", ("mail.example", 465, "a@b", "p:w", True, False)),
    ],
)
def test_smtp_urls_say_where_to_connect_and_how(url: str, expected: tuple[object, ...]) -> None:
    config = parse_smtp_url(url)
    assert (
        config.hostname,
        config.port,
        config.username,
        config.password,
        config.use_tls,
        config.start_tls,
    ) == expected
    assert config.timeout == 10


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example",
        "smtp://",
        "smtps://mail.example?starttls=1",
        "smtp://mail.example?starttls=maybe",
        "smtp://mail.example?tls=1",
        "smtp://mail.example?timeout=0",
        "smtp://mail.example:99999",
    ],
)
def test_smtp_urls_that_make_no_sense_stop_the_service_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="MFA_SMTP_URL"):
        parse_smtp_url(url)


@pytest.mark.parametrize("timeout", ["0", "-1", "120.5", "nan"])
def test_a_timeout_out_of_range_is_named_with_the_range_it_must_be_in(timeout: str) -> None:
    """`timeout=0` was refused as not "between 0 and 120 seconds"."""
    with pytest.raises(ValueError, match="timeout must be more than 0 and at most 120 seconds"):
        parse_smtp_url(f"smtp://mail.example?timeout={timeout}")


def test_an_email_goes_out_as_plain_text_from_the_configured_sender(smtp: SmtpServer) -> None:
    sender = SmtpEmailSender(f"{smtp.url}?timeout=5", "mfa@example.org")

    sender.send_email("grace@example.org", "Your verification code", "123456 is your code.")

    message = smtp.last_message("grace@example.org")
    assert message["From"] == "mfa@example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "text/plain"
    assert smtp.last_code("grace@example.org") == "123456"


def test_the_envelope_and_the_to_header_name_the_address_exactly_as_given(
    smtp: SmtpServer,
) -> None:
    sender = SmtpEmailSender(f"{smtp.url}?timeout=5", "mfa@example.org")

    sender.send_email("judy+mfa@example.org", "Your verification code", "123456")

    [(recipients, message)] = smtp.messages
    assert recipients == ["judy+mfa@example.org"]
    assert message["To"] == "judy+mfa@example.org"


@pytest.mark.parametrize(
    "address",
    [
        "=?utf-8?q?=76ictim?=@example.com",  # the header parser would decode it to victim@
        "=?utf-8?b?YQ0KUkNQVCBUTzo8eEBldmlsLmNvbT4=?=@example.com",  # ... to CR/LF in a header
        "mallory@example.org\r\nBcc: x@example.org",
        "not an address",
    ],
)
def test_an_address_the_mail_library_would_rewrite_or_refuse_is_a_delivery_error(
    smtp: SmtpServer, address: str
) -> None:
    """Never a ValueError (an HTTP 500), and nothing goes out."""
    sender = SmtpEmailSender(f"{smtp.url}?timeout=5", "mfa@example.org")

    with pytest.raises(DeliveryError):
        sender.send_email(address, "Your verification code", "123456")

    assert smtp.messages == []


def test_required_starttls_refuses_a_server_that_does_not_offer_it(smtp: SmtpServer) -> None:
    sender = SmtpEmailSender(f"smtp+starttls://127.0.0.1:{smtp.port}", "mfa@example.org")

    with pytest.raises(DeliveryError):
        sender.send_email("heidi@example.org", "Your verification code", "123456")

    assert smtp.messages == []


def test_no_smtp_server_is_a_delivery_error() -> None:
    sender = SmtpEmailSender(f"smtp://127.0.0.1:{free_port()}?timeout=2", "mfa@example.org")
    with pytest.raises(DeliveryError):
        sender.send_email("ivan@example.org", "Your verification code", "123456")


def test_an_sms_is_posted_as_json_with_to_and_body(sms: SmsProvider) -> None:
    HttpSmsSender(sms.url).send_sms("+14155550123", "654321 is your code.")

    [message] = sms.messages
    assert message["to"] == "+14155550123"
    assert code_in(message["body"]) == "654321"
    assert message["content_type"] == "application/json"


@pytest.mark.parametrize("status", [301, 400, 429, 500, 503])
def test_any_answer_but_2xx_from_the_sms_provider_is_a_delivery_error(
    sms: SmsProvider, status: int
) -> None:
    sms.status = status
    with pytest.raises(DeliveryError):
        HttpSmsSender(sms.url).send_sms("+14155550123", "654321")


def test_an_unreachable_sms_provider_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError):
        HttpSmsSender(f"http://127.0.0.1:{free_port()}/sms").send_sms("+14155550123", "654321")


def test_credentials_in_the_sms_url_go_as_basic_auth_and_never_into_a_log_line(
    sms: SmsProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = sms.url.replace("http://", "http://gw%40user:s3cr%3At@")

    HttpSmsSender(url).send_sms("+14155550123", "654321")

    expected = "Basic " + base64.b64encode(b"gw@user:s3cr:t").decode()
    assert sms.messages[0]["authorization"] == expected
    assert caplog.records, "httpx logs each request"
    assert not any("s3cr" in r.getMessage() for r in caplog.records)
    assert not any("654321" in r.getMessage() for r in caplog.records)  # nor the body


def test_the_sms_webhook_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="MFA_SMS_WEBHOOK_URL"):
        HttpSmsSender("ftp://sms.example/send")
