"""Cost of the access gateway's authentication, measured in process.

Run from the checkout:  .venv/bin/python bench/access_auth.py

It starts its own embedded PostgreSQL in a temporary directory (removed afterwards),
migrates the gateway's schema, and prints: argon2id hash and verify times with the
production parameters; login latency (password only) and how long refused logins take
for an unknown user, a wrong password and a locked account (they should be alike, so
timing does not tell them apart); and requests/s with p50/p99 latency of an authenticated
``GET /api/v1/me`` (session cookie: lookup, idle check, touch, principal) through the whole
middleware stack over httpx's ASGI transport, at 1 and 16 concurrent clients. Figures only.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from plateau_access_gateway.adapters.accounts import AccountsRepository
from plateau_access_gateway.adapters.audit import AuditTrail
from plateau_access_gateway.adapters.credentials import Passwords, default_policy
from plateau_access_gateway.bootstrap import SPEC
from plateau_access_gateway.domain.lockout import FailureRecord
from plateau_access_gateway.domain.principal import Role
from plateau_access_gateway.entrypoints.http import create_app
from plateau_access_gateway.entrypoints.http_guards import RateLimiter
from plateau_access_gateway.handlers import AccessService
from plateau_runtime.db import connect, create_pool
from plateau_runtime.embedded import EmbeddedPostgres, free_port
from plateau_runtime.eventstore import EventStore
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn

PASSWORD = "Lagune-Brazza-Mpila-42"
LOGINS = 20
PHASE_SECONDS = 3.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_requests(
    concurrency: int, request: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + PHASE_SECONDS

    async def worker(w: int) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await request(w)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def run_bench(pg: EmbeddedPostgres) -> None:
    schema = ServiceSchema("bench_access", SPEC.migrations_dir())
    password = secrets.token_urlsafe(16)
    admin = await connect(pg.admin_dsn)
    try:
        await migrate(admin, schema, password)
    finally:
        await admin.close()
    pool = await create_pool(role_dsn(pg.admin_dsn, schema, password), max_size=20)
    try:
        passwords = Passwords()
        service = AccessService(
            AccountsRepository(pool),
            AuditTrail(EventStore(pool, schema.schema)),
            passwords,
            default_policy(),
        )
        hashes = [await passwords.hash(PASSWORD) for _ in range(5)]
        began = time.perf_counter()
        for _ in range(5):
            await passwords.hash(PASSWORD)
        hash_ms = (time.perf_counter() - began) / 5 * 1000
        began = time.perf_counter()
        for stored in hashes:
            await passwords.verify(stored, PASSWORD)
        verify_ms = (time.perf_counter() - began) / 5 * 1000
        print(f"argon2id (t=3, m=64 MiB, p=4): hash {hash_ms:.0f} ms, verify {verify_ms:.0f} ms")

        await service.create_user(
            tenant="operator",
            username="bench.admin",
            role=Role.OPERATOR_ADMIN,
            password=PASSWORD,
            created_by="bench",
        )
        await service.create_user(
            tenant="operator",
            username="bench.locked",
            role=Role.OPERATOR_ADMIN,
            password=PASSWORD,
            created_by="bench",
        )
        app = create_app(
            service,
            source_limiter=RateLimiter(10_000_000),
            principal_limiter=RateLimiter(10_000_000),
        )
        sources = iter(range(1, 1_000_000))

        def client() -> httpx.AsyncClient:
            # A new source each time, so the per-source lockout does not shape the figures.
            n = next(sources)
            transport = httpx.ASGITransport(
                app=app, client=(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1)
            )
            return httpx.AsyncClient(transport=transport, base_url="https://bench.test")

        async def login_ms(username: str, secret: str) -> tuple[float, int]:
            async with client() as c:
                began = time.perf_counter()
                response = await c.post(
                    "/api/v1/auth/login", json={"username": username, "password": secret}
                )
                return (time.perf_counter() - began) * 1000, response.status_code

        for _ in range(6):
            await login_ms("bench.locked", "Wrong-Password-0")  # locks it
        rows = {
            "accepted (password right)": ("bench.admin", PASSWORD),
            "refused: unknown user": ("nobody.at.all", "Wrong-Password-0"),
            "refused: wrong password": ("bench.admin", "Wrong-Password-0"),
            "refused: locked account": ("bench.locked", PASSWORD),
        }
        print(f"login latency over {LOGINS} attempts each (ms):   p50     p99   status")
        for label, (username, secret) in rows.items():
            samples = []
            status = 0
            for _ in range(LOGINS):
                elapsed, status = await login_ms(username, secret)
                samples.append(elapsed)
                if label.endswith("wrong password"):  # keep it below the lockout threshold
                    found = await service.repository.by_username(username)
                    assert found is not None
                    await service.repository.set_account_failures(found[0].user_id, FailureRecord())
            print(
                f"  {label:<38} {statistics.median(samples):6.0f} "
                f"{percentile(samples, 0.99):7.0f}   {status}"
            )

        transport = httpx.ASGITransport(app=app, client=("10.255.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://bench.test") as c:
            await c.post(
                "/api/v1/auth/login", json={"username": "bench.admin", "password": PASSWORD}
            )
            cookies = c.cookies
        for concurrency in (1, 16):
            browsers = [
                httpx.AsyncClient(
                    transport=transport, base_url="https://bench.test", cookies=cookies
                )
                for _ in range(concurrency)
            ]

            async def me(w: int, browsers: list[httpx.AsyncClient] = browsers) -> None:
                response = await browsers[w].get("/api/v1/me")
                assert response.status_code == 200, response.text

            rate, latencies = await timed_requests(concurrency, me)
            for browser in browsers:
                await browser.aclose()
            print(
                f"GET /api/v1/me with a session, {concurrency:>2} concurrent: "
                f"{rate:,.0f} requests/s, p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
            )
    finally:
        await pool.close()


def main() -> None:
    print(f"$ {os.path.relpath(sys.executable)} {os.path.relpath(__file__)}")
    print(
        f"machine: {platform.platform()}, nproc {os.cpu_count()}, "
        f"Python {platform.python_version()}"
    )
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)
    pg = EmbeddedPostgres(work / "pg" / "data", free_port())
    started = time.perf_counter()
    try:
        pg.start()
        asyncio.run(run_bench(pg))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
