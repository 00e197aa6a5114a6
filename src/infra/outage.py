"""Telling an outage of PostgreSQL from a statement that failed, and waiting only briefly
for a pooled connection through one (`infra.sql`'s pools and `infra.event_store`'s)."""

from __future__ import annotations

import psycopg

OUTAGE_WAIT_SECONDS = 0.5
SERVER_GOING_AWAY = "57P"  # SQLSTATEs of a server shutting down or not taking sessions yet


def connection_lost(exc: BaseException | None) -> bool:
    """Whether a psycopg (pool) error says the server is gone, not that one statement failed."""
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        return True  # the server ended the session (this process stalled mid-transaction)
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate  # None: raised by the client (no connection, pool timeout)
    return state is None or state.startswith(("08", SERVER_GOING_AWAY))  # connection, shutdown


class ConnectionWait:
    """How long to wait for a pooled connection: the pool timeout normally, but only briefly
    once a connection was lost or the pool had none to give (the database is down), until the
    database answers again. Otherwise, during an outage every request holds a worker thread
    for the whole timeout, and the requests queued behind them for longer still.

    The brief wait lasts as long as the outage, not for a fixed time (2 s) after the last
    failure: a pool not called for that long during an outage (a request fails at its first
    call, so the pools it would use later see few) waited its whole timeout again."""

    def __init__(self, timeout: float) -> None:
        self.normal = timeout
        self._down = False

    def timeout(self) -> float:
        return OUTAGE_WAIT_SECONDS if self._down else self.normal

    def outage_seen(self) -> None:
        self._down = True

    def answered(self) -> None:
        """The database answered a call: it is up (again)."""
        self._down = False
