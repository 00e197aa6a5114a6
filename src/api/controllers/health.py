"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency

from api.deps import Runtime
from projections.nats_relay import nats_reachable


@get("/health", tags=["health"], sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _nats_check(runtime: Runtime) -> str:
    url = runtime.settings.nats_url
    if url is None:
        return "disabled"
    if runtime.relay is not None and runtime.relay.active:
        return "ok" if runtime.relay.connected else "unavailable"
    return "ok" if asyncio.run(nats_reachable(url)) else "unavailable"


@get("/ready", tags=["health"], sync_to_thread=True)
def ready(runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
    """Readiness: the event store and read database answer (and NATS, when configured)."""
    checks: dict[str, str] = {}
    try:
        runtime.services.app.max_position()
        checks["event_store"] = "ok"
    except Exception:
        checks["event_store"] = "unavailable"
    try:
        with runtime.db.transaction() as cur:
            cur.execute("SELECT 1")
        checks["read_store"] = "ok"
    except Exception:
        checks["read_store"] = "unavailable"
    checks["nats"] = _nats_check(runtime)
    ok = all(v in ("ok", "disabled") for v in checks.values())
    return Response(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
