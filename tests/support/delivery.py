"""Real servers that stand in for the message providers: an SMTP server (aiosmtpd) and an HTTP
SMS provider. Each records what it received, so a test reads its code as a user would."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

CODE = re.compile(r"\b(\d{6})\b")


def code_in(text: str) -> str:
    """The 6-digit code in a message body."""
    match = CODE.search(text)
    assert match, f"no 6-digit code in {text!r}"
    return match.group(1)


@dataclass
class SmsProvider:
    """An HTTP server that takes `POST {"to", "body"}` and answers `status`."""

    status: int = 200
    messages: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> SmsProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                provider.messages.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "authorization": self.headers.get("Authorization"),
                        **json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(provider.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/sms"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def last_code(self, to: str | None = None) -> str:
        sent = [m for m in self.messages if to is None or m["to"] == to]
        assert sent, f"no SMS to {to}"
        return code_in(sent[-1]["body"])


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    """A real SMTP server on a loopback port that keeps every message it accepts."""

    port: int
    _inbox: _Inbox = field(default_factory=_Inbox)
    _controller: Controller | None = None

    def start(self) -> SmtpServer:
        self._controller = Controller(self._inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self._inbox.messages

    def last_message(self, to: str) -> EmailMessage:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [m for rcpt, m in self.messages if to in rcpt]
            if found:
                return found[-1]
            time.sleep(0.01)
        raise AssertionError(f"no email to {to}")

    def last_code(self, to: str) -> str:
        body = self.last_message(to).get_body(("plain",))
        assert body is not None
        return code_in(str(body.get_content()))
