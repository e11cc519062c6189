"""A running access gateway for tests: real PostgreSQL, the app over httpx's ASGI transport,
an injected clock, cheap argon2 parameters (the cost is not what these tests check)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import (
    Argon2Parameters,
    Passwords,
    default_policy,
    totp_code,
)
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.entrypoints.http import create_app
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.handlers import AccessService
from plateau_contracts.catalogue import parse
from plateau_runtime.eventstore import EventStore

CHEAP = Argon2Parameters(time_cost=1, memory_cost_kib=1024, parallelism=1)
PASSWORD = "Lagune-Brazza-Mpila-42"
BASE_URL = "https://gateway.test"


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 5, 4, 8, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Gateway:
    service: AccessService
    store: EventStore
    clock: Clock
    app: Any

    def client(self, source: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(source, 50000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    async def user(
        self, username: str, role: Role = Role.CLIENT_ANALYST, tenant: str = "acme", **kw: Any
    ) -> str:
        account, _ = await self.service.create_user(
            tenant=tenant,
            username=username,
            role=role,
            password=PASSWORD,
            created_by="test",
            **kw,
        )
        return account.user_id

    async def events(self, type_: str | None = None) -> list[Any]:
        found = [s async for s in self.store.iterate()]
        return [parse(s.envelope) for s in found if type_ is None or s.envelope.type == type_]

    def code(self, secret: str, **offset: float) -> str:
        return totp_code(secret, self.clock.now + timedelta(**offset))


@asynccontextmanager
async def gateway(pool: asyncpg.Pool, schema: str, **app_options: Any) -> AsyncIterator[Gateway]:
    clock = Clock()
    store = EventStore(pool, schema, clock=clock)
    service = AccessService(
        AccountsRepository(pool),
        AuditTrail(store),
        Passwords(CHEAP),
        default_policy(),
        clock=clock,
    )
    app_options.setdefault("source_limiter", RateLimiter(10_000))
    yield Gateway(service, store, clock, create_app(service, **app_options))


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def enrol(
    gw: Gateway, client: httpx.AsyncClient, username: str
) -> tuple[str, list[str], str]:
    """Log a client user in for the first time: password, TOTP enrolment, confirmation.

    Returns the TOTP seed, the recovery codes and the active session's CSRF token.
    """
    first = await login(client, username)
    assert first.status_code == 200, first.text
    assert first.json()["stage"] == "enrol_totp"
    csrf = {"x-csrf-token": first.json()["csrf_token"]}
    enrolment = await client.post("/api/v1/auth/totp/enrolment", headers=csrf)
    assert enrolment.status_code == 200, enrolment.text
    secret = enrolment.json()["secret"]
    confirmed = await client.post(
        "/api/v1/auth/totp/confirm", json={"code": gw.code(secret)}, headers=csrf
    )
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    return secret, body["recovery_codes"], body["csrf_token"]
