"""Wake this process's background work when any process appends to the PostgreSQL event store.

In the process that writes, the application's listeners wake the projections and the relay.
`mfa worker`, or a second `mfa serve`, hears nothing of another process's writes and would
only find them at its next poll. The eventsourcing PostgreSQL recorder sends `NOTIFY
<channel>` in every append's transaction (delivered at commit): a thread LISTENs on its own
connection and calls the callbacks. A notification can be missed while it reconnects, so the
callers keep a (longer) poll as a fallback, and the waker calls them once after every
(re)connection.
SQLite has no such thing, and is single-process: the in-process listeners suffice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import psycopg
from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

log = logging.getLogger("mfa.notify")
APPLICATION_NAME = "mfa-log-waker"
LISTEN_SLICE_SECONDS = 0.25  # how long `stop` may wait for the thread to notice
MAX_BACKOFF_SECONDS = 5.0


class LogWaker:
    """A daemon thread that calls `callbacks` whenever the event store's channel is notified.

    `callbacks` is kept as given, not copied: callers pass the application's listeners and
    may add to them afterwards.
    """

    def __init__(
        self, conninfo: str, channel: str, callbacks: Sequence[Callable[[], None]] = ()
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.callbacks = callbacks
        self.listening = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="mfa-log-waker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _wake(self) -> None:
        for callback in self.callbacks:
            callback()

    def _main(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # the database went away: the pollers carry on meanwhile
                failures += 1
                log.warning("log waker disconnected (%s); reconnecting", type(exc).__name__)
            finally:
                self.listening = False
            self._stop.wait(min(MAX_BACKOFF_SECONDS, 0.1 * 2**failures) if failures else 0)

    def _listen(self) -> None:
        # Keepalives: a connection that silently went away (no FIN, no RST) errors out in
        # about 20 s rather than leaving the thread listening to nothing.
        with psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=3,
            application_name=APPLICATION_NAME,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=2,
        ) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.listening = True
            self._wake()  # whatever was appended while nobody listened
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=LISTEN_SLICE_SECONDS):
                    self._wake()  # cheap: the callbacks only set an event


def log_waker_for(
    database_url: str, recorder: ApplicationRecorder, callbacks: Sequence[Callable[[], None]]
) -> LogWaker | None:
    """A waker for this event store, or None when it sends no notifications (SQLite)."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return None
    return LogWaker(database_url, recorder.channel_name, callbacks)
