"""The composition root of the access gateway: its parts, wired by constructor injection."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import Passwords, default_policy
from plateau_access_gateway.adapters.read_models import ReadModels
from plateau_access_gateway.adapters.signing_keys import signer_from_setting
from plateau_access_gateway.domain.sessions import SessionPolicy
from plateau_access_gateway.entrypoints.http import create_app
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.entrypoints.http_read import read_routers
from plateau_access_gateway.entrypoints.http_stream import ChangeFeed
from plateau_access_gateway.entrypoints.https_server import HttpsServer
from plateau_access_gateway.entrypoints.web import web_router
from plateau_access_gateway.handlers import AccessService
from plateau_access_gateway.settings import AccessSettings
from plateau_runtime.eventstore import EventStore
from plateau_runtime.service import Components, ServiceHost, ServiceResources
from plateau_runtime.services import ServiceSpec, service

SPEC: ServiceSpec = service("access-gateway")


def access_service(
    pool: asyncpg.Pool, store: EventStore, settings: AccessSettings | None = None
) -> AccessService:
    """Accounts and authentication over the gateway's schema and event store."""
    settings = settings or AccessSettings()
    return AccessService(
        AccountsRepository(pool),
        AuditTrail(store),
        Passwords(),
        default_policy(),
        sessions=SessionPolicy(
            idle=timedelta(minutes=settings.session_idle_minutes),
            lifetime=timedelta(hours=settings.session_lifetime_hours),
        ),
    )


def wire(resources: ServiceResources) -> Components:
    """The access gateway's background task: the HTTPS API (uvicorn) on its settings."""
    settings = resources.settings
    if not isinstance(settings, AccessSettings):
        settings = AccessSettings.model_validate(settings.model_dump())
    access = access_service(resources.pool, resources.store, settings)
    # One LISTEN connection per process feeds every browser's stream.
    feed = ChangeFeed(settings.database_url)
    signer = signer_from_setting(settings.export_signing_key, settings.home)
    app = create_app(
        access,
        routers=read_routers(ReadModels(resources.pool), AuditTrail(resources.store), signer, feed),
        pages=web_router(),
        max_request_bytes=settings.max_request_bytes,
        source_limiter=RateLimiter(settings.rate_per_source),
        principal_limiter=RateLimiter(settings.rate_per_principal),
        state={"pool": resources.pool, "store": resources.store},
    )
    server = HttpsServer(
        app,
        settings.https_host,
        settings.https_port,
        settings.tls_cert_file,
        settings.tls_key_file,
    )

    async def serve(stop: asyncio.Event) -> None:
        await feed.start()
        try:
            await server.run(stop)
        finally:
            await feed.stop()

    return Components(tasks={"https": serve})


def build_host() -> ServiceHost:
    """The host that runs the access gateway (``python -m plateau_access_gateway``)."""
    return ServiceHost(SPEC, wire, settings_type=AccessSettings)
