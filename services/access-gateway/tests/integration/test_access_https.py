"""The access gateway as it runs: the service host serving the API over real TLS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from access_harness import PASSWORD
from fastapi import FastAPI

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import Passwords, default_policy
from plateau_access_gateway.adapters.tls import ensure_self_signed
from plateau_access_gateway.bootstrap import SPEC, wire
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.entrypoints.https_server import HttpsServer
from plateau_access_gateway.handlers import AccessService
from plateau_access_gateway.settings import AccessSettings
from plateau_runtime.embedded import EmbeddedBroker, free_port
from plateau_runtime.errors import ConfigurationError
from plateau_runtime.eventstore import EventStore
from plateau_runtime.service import ServiceHost
from plateau_runtime.testing import MigratedSchema

pytestmark = pytest.mark.integration


async def _listening(port: int) -> None:
    for _ in range(300):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@contextlib.asynccontextmanager
async def running_gateway(
    monkeypatch: pytest.MonkeyPatch,
    schema: MigratedSchema,
    bootstrap: str,
    tls: tuple[Path, Path],
) -> AsyncIterator[int]:
    port = free_port()
    for name, value in {
        "PLATEAU_DATABASE_URL": schema.dsn,
        "PLATEAU_KAFKA_BOOTSTRAP": bootstrap,
        "PLATEAU_GRPC_PORT": str(free_port()),
        "PLATEAU_HTTPS_PORT": str(port),
        "PLATEAU_TLS_CERT_FILE": str(tls[0]),
        "PLATEAU_TLS_KEY_FILE": str(tls[1]),
        "PLATEAU_LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    # The composition root of the real service, on the test's throw-away schema.
    spec = dataclasses.replace(SPEC, schema=schema.schema)
    host = ServiceHost(spec, wire, settings_type=AccessSettings)
    serving = asyncio.create_task(host.serve(stop))
    try:
        await _listening(port)
        yield port
    finally:
        stop.set()
        await serving


async def test_the_service_serves_the_api_over_tls_with_secure_cookies(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    broker: EmbeddedBroker,
) -> None:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert ensure_self_signed(cert, key)
    assert not ensure_self_signed(cert, key)  # once: an existing pair is kept
    assert key.stat().st_mode & 0o777 == 0o600
    access = AccessService(
        AccountsRepository(service_pool),
        AuditTrail(EventStore(service_pool, service_schema.schema)),
        Passwords(),
        default_policy(),
    )
    await access.create_user(
        tenant="operator",
        username="tls.admin",
        role=Role.OPERATOR_ADMIN,
        password=PASSWORD,
        created_by="test",
    )
    trust = ssl.create_default_context(cafile=str(cert))
    async with running_gateway(monkeypatch, service_schema, broker.bootstrap, (cert, key)) as port:
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust) as client:
            started = await client.post(
                "/api/v1/auth/login", json={"username": "tls.admin", "password": PASSWORD}
            )
            assert started.status_code == 200, started.text
            assert "Secure" in started.headers["set-cookie"]
            me = await client.get("/api/v1/me")
            assert me.status_code == 200 and me.json()["username"] == "tls.admin"
            assert me.headers["strict-transport-security"].startswith("max-age=")
            assert "server" not in me.headers
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}") as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/api/v1/openapi.json")  # self-signed: not trusted by default
        with pytest.raises(httpx.RemoteProtocolError):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
                await plain.get("/api/v1/openapi.json")  # no plain HTTP on the TLS port
    logged_in = [e for e in await access.audit.page() if e.envelope.type == "user.logged_in"]
    assert len(logged_in) == 1


async def test_a_taken_port_is_a_clear_error_not_an_exit(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        server = HttpsServer(FastAPI(), "127.0.0.1", port, cert, key)
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            await server.run(asyncio.Event())
    finally:
        taken.close()
    with pytest.raises(ConfigurationError, match="PLATEAU_TLS_CERT_FILE"):
        HttpsServer(FastAPI(), "127.0.0.1", port, None, None)
