"""What two cooperating gateway replicas cost: forwarded CallControl and shared bindings.

Run from the checkout:  .venv/bin/python bench/gateway_replicas.py [REQUESTS]

Starts the embedded PostgreSQL in a temp dir, migrates the gateway's schema, runs replicas
A and B in this process over it (SIP and gRPC on loopback, as the integration tests do),
and a sipp carrier whose call waits on A. Then, ``REQUESTS`` times each (default 500):

* ``Hold`` sent to A, which holds the call (the answer is FAILED_PRECONDITION: a waiting
  call cannot be held; the round trip is what counts);
* the same ``Hold`` sent to B: owner looked up, forwarded to A, A's answer passed back;
* ``Hangup`` of a call no replica holds, sent to B (owner looked up, NOT_FOUND);

and how long a binding written by B takes to be seen by A (write, NOTIFY, reload), 100
times. Prints p50/p99 of each in milliseconds. Figures only: nothing here asserts a speed.
Needs ``sipp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc

from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.db import create_pool
from plateau_runtime.embedded import EmbeddedPostgres
from plateau_runtime.embedded import free_port as free_tcp_port
from plateau_runtime.eventstore import EventStore
from plateau_runtime.grpc_server import GrpcServer
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn
from plateau_sip_gateway.bootstrap import Gateway
from plateau_sip_gateway.domain.registrar import Binding
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.entrypoints.call_control import call_control_service
from plateau_sip_gateway.settings import GatewaySettings
from plateau_sip_gateway.testing.sipp import carrier_refused, start_sipp, write

TENANT = "demo"
DNIS = "053000100"
METADATA = (("x-plateau-tenant", TENANT),)
MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "sip-gateway" / "migrations"
TRUNKS = TrunksConfig.model_validate(
    {
        "trunks": [
            {
                "name": "carrier",
                "tenant": TENANT,
                "source_networks": ["127.0.0.1/32"],
                "entry_points": {"+242053000100": "sales"},
                "capacity": {"kind": "calls", "max_calls": 10},
                "options_interval_s": 0,
            }
        ]
    }
)


@contextlib.asynccontextmanager
async def replica(
    pool: asyncpg.Pool, schema: str, home: Path, name: str
) -> AsyncIterator[tuple[Gateway, pb_grpc.CallControlStub, int]]:
    grpc_port = free_tcp_port()
    settings = GatewaySettings(
        sip_port=0,
        sip_tcp=False,
        home=home,
        sip_tenant=TENANT,
        sip_nonce_secret="bench-nonce-key-0123456789",
        sip_replica=name,
        sip_replica_address=f"127.0.0.1:{grpc_port}",
    )
    gateway = Gateway.build(
        settings, EventStore(pool, schema), trunks=TRUNKS, passwords={}, pool=pool
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    server = GrpcServer(
        "127.0.0.1", grpc_port, [call_control_service(gateway.b2bua, gateway.replicas)]
    )
    try:
        await asyncio.wait_for(gateway.ready.wait(), 15)
        await server.start()
        assert gateway.endpoint is not None
        sip_port = gateway.endpoint.local_address("UDP")[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield gateway, pb_grpc.CallControlStub(channel), sip_port
    finally:
        await server.stop(0.5)
        stop.set()
        await asyncio.wait_for(task, 15)


async def until(check: Callable[[], bool], poll_s: float) -> None:
    for _ in itertools.count():
        if check():
            return
        await asyncio.sleep(poll_s)


async def timed(times: int, act: Callable[[], Awaitable[object]]) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await act()
        took.append((time.perf_counter() - started) * 1000)
    return took


def report(what: str, took: list[float]) -> None:
    cuts = statistics.quantiles(took, n=100)
    print(f"{what:<58} p50 {cuts[49]:6.2f} ms   p99 {cuts[98]:6.2f} ms   (n={len(took)})")


async def run_bench(pg: EmbeddedPostgres, work: Path, requests: int) -> None:
    service = ServiceSchema("sip_gateway", MIGRATIONS)
    password = "bench-" + os.urandom(8).hex()
    admin = await asyncpg.connect(pg.admin_dsn)
    try:
        await migrate(admin, service, password)
    finally:
        await admin.close()
    pool = await create_pool(role_dsn(pg.admin_dsn, service, password), max_size=20)
    try:
        async with (
            replica(pool, service.schema, work / "a", "gw-a") as (a, to_a, a_sip),
            replica(pool, service.schema, work / "b", "gw-b") as (b, to_b, _),
        ):
            carrier = await start_sipp(
                [
                    "-sf",
                    write(work, "carrier.xml", carrier_refused(480, True, 55_000)),
                    "-s",
                    DNIS,
                    "-m",
                    "1",
                    f"127.0.0.1:{a_sip}",
                ],
                work,
            )
            await until(lambda: a.b2bua.open_calls > 0, 0.01)
            [call_id] = list(a.b2bua._calls)
            await a.recorder.drain()
            hold = pb.HoldRequest(call_id=call_id)
            await timed(20, lambda: to_b.Hold(hold, metadata=METADATA))  # warm up
            report(
                "Hold to the owner (A)",
                await timed(requests, lambda: to_a.Hold(hold, metadata=METADATA)),
            )
            report(
                "Hold to B, forwarded to A",
                await timed(requests, lambda: to_b.Hold(hold, metadata=METADATA)),
            )
            unknown = pb.HangupRequest(call_id="nobody-holds-this")
            report(
                "Hangup of an unknown call to B (owner lookup, NOT_FOUND)",
                await timed(requests, lambda: to_b.Hangup(unknown, metadata=METADATA)),
            )
            assert b.mirror is not None and a.bindings is not None
            seen = []
            for n in range(100):
                aor = f"bench-{n}"
                now = time.time()
                binding = Binding(aor, f"sip:{aor}@127.0.0.1:5999", now + 600, "c", 1, now)
                started = time.perf_counter()
                b.mirror.changed(aor, (binding,))
                await until(lambda: bool(a.bindings.lookup(aor, time.time())), 0.0005)  # noqa: B023
                seen.append((time.perf_counter() - started) * 1000)
            report("binding written by B seen by A (write, NOTIFY, reload)", seen)
            await to_b.Hangup(pb.HangupRequest(call_id=call_id), metadata=METADATA)
            code, _ = await carrier.result()
            print(f"carrier sipp exit code {code} (0: the call ended through B)")
    finally:
        await pool.close()


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print(f"$ {os.path.relpath(sys.executable)} {os.path.relpath(__file__)} {requests}")
    print(
        f"machine: {platform.platform()}, nproc {os.cpu_count()}, "
        f"Python {platform.python_version()}"
    )
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)
    for name in ("a", "b"):
        (work / name).mkdir()
    pg = EmbeddedPostgres(work / "pg" / "data", free_tcp_port())
    try:
        pg.start()
        asyncio.run(run_bench(pg, work, requests))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
