"""What libraries log about outgoing HTTP requests, without the parts that are secrets, and
how often the HTTP server may repeat itself.

httpx logs every request's full URL at INFO (`HTTP Request: POST https://host/path "HTTP/1.1
201 Created"`). A push endpoint's URL is the device's push token (whoever holds it can push
to the device), and a provider's URL may carry a key in its path or query, so the service's
log keeps only the scheme and host of the URLs that httpx logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"  # every line the service logs

# Libraries whose DEBUG lines no operator needs: faker (which Litestar imports for OpenAPI
# examples) wrote 46 about the locales it looked for at every start.
QUIET_LOGGERS = ("faker",)


def quiet_library_loggers() -> None:
    """INFO and above only from QUIET_LOGGERS, whatever MFA_LOG_LEVEL (idempotent)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


LIBRARY_LOGGERS = ("httpx",)


class UrlRedactor(logging.Filter):
    """Replaces the URLs among a record's arguments by their scheme and host."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_redacted(a) for a in record.args)
        return True


def _redacted(value: object) -> object:
    if isinstance(value, httpx.URL):
        return f"{value.scheme}://{value.netloc.decode('ascii', 'replace')}/..."
    return value


def install_url_redaction() -> None:
    """Redact the URLs of outgoing requests in this process's log (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UrlRedactor) for f in logger.filters):
            logger.addFilter(UrlRedactor())


class RepeatedLines(logging.Filter):
    """At most `burst` warnings of one message template per `window` seconds; the first one
    let through after a drop says how many were dropped. Other levels pass untouched. For
    the HTTP server's own warnings (an invalid request, a refused oversized head), which any
    client can cause once per connection: thousands of lines a second otherwise."""

    def __init__(
        self, burst: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int, int]] = {}  # template → start, let, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:  # an ERROR (a traceback: a bug) always goes
            return True
        now = self._clock()
        template = str(record.msg)
        with self._lock:
            start, let, dropped = self._seen.get(template, (now, 0, 0))
            if now - start >= self._window:
                start, let = now, 0
            if let >= self._burst:
                self._seen[template] = (start, let, dropped + 1)
                return False
            self._seen[template] = (start, let + 1, 0)
            if len(self._seen) > 1000:  # templates are few; the dictionary stays small
                self._seen.clear()
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like it were not logged)"
        return True


SERVER_LOGGERS = ("uvicorn.error",)


def install_server_log_limits() -> None:
    """Limit the HTTP server's repeated warnings in this process's log (idempotent)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatedLines) for f in logger.filters):
            logger.addFilter(RepeatedLines())
