"""A private PostgreSQL server for fault-injection tests: ours to stop, crash and restart.

The machine's shared server is used by other tests at the same time, so it is never touched.
The private one lives in a temporary directory (data, socket and log), listens on a free
loopback port and runs as the `postgres` OS user when the tests run as root (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from tests.conftest import free_port, require_service

PG_BIN_ENV = "MFA_TEST_PG_BIN"
PG_OS_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: $MFA_TEST_PG_BIN, a Debian layout, $PATH."""
    candidates: list[str] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(os.environ[PG_BIN_ENV])
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _private_postgres_problem(bin_dir: Path | None) -> str | None:
    if bin_dir is None:
        return f"initdb/pg_ctl not found (install PostgreSQL or set {PG_BIN_ENV})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root and there is no {PG_OS_USER!r} OS user to run it as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is not installed"
    return None


class PrivatePostgres:
    """initdb into a temporary directory; start, stop (also `immediate`, a crash) and restart."""

    def __init__(self) -> None:
        self.bin_dir = find_pg_bin()
        require_service("a private PostgreSQL server", _private_postgres_problem(self.bin_dir))
        self.dir = Path(tempfile.mkdtemp(prefix="mfa-private-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_OS_USER)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_OS_USER, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> PrivatePostgres:
        """Start (after a crash, PostgreSQL replays its WAL first) and wait until it answers."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
            "-t", "30",
        )  # fmt: skip
        self.running = True
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` kills it without a checkpoint, as a crash would."""
        if not self.running:
            return
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")
        self.running = False

    def restart(self, mode: str = "immediate") -> PrivatePostgres:
        self.stop(mode)
        return self.start()

    def create_database(self, name: str = "mfa") -> str:
        """A new database on this server; returns its URL."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def destroy(self) -> None:
        """Stop the server (if it runs) and delete its directory."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class FreezableProxy:
    """A TCP proxy to a PostgreSQL server that can stop forwarding without closing anything:
    a server that stopped answering (its kernel still acknowledges, nothing comes back)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def proxied_url(self) -> str:
        """The URL, through this proxy."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        credentials = netloc[0] + "@" if len(netloc) == 2 else ""
        return parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}").geturl()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._thawed.wait()  # frozen: received (acknowledged), not passed on
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def close(self) -> None:
        """As a server that crashed: every connection drops, and new ones are refused."""
        self.thaw()
        # A close alone would wait for the thread blocked in its accept or recv (meanwhile
        # the port still takes connections, and they still pass): shut each down first.
        for sock in (self._listener, *self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
