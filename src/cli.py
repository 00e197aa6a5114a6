"""The `mfa` command: serve, worker, token."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid

import click
import jwt

from api.settings import Settings


@click.group()
def main() -> None:
    """MFA service."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the HTTP API (with the projections in-process unless MFA_PROJECTIONS=worker)."""
    import uvicorn

    from api.app import create_app

    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


@main.command()
def worker() -> None:
    """Run the projections (and, once configured, the NATS relay) until stopped."""
    from api.app import build_runtime

    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    runtime = build_runtime(settings, run_projections=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.start()
    relay = "on" if runtime.relay else "off (MFA_NATS_URL unset)"
    click.echo(f"mfa worker: projections running, NATS relay {relay}", err=True)
    stop.wait()
    runtime.stop()


@main.command()
@click.option("--sub", required=True, help="the user id (token subject)")
@click.option("--scope", default="", help='space-separated scopes, e.g. "mfa:admin"')
@click.option("--ttl", default=3600, show_default=True, type=int, help="lifetime in seconds")
def token(sub: str, scope: str, ttl: int) -> None:
    """Print a development JWT signed with MFA_JWT_SECRET."""
    settings = Settings.from_env()
    if not settings.jwt_secret:
        raise click.ClickException("mfa token signs with MFA_JWT_SECRET, which is not set")
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4())}
    if scope:
        claims["scope"] = scope
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    click.echo(jwt.encode(claims, settings.jwt_secret, algorithm="HS256"))


if __name__ == "__main__":
    main()
