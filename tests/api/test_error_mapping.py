"""Which failures are an outage (503, one line) and which a bug (500, its traceback), and how
often the HTTP server's warnings may repeat: unit checks of `api.errors` and
`infra.log_redaction` (tests/integration/test_read_only_database.py drives a real one)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from eventsourcing.persistence import InternalError as StoreInternalError

from api.errors import _database_cannot
from infra.log_redaction import RepeatedLines


def raised(make: type[Exception], *, cause: BaseException | None = None) -> BaseException:
    with pytest.raises(make) as caught:
        raise make("x") from cause
    return caught.value


def refused(sqlstate: str) -> psycopg.Error:
    error: psycopg.Error = psycopg.errors.lookup(sqlstate)("refused")
    return error


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [
        ("25006", True),  # read only
        ("53100", True),  # disk full
        ("53200", True),  # out of memory
        ("53300", True),  # too many connections
        ("57P01", True),  # admin shutdown
        ("57P03", True),  # cannot connect now
        ("53400", False),  # a configured limit (temp_file_limit) one statement exceeded
        ("23505", False),  # a unique violation: a bug
        ("42P01", False),  # no such table: a bug
    ],
)
def test_a_databases_refusal_is_an_outage_only_for_those_sqlstates(
    sqlstate: str, outage: bool
) -> None:
    direct = refused(sqlstate)
    wrapped = raised(StoreInternalError, cause=direct)  # as the event store raises it
    assert _database_cannot(direct) == (sqlstate if outage else None)
    assert _database_cannot(wrapped) == (sqlstate if outage else None)


def test_a_bug_raised_while_handling_a_refusal_stays_a_bug_when_it_says_so() -> None:
    """`raise ... from None` suppresses the context: Python prints no refusal, neither do we."""
    bug = KeyError("a bug")
    bug.__context__ = refused("25006")
    assert _database_cannot(bug) == "25006"  # (what `raise` inside the `except` records)
    bug.__suppress_context__ = True  # (what `from None` adds)
    assert _database_cannot(bug) is None


def test_an_exception_chain_that_loops_ends() -> None:
    """`raise e from e` makes `__cause__` a loop; the handler walked it for ever, on the
    event loop."""
    itself = ValueError("x")
    itself.__cause__ = itself
    assert _database_cannot(itself) is None
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert _database_cannot(a) is None


def record(level: int, message: str = "Invalid HTTP request received.") -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, message, None, None)


def test_repeated_warnings_are_limited_and_counted_but_errors_never() -> None:
    limit = RepeatedLines(burst=3, window=60)
    kept = [limit.filter(record(logging.WARNING)) for _ in range(10)]
    assert kept == [True] * 3 + [False] * 7
    assert all(
        limit.filter(record(logging.ERROR, "Exception in ASGI application\n")) for _ in range(30)
    )
    assert limit.filter(record(logging.WARNING, "another template"))


def test_the_first_warning_after_a_window_says_how_many_were_left_out() -> None:
    now = [0.0]
    limit = RepeatedLines(burst=1, window=60, clock=lambda: now[0])
    assert limit.filter(record(logging.WARNING))
    for _ in range(4):
        assert not limit.filter(record(logging.WARNING))
    now[0] = 60.0
    after = record(logging.WARNING)
    assert limit.filter(after)
    assert after.getMessage() == "Invalid HTTP request received. (4 more like it were not logged)"
    assert not limit.filter(record(logging.WARNING))
