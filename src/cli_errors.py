"""How the `mfa` commands fail: one `Error:` line naming the cause (exit 1), never a
traceback, which could quote connection details."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec

import click
from psycopg.conninfo import conninfo_to_dict

P = ParamSpec("P")


@contextmanager
def starting() -> Iterator[None]:
    """A bad configuration or an unreachable database ends the command with one line that
    names the cause (exit 1), not a traceback."""
    import sqlite3

    import psycopg
    from eventsourcing.persistence import PersistenceError

    from commands.adapters.vault import MasterKeyMismatchError

    try:
        yield
    except (ValueError, MasterKeyMismatchError) as exc:  # ConfigError and the adapters' checks
        raise click.ClickException(_without_password(str(exc))) from None
    except PersistenceError as exc:  # the event store's wrapping of the same errors
        raise click.ClickException(_database_error(exc)) from None
    except psycopg.ProgrammingError as exc:
        if exc.sqlstate is not None:  # the server's refusal (a privilege, say): named as is
            raise click.ClickException(_database_error(exc)) from None
        # libpq could not parse the URL, and its message quotes the part it could not read,
        # which is often the password (a bad %-escape, a space, a "/" in it)
        raise click.ClickException(
            "MFA_DATABASE_URL cannot be read as a PostgreSQL URL: percent-encode the special "
            "characters of the user name and password"
        ) from None
    except (psycopg.Error, sqlite3.Error, OSError) as exc:
        raise click.ClickException(_database_error(exc)) from None


def _database_error(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot open the database or data folder: {_without_password(first_line)}"


def _without_password(message: str) -> str:
    """The message without the database password: libpq quotes a host name that is the rest
    of a password holding an unescaped `@`."""
    url = os.environ.get("MFA_DATABASE_URL", "")
    address, _, query = url.partition("://")[2].partition("?")
    password = address.rpartition("@")[0].partition(":")[2]
    given = [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "password"]
    # as libpq reads it too: a `?` or `#` in the password is part of it there
    with contextlib.suppress(Exception):
        given.append(str(conninfo_to_dict(url).get("password") or ""))
    pieces = {password, *given}
    for text in list(pieces):
        pieces.update(re.split(r"[@%/ ]", text))
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            message = message.replace(piece, "***")
    return message


def store_errors_in_one_line(command: Callable[P, None]) -> Callable[P, None]:
    """The database going away during an audit or projections command ends it with one line
    (exit 1), as at start, not a traceback (which could quote connection details); so does
    a stored event that cannot be read (altered or damaged). Other errors (a row a read
    model refuses: a bug) are not outages, and are not called one."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        import sqlite3

        import psycopg
        from eventsourcing.persistence import InterfaceError, OperationalError

        from commands.app import StoreUnavailableError
        from commands.store import DamagedEventError
        from infra.sql import DatabaseUnavailableError

        try:
            command(*args, **kwargs)
        except DamagedEventError as exc:
            raise click.ClickException(str(exc)) from None
        except (
            DatabaseUnavailableError,
            StoreUnavailableError,
            OperationalError,
            InterfaceError,
            psycopg.OperationalError,
            psycopg.InterfaceError,
            sqlite3.OperationalError,
        ) as exc:
            if not _is_outage(exc):
                raise
            raise click.ClickException(
                f"the database became unavailable ({type(exc).__name__}); run the command "
                "again once it answers (a rebuild that stops changes nothing)"
            ) from None

    return run


LOCK_NOT_AVAILABLE = "55P03"  # a lock wait timed out: another try may get it


def _is_outage(exc: BaseException) -> bool:
    """A database that stopped answering or went away, not a statement it refused (a timeout
    on a large table, an SQL mistake) that would fail the same way again."""
    import sqlite3

    import psycopg

    from infra.outage import connection_lost

    cause: BaseException | None = exc
    while cause is not None:  # the deepest driver error says what happened
        if isinstance(cause, psycopg.OperationalError):
            return connection_lost(cause) or cause.sqlstate == LOCK_NOT_AVAILABLE
        if isinstance(cause, sqlite3.OperationalError):
            words = ("locked", "disk I/O", "unable to open", "readonly")
            return any(word in str(cause) for word in words)
        cause = cause.__cause__
    return True
