"""create_app(settings): the composition root of the HTTP service."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.auth import TokenVerifier
from api.config_values import ConfigError
from api.controllers.admin import AdminTotpController
from api.controllers.allowlist import ConfigAuditLogController, IpAllowlistController
from api.controllers.audit import AuditController
from api.controllers.backup_codes import BackupCodeController
from api.controllers.config import LevelPolicyController, RiskPolicyController
from api.controllers.demo import DemoController
from api.controllers.erasure import AdminResetController, EraseController
from api.controllers.health import health, health_head, ready
from api.controllers.internal import InternalController
from api.controllers.methods import MethodController
from api.controllers.oob import EmailController, SmsController
from api.controllers.planned import planned_handlers
from api.controllers.push import (
    AdminPushController,
    InternalPushController,
    PushController,
    PushDeviceController,
)
from api.controllers.step_up import StepUpController, jwks
from api.controllers.totp import TotpController
from api.controllers.trusted_devices import TrustedDeviceController
from api.controllers.webauthn import WebAuthnController
from api.deps import (
    Runtime,
    StrictJsonRequest,
    provide_runtime,
    provide_user,
)
from api.errors import EXCEPTION_HANDLERS, html_not_found_as_problem
from api.input_rules import apply_input_rules
from api.openapi import complete_document
from api.settings import Settings, load_jwt_public_key
from commands.adapters.decoys import SqlDecoyLockouts
from commands.adapters.dev_log import LogSender
from commands.adapters.epochs import SqlUserEpochs
from commands.adapters.keys import derive_key
from commands.adapters.push import HttpPushSender
from commands.adapters.signing import Es256Signer
from commands.adapters.sms_http import HttpSmsSender
from commands.adapters.smtp import SmtpEmailSender
from commands.adapters.vault import SqlKeyVault
from commands.app import MfaApplication, Services
from commands.ports import Clock, Random, SystemClock, SystemRandom
from commands.verifiers import RelyingParty
from infra.event_store import EVENTS_TABLES, event_store_env, missing_event_store_tables
from infra.lease import lease_for
from infra.log_redaction import (
    LOG_FORMAT,
    install_server_log_limits,
    install_url_redaction,
    quiet_library_loggers,
)
from infra.notify import log_waker_for
from infra.sql import Database, open_database, schema_lock
from projections.nats_relay import NatsRelay
from projections.runner import ProjectionRunner, default_projections
from projections.tracking import ReadModels, read_model_tables

log = logging.getLogger("mfa")
UNWOKEN_POLL_SECONDS = 0.05  # SQLite: one process, whose own writes wake the projections
WOKEN_POLL_SECONDS = 0.5  # PostgreSQL: every process's writes wake them (infra.notify)


MIN_HS256_BYTES = 32  # RFC 7518 §3.2: an HS256 key as long as the hash


def _refuse_unwritten(database_url: str) -> None:
    """The read-only commands read what the service wrote, and create nothing: not the event
    store, and not the database of data keys beside it (without which every event would
    read as erased)."""
    missing = missing_event_store_tables(database_url)
    if missing and missing[0] in EVENTS_TABLES:
        raise ConfigError(
            "MFA_DATABASE_URL names no MFA event store (nothing was written there yet, or it "
            "is another database); read-only commands create none"
        )
    if missing:
        raise ConfigError(
            f"the event store has no table {missing[0]}: start the service (`mfa serve`, this "
            "version) on it once to set its tables up; read-only commands create none"
        )
    if database_url.startswith("sqlite:///"):
        keys = Path(database_url.removeprefix("sqlite:///"))
        if not keys.is_file():
            raise ConfigError(
                f"{keys.name}, the database of data keys and read models beside the event "
                "store, is missing: without it every event would read as erased (read-only "
                "commands create none)"
            )


def _refuse_missing_tables(db: Database, tables: list[str]) -> None:
    """The same for the service's tables: a database without them is damaged or from an
    older version, and the read-only commands neither repair nor upgrade it."""
    with db.read() as cur:
        if db.dialect == "postgres":
            cur.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL",
                (tables,),
            )
            missing = [str(name) for (name,) in cur.fetchall()]
        else:
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            present = {str(name) for (name,) in cur.fetchall()}
            missing = [table for table in tables if table not in present]
    if missing:
        db.close()
        if "mfa_data_keys" in missing:  # a new service would make new keys: all read as erased
            raise ConfigError(
                "the database has no data keys (table mfa_data_keys): restore it from a "
                "backup; read-only commands create none"
            )
        raise ConfigError(
            f"the database has no table {', '.join(missing)}: start the service (`mfa serve`, "
            "this version) on it once to set its tables up; read-only commands create none"
        )


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    random: Random | None = None,
    run_projections: bool | None = None,
    create: bool = True,
) -> Runtime:
    """Construct the adapters, the application and the read side from settings. With
    `create=False` (the read-only commands) a database the service never wrote is refused,
    before anything is created in it."""
    install_url_redaction()  # push endpoint URLs are push tokens: not in the log
    signer = Es256Signer(settings.master_key)
    if settings.jwt_public_key and signer.signs_with(
        load_jwt_public_key(settings.jwt_public_key)[0]
    ):
        # Every step-up token (a proof for apps, without an audience unless the deployment
        # names the client as one) would pass as a bearer token.
        raise ConfigError(
            "MFA_JWT_PUBLIC_KEY is this service's own step-up signing key (its JWKS), not "
            "the identity provider's"
        )
    development = not settings.sms_webhook_url and not settings.smtp_url
    # API.md: with neither provider configured, messages go to the log (development). With
    # one configured this is a deployment: the other channel's codes go nowhere (the channel
    # answers 409), never to a log that operators read.
    sms_sender = (
        HttpSmsSender(settings.sms_webhook_url)
        if settings.sms_webhook_url
        else (LogSender() if development else None)
    )
    email_sender = (
        SmtpEmailSender(settings.smtp_url, settings.email_from)
        if settings.smtp_url
        else (LogSender() if development else None)
    )
    projections = default_projections(relay=settings.nats_url is not None)
    if not create:
        _refuse_unwritten(settings.database_url)
    db = open_database(settings.database_url, settings.db_pool_size)
    if not create:
        tables = [*SqlKeyVault.tables, *SqlUserEpochs.tables, *SqlDecoyLockouts.tables]
        _refuse_missing_tables(db, [*tables, *read_model_tables(projections)])
    with schema_lock(settings.database_url) if create else contextlib.nullcontext():
        vault = SqlKeyVault(db, settings.master_key, create=create)
        store_env = event_store_env(settings.database_url, settings.db_pool_size)
        if not create:
            store_env["CREATE_TABLE"] = "n"  # the library's tables and function are there
        app = MfaApplication(store_env, vault)
        read_models = ReadModels(db, projections, create=create)
        epochs = SqlUserEpochs(db, derive_key(settings.master_key, "user-epochs"), create=create)
        decoys = SqlDecoyLockouts(db, derive_key(settings.master_key, "decoy-locks"), create=create)
    services = Services(
        app=app,
        clock=clock or SystemClock(),
        random=random or SystemRandom(),
        id_key=derive_key(settings.master_key, "aggregate-id"),
        totp_issuer=settings.totp_issuer,
        relying_party=RelyingParty(
            settings.webauthn_rp_id, settings.webauthn_rp_name, settings.webauthn_origins
        ),
        signer=signer,
        step_up_ttl_seconds=settings.step_up_ttl_seconds,
        trusted_device_days=settings.trusted_device_days,
        epochs=epochs,
        decoys=decoys,
        push_sender=HttpPushSender(
            settings.push_webhook_url, allow_private=settings.push_allow_private
        ),
        sms_sender=sms_sender,
        email_sender=email_sender,
    )
    secret = settings.jwt_secret if settings.jwt_public_key is None else None  # HS256 only
    if secret is not None and len(secret.encode()) < MIN_HS256_BYTES:
        # Refusing it would stop deployments that work today; RFC 7518 §3.2 asks for 32 bytes.
        log.warning(
            "MFA_JWT_SECRET is shorter than %d bytes: tokens signed with it can be forged "
            "by guessing it",
            MIN_HS256_BYTES,
        )
    in_process = settings.projections_in_process if run_projections is None else run_projections
    runner = None
    relay = None
    waker = None
    if in_process:
        # PostgreSQL: other processes append too, and their NOTIFYs wake what this process's
        # own appends wake (the listeners added below); the poll is only the fallback for what
        # a reconnecting waker missed.
        waker = log_waker_for(settings.database_url, app.recorder, app.listeners)
        poll = WOKEN_POLL_SECONDS if waker else UNWOKEN_POLL_SECONDS
        runner = ProjectionRunner(
            app, read_models, lease_for(settings.database_url, "projections"), poll
        )
        read_models.attach(runner)
        app.listeners.append(runner.wake)
        if settings.nats_url:
            relay = NatsRelay(
                app, db, settings.nats_url, lease_for(settings.database_url, "nats-relay"), poll
            )
            app.listeners.append(relay.wake)
    return Runtime(
        settings=settings,
        services=services,
        db=db,
        read_models=read_models,
        runner=runner,
        relay=relay,
        waker=waker,
    )


def close_runtime(runtime: Runtime) -> None:
    """Stop the background work and close the stores."""
    runtime.stop()
    runtime.services.app.close()
    runtime.db.close()


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Litestar:
    """The Litestar application. Projections start with it when they run in-process."""
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    quiet_library_loggers()
    install_server_log_limits()  # uvicorn's warnings, which any client can repeat at will
    rt = runtime or build_runtime(settings)
    # Only the API sends codes: the worker and the audit and projections commands send none.
    providers = {"MFA_SMS_WEBHOOK_URL": settings.sms_webhook_url, "MFA_SMTP_URL": settings.smtp_url}
    unset = [name for name, value in providers.items() if not value]
    if len(unset) == len(providers):
        log.warning(
            "%s unset: SMS and email codes are written to the log, not sent (development only)",
            " and ".join(unset),
        )
    elif unset:
        log.warning("%s unset: that channel's codes are not offered (409)", unset[0])
    # A handler holds one event-store connection at a time. More threads than that do not
    # add throughput, only contention for the GIL: 20 threads gave 17 % fewer validates than
    # 12 at concurrency 32 (bench/README.md).
    threads = settings.handler_threads or settings.db_pool_size + 2
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mfa")

    def on_startup(app: Litestar) -> None:
        import asyncio

        asyncio.get_running_loop().set_default_executor(executor)
        rt.start()

    def on_shutdown(app: Litestar) -> None:
        rt.stop()
        executor.shutdown(wait=False, cancel_futures=True)

    openapi = OpenAPIConfig(
        title="MFA service",
        version="0.1.0",
        path="/schema",
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
            }
        ),
        security=[{"BearerAuth": []}],
    )
    handlers: list[Any] = [
        health,
        health_head,
        ready,
        TotpController,
        BackupCodeController,
        MethodController,
        AdminTotpController,
        AuditController,
        RiskPolicyController,
        LevelPolicyController,
        IpAllowlistController,
        ConfigAuditLogController,
        InternalController,
        WebAuthnController,
        TrustedDeviceController,
        StepUpController,
        jwks,
        DemoController,
        AdminResetController,
        EraseController,
        PushDeviceController,
        PushController,
        InternalPushController,
        AdminPushController,
        SmsController,
        EmailController,
        *planned_handlers(),
    ]
    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "user": Provide(provide_user, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=apply_input_rules,
        after_request=html_not_found_as_problem,
        request_class=StrictJsonRequest,
        openapi_config=openapi,
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        request_max_body_size=64 * 1024,
        # Secrets are shown once (TOTP seeds, backup codes, device and step-up tokens) and every
        # answer is about one user's state: no cache or proxy may keep any of it.
        cache_control=CacheControlHeader(no_store=True),
        debug=False,
        # The root logger is set up above from MFA_LOG_LEVEL; Litestar's default configuration
        # would set it to INFO again. Unhandled errors are logged by `internal_error_handler`.
        logging_config=None,
    )
    app.state.runtime = rt
    app.state.verifier = TokenVerifier(settings)
    complete_document(app)
    return app
