"""What libraries log about outgoing HTTP requests, without the parts that are secrets.

httpx logs every request's full URL at INFO (`HTTP Request: POST https://host/path "HTTP/1.1
201 Created"`). A push endpoint's URL is the device's push token (whoever holds it can push
to the device), and a provider's URL may carry a key in its path or query, so the service's
log keeps only the scheme and host of the URLs that httpx logs.
"""

from __future__ import annotations

import logging

import httpx

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
