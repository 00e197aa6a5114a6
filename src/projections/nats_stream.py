"""The JetStream stream the relay publishes to, and a quick check that NATS answers."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

STREAM = "MFA_EVENTS"
SUBJECTS = ["mfa.events.>"]
DUPLICATE_WINDOW_SECONDS = 24 * 3600


async def ensure_stream(js: Any) -> float:
    """Create the stream, or bring its subjects and duplicate window up to date; returns the
    duplicate window (seconds).

    The window is 24 hours, or the stream's maximum age when an operator gave it a shorter
    one: JetStream refuses a window longer than the maximum age, and the relay would publish
    nothing. Refusing to publish would hold back every event from every consumer, whereas a
    shorter window costs at most a duplicate message (which consumers must bear anyway) for a
    batch re-sent after an outage longer than the maximum age, whose first copy has expired
    from the stream by then.
    """
    wanted = StreamConfig(
        name=STREAM,
        subjects=SUBJECTS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(wanted)
        return DUPLICATE_WINDOW_SECONDS
    config = info.config
    window = float(DUPLICATE_WINDOW_SECONDS)
    if config.max_age:  # 0 or None: no maximum age
        window = min(window, config.max_age)
    if config.subjects != SUBJECTS or config.duplicate_window != window:
        await js.update_stream(config.evolve(subjects=SUBJECTS, duplicate_window=window))
    return window


async def _quiet(_: Exception) -> None:
    """nats-py's default error callback logs every failed attempt at ERROR with a traceback."""


async def nats_reachable(url: str, timeout: float = 1.5) -> bool:
    """Whether a NATS server answers at `url` (for /ready), in one quick try per server: the
    first connection ignores `allow_reconnect=False` and tries again every
    `reconnect_time_wait` (2 s) until the attempts run out, so a refused connection held
    the probe for the whole timeout, logging two tracebacks."""
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=_quiet,
            ),
            timeout=timeout + 1,
        )
    except Exception:
        return False
    await nc.close()
    return True
