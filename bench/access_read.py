"""Access gateway read side: supervision requests/s and p99, and SSE clients fed within 1 s.

Run from the checkout:  .venv/bin/python bench/access_read.py [--seconds 10] [--clients 50,200,500]

It starts its own embedded PostgreSQL in a temporary directory (removed afterwards), migrates
the stats projector's and the access gateway's schemas as ``plateau migrate`` would, writes
one tenant's supervision rows through the projector's real ``Projection`` (20 queues, 100
agents, calls waiting), and serves the gateway's application (``create_app``: security
headers, limits, authentication) with the supervision and stream routers under uvicorn in a
child process (one worker, as one gateway process). Every request authenticates for real
with a supervisor's API token, as a BI tool does (the rate limits are lifted). It prints:

1. ``GET /api/v1/queues``, ``/queues/{id}`` and ``/agents/{id}``: requests/s and latency
   p50/p99 with one client, then 16 concurrent keep-alive clients;
2. for N SSE clients of ``GET /api/v1/stream``: after a projector write, how many clients
   received the changed queue within 1 s of the commit, and the p50/p99 delay.

The load generator runs on the same machine as the server (2 cores here), so the figures
are a floor. Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents as ag
from plateau_contracts.events import routing as rt
from plateau_contracts.events.common import StreamedEvent
from plateau_runtime.consumer import apply_once
from plateau_runtime.db import Connection, connect, create_pool
from plateau_runtime.embedded import EmbeddedPostgres, free_port
from plateau_runtime.services import service
from plateau_runtime.testing import MigratedSchema, as_stored, make_schema
from plateau_stats_projector.adapters.read_models import Projection

TENANT = "bench"
QUEUES = 20
AGENTS = 100
CONCURRENCY = 16


def envelopes(
    timed: list[tuple[datetime, StreamedEvent]], versions: dict[str, int]
) -> list[Envelope]:
    return as_stored(TENANT, timed, versions)


async def project(dsn: str, events: list[Envelope], *, notify: bool) -> None:
    projection = Projection(notify=notify)
    conn = await connect(dsn)
    try:
        for envelope in events:

            async def effect(c: Connection, e: Envelope = envelope) -> None:
                await projection.apply(c, e)

            await apply_once(conn, "stats-projector", envelope, effect)
    finally:
        await conn.close()


def supervision_rows(versions: dict[str, int]) -> list[Envelope]:
    local = datetime.now(ZoneInfo("Africa/Brazzaville"))
    start = local.replace(hour=0, minute=1, second=0, microsecond=0).astimezone(UTC)
    timed: list[tuple[datetime, StreamedEvent]] = []
    for q in range(QUEUES):
        timed.append(
            (
                start,
                rt.QueueConfigured(
                    queue_id=f"q{q}",
                    name=f"Queue {q}",
                    strategy="longest_idle",
                    ring_timeout_s=15,
                    service_level_threshold_s=20,
                    service_level_target=0.8,
                ),
            )
        )
    for a in range(AGENTS):
        timed.append((start, ag.AgentLoggedIn(agent_id=f"a{a}", extension=f"{1000 + a}")))
        timed.append((start, ag.AgentBecameAvailable(agent_id=f"a{a}")))
    for n in range(QUEUES * 3):
        at = start + timedelta(seconds=n)
        queue = f"q{n % QUEUES}"
        timed.append(
            (at, rt.CallQueued(queue_id=queue, call_id=f"w{n}", direction="inbound", priority=0))
        )
    return envelopes(timed, versions)


def serve(stats: MigratedSchema, access: MigratedSchema, port: int) -> None:
    """The child process: the gateway's app with the supervision and stream routers under
    uvicorn, one worker."""
    import uvicorn

    from plateau_access_gateway.adapters.read_models import ReadModels
    from plateau_access_gateway.bootstrap import access_service
    from plateau_access_gateway.entrypoints.http import create_app
    from plateau_access_gateway.entrypoints.http_guards import RateLimiter
    from plateau_access_gateway.entrypoints.http_stream import ChangeFeed, stream_router
    from plateau_access_gateway.entrypoints.http_supervision import LiveViews, supervision_router
    from plateau_runtime.eventstore import EventStore

    async def main() -> None:
        pool = await create_pool(access.dsn, max_size=10)
        store = EventStore(pool, access.schema)
        service = access_service(pool, store)
        read_models = ReadModels(
            pool, schema=stats.schema, reader_role=f"{stats.service.role}_reader"
        )
        feed = ChangeFeed(access.dsn)
        await feed.start()
        live = LiveViews(read_models, feed)
        unlimited = 10**9
        app = create_app(
            service,
            routers=[supervision_router(live, service.audit), stream_router(live, feed)],
            source_limiter=RateLimiter(unlimited),
            principal_limiter=RateLimiter(unlimited),
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        await uvicorn.Server(config).serve()

    asyncio.run(main())


async def bench_token(access: MigratedSchema) -> str:
    """A client supervisor of the bench tenant and an API token of theirs (its secret)."""
    from plateau_access_gateway.bootstrap import access_service
    from plateau_access_gateway.domain.principal import Role
    from plateau_runtime.eventstore import EventStore

    pool = await create_pool(access.dsn, max_size=2)
    try:
        service = access_service(pool, EventStore(pool, access.schema))
        account, _ = await service.create_user(
            tenant=TENANT,
            username="bench.supervisor",
            role=Role.CLIENT_SUPERVISOR,
            password=None,
            created_by="bench",
        )
        return (await service.create_token(account, "bench", 1, "bench")).secret
    finally:
        await pool.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def hammer(
    base: str, path: str, seconds: float, concurrency: int, headers: dict[str, str]
) -> None:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            answer = await http.get(path)
            latencies.append(time.perf_counter() - began)
            errors += answer.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as http:
        await http.get(path)  # warm-up
        began = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = [x * 1000 for x in latencies]
    print(
        f"  GET {path:<22} {len(ms) / elapsed:8.0f} req/s   p50 {statistics.median(ms):6.1f} ms"
        f"   p99 {percentile(ms, 99):6.1f} ms   ({len(ms)} requests, {errors} errors, "
        f"{concurrency} concurrent)"
    )


async def fan_out(
    base: str,
    stats_dsn: str,
    clients: int,
    versions: dict[str, int],
    round_: int,
    headers: dict[str, str],
) -> None:
    ready = asyncio.Event()
    connected = 0
    received: dict[int, float] = {}
    target = f"q{round_ % QUEUES}"
    marker = f"bench-{round_}"  # each round queues one more call in its own queue

    def is_the_change(line: str) -> bool:
        data = json.loads(line.removeprefix("data: "))
        return data.get("queue_id") == target and data.get("calls_waiting", 0) > 3

    async def client(n: int, http: httpx.AsyncClient) -> None:
        nonlocal connected
        in_snapshot = True
        async with http.stream("GET", "/api/v1/stream") as answer:
            async for line in answer.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if in_snapshot:
                    # The snapshot ends with the last agent (ids in text order).
                    if f'"agent_id":"a{AGENTS - 1}"' in line:
                        in_snapshot = False
                        connected += 1
                        if connected == clients:
                            ready.set()
                elif target in line and is_the_change(line):
                    received[n] = time.perf_counter()
                    return

    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers) as http:
        tasks = [asyncio.create_task(client(n, http)) for n in range(clients)]
        try:
            await asyncio.wait_for(ready.wait(), 120)
        except TimeoutError:
            print(f"  {clients:5d} SSE clients: only {connected} got their snapshot in 120 s")
            for task in tasks:
                task.cancel()
            return
        local = datetime.now(ZoneInfo("Africa/Brazzaville"))
        at = local.replace(hour=0, minute=2, second=0, microsecond=0).astimezone(UTC)
        event = rt.CallQueued(
            queue_id=target, call_id=f"{marker}-c", direction="inbound", priority=0
        )
        write = envelopes([(at, event)], versions)
        committed = time.perf_counter()
        await project(stats_dsn, write, notify=True)
        committed = (committed + time.perf_counter()) / 2
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
    delays = [(received[n] - committed) * 1000 for n in received]
    within = sum(1 for d in delays if d <= 1000)
    if delays:
        print(
            f"  {clients:5d} SSE clients: {within} fed within 1 s of the commit "
            f"({len(delays)} within 10 s); delay p50 {statistics.median(delays):6.0f} ms, "
            f"p99 {percentile(delays, 99):6.0f} ms"
        )
    else:
        print(f"  {clients:5d} SSE clients: none received the change within 10 s")


async def run(work: Path, pg: EmbeddedPostgres, seconds: float, client_counts: list[int]) -> None:
    stats = await make_schema(pg.admin_dsn, service("stats-projector").migrations_dir(), prefix="s")
    access = await make_schema(pg.admin_dsn, service("access-gateway").migrations_dir(), prefix="a")
    admin = await connect(pg.admin_dsn)
    try:
        await admin.execute(f"grant {stats.service.role}_reader to {access.service.role}")
    finally:
        await admin.close()
    versions: dict[str, int] = {}
    await project(stats.dsn, supervision_rows(versions), notify=False)
    headers = {"authorization": f"Bearer {await bench_token(access)}"}
    port = free_port()
    child = multiprocessing.get_context("spawn").Process(
        target=serve, args=(stats, access, port), daemon=True
    )
    child.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(200):
                try:
                    await http.get("/api/v1/openapi.json")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        print(f"supervision ({QUEUES} queues, {AGENTS} agents, one tenant, one server process):")
        for concurrency in (1, CONCURRENCY):
            for path in ("/api/v1/queues", "/api/v1/queues/q3", "/api/v1/agents/a7"):
                await hammer(base, path, seconds, concurrency, headers)
        print("SSE fan-out (one projector write, every client subscribed to the tenant):")
        for n, clients in enumerate(client_counts):
            await fan_out(base, stats.dsn, clients, versions, n, headers)
    finally:
        child.terminate()
        child.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="50,200,500")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, {platform.machine()}, Python {sys.version.split()[0]}")
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-access-"))
    work.chmod(0o755)
    pg = EmbeddedPostgres(work / "pg" / "data", free_port())
    pg.start()
    try:
        asyncio.run(run(work, pg, args.seconds, [int(c) for c in args.clients.split(",")]))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
