"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from litestar import Response, get, head
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from api.deps import PUBLIC, Runtime
from projections.nats_stream import nats_reachable


@get("/health", tags=["health"], sync_to_thread=False, security=PUBLIC)
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


# HEAD for the liveness probe load balancers send (RFC 9110 §9.3.2: the GET answer without
# its body); not in the OpenAPI document, which describes GET's. (Not for /ready: Litestar
# 2.25 then answered its GET 500, a hook handed a coroutine.)
@head("/health", sync_to_thread=False, security=PUBLIC, include_in_schema=False)
def health_head() -> None:
    return None


# A process whose relay runs elsewhere (MFA_PROJECTIONS=worker) asks NATS itself, by a new
# connection: at most once per NATS_PROBE_SECONDS, or anyone could make the service open one
# connection per unauthenticated /ready.
NATS_PROBE_SECONDS = 2.0
_probe_lock = threading.Lock()
_probed: dict[str, tuple[float, bool]] = {}


def _nats_check(runtime: Runtime) -> str:
    url = runtime.settings.nats_url
    if url is None:
        return "disabled"
    if runtime.relay is not None and runtime.relay.active:
        return "ok" if runtime.relay.connected else "unavailable"
    with _probe_lock:  # (one probe at a time; those waiting take its answer)
        at, reachable = _probed.get(url, (float("-inf"), False))
        if time.monotonic() - at >= NATS_PROBE_SECONDS:
            reachable = asyncio.run(nats_reachable(url))
            _probed[url] = (time.monotonic(), reachable)
    return "ok" if reachable else "unavailable"


def _select_one(runtime: Runtime) -> None:
    """The read database answers and, on PostgreSQL, takes writes: a standby after a failover
    (or `default_transaction_read_only`) answers reads while every command fails."""
    with runtime.db.read() as cur:
        if runtime.db.dialect != "postgres":
            cur.execute("SELECT 1")
            return
        cur.execute("SHOW transaction_read_only")
        row = cur.fetchone()
        if row is None or row[0] != "off":
            raise RuntimeError("the database is read only")


def _outcome(check: Future[Any]) -> str:
    return "unavailable" if check.exception() is not None else "ok"


@get(
    "/ready",
    tags=["health"],
    sync_to_thread=True,
    security=PUBLIC,
    responses={503: ResponseSpec(dict[str, Any], description="A check failed: not ready")},
)
def ready(runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
    """Readiness: the event store and read database answer (and NATS, when configured)."""
    # Side by side: while the database is down each check waits out its pool timeout.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mfa-ready") as pool:
        event_store = pool.submit(runtime.services.app.max_position)
        read_store = pool.submit(_select_one, runtime)
        checks = {"event_store": _outcome(event_store), "read_store": _outcome(read_store)}
    checks["nats"] = _nats_check(runtime)
    ok = all(v in ("ok", "disabled") for v in checks.values())
    return Response(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
