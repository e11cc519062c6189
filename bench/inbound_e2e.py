"""Inbound calls through the whole path with the real acd, next to sipp talking to sipp.

Run from the checkout:  .venv/bin/python bench/inbound_e2e.py [RATE ...]

Starts the embedded PostgreSQL and broker in a temp dir, the sip-gateway and the acd as
their own processes (``python -m plateau_sip_gateway``, ``python -m plateau_acd``), one
``sipp -sn uas`` answering for AGENTS extensions registered with digest auth, configures a
tenant with ``python -m plateau_acd.configure``, logs the agents in through ``AgentDesk``
and makes them available (no wrap-up). For each rate (calls/s, default 20 50 100) sipp
plays the carrier for ``SECONDS`` and the bench prints achieved calls/s, failed calls,
post-dial delay (INVITE -> 180) p50/p99, queue-to-agent p50/p99 (``waited_ms`` of the
acd's ``call.agent_reserved``: from ``call.queued`` to the reservation), and fact-to-acd
p50/p99 (from a call's answer or end at the gateway, ``occurred_at``, to the acd's
``call.answered`` or ``agent.wrap_up_started`` recorded: gateway store, relay, bus and the
acd's decision, the path that frees an agent for the next call), and the CPU time the acd
and the gateway spent per call (a figure that holds on a machine busy with other work,
where calls/s does not); then the same
carrier scenario against ``sipp -sn uas`` directly (the baseline). Figures only: nothing
here asserts a speed. Needs ``sipp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from sip_inbound import (
    SECONDS,
    TALK_MS,
    carrier_run,
    make_work_dir,
    percentile,
    platform,
)

from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_runtime.db import connect, create_pool
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.migrations import ServiceSchema, migrate, role_dsn
from plateau_runtime.services import service
from plateau_sip_gateway.testing.inbound import spawn_gateway
from plateau_sip_gateway.testing.sipp import (
    free_both,
    free_media_ports,
    free_port,
    register,
    run_sipp,
    sipp_binary,
)

AGENTS = 160  # 200 calls/s of 500 ms talk keep over 100 agents busy
TENANT = "bench"
EXTENSIONS = [str(2000 + n) for n in range(AGENTS)]


async def migrated(admin_dsn: str, schema: ServiceSchema) -> str:
    password = secrets.token_urlsafe(16)
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, schema, password)
    finally:
        await admin.close()
    return role_dsn(admin_dsn, schema, password)


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            sys.exit(f"{what} exited: see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            return
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not start within 30 s: see {log}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def tenant_file(work: Path) -> Path:
    path = work / "tenant.json"
    path.write_text(
        json.dumps(
            {
                "tenants": [
                    {
                        "id": TENANT,
                        "name": "Bench",
                        "queues": [{"id": "q-bench", "name": "Bench", "wrap_up_s": 0}],
                        "entry_points": [{"dnis": "+242053000100", "queue": "q-bench"}],
                        "agents": [{"id": f"a-{e}", "name": e, "extension": e} for e in EXTENSIONS],
                    }
                ]
            }
        )
    )
    return path


def start_acd(env: dict[str, str], work: Path) -> subprocess.Popen[bytes]:
    """Configure the bench tenant with the acd's tool, then start the acd."""
    subprocess.run(
        [sys.executable, "-m", "plateau_acd.configure", "apply", str(tenant_file(work))],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with (work / "acd.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plateau_acd"], env=env, stdout=out, stderr=out
        )


@dataclass(frozen=True)
class Running:
    """The gateway and the acd as the bench reaches them."""

    sip_port: int
    acd_grpc: int
    acd_dsn: str
    acd: psutil.Process
    gateway: psutil.Process


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@contextlib.asynccontextmanager
async def processes(
    admin_dsn: str, broker: EmbeddedBroker, work: Path, password: str
) -> AsyncIterator[Running]:
    """Gateway and acd running."""
    gateway_dsn = await migrated(admin_dsn, service("sip-gateway").service_schema())
    acd_dsn = await migrated(admin_dsn, service("acd").service_schema())
    (work / "trunks.json").write_text(
        json.dumps(
            {
                "trunks": [
                    {
                        "name": "carrier",
                        "tenant": TENANT,
                        "source_networks": ["127.0.0.1/32"],
                        "entry_points": {"+242053000100": "sales"},
                        "capacity": {"kind": "calls", "max_calls": 5000},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    (work / "extensions.json").write_text(json.dumps(dict.fromkeys(EXTENSIONS, password)))
    sip_port, gw_grpc, acd_grpc = free_both(), *(free_port(socket.SOCK_STREAM) for _ in "ab")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    base |= {
        "PLATEAU_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PLATEAU_LOG_LEVEL": "warning",
        "PLATEAU_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    gateway = spawn_gateway(
        base
        | {
            "PLATEAU_HOME": str(work / "home"),
            "PLATEAU_DATABASE_URL": gateway_dsn,
            "PLATEAU_GRPC_PORT": str(gw_grpc),
            "PLATEAU_SIP_PORT": str(sip_port),
            "PLATEAU_SIP_TRUNKS_FILE": str(work / "trunks.json"),
            "PLATEAU_SIP_EXTENSIONS_FILE": str(work / "extensions.json"),
            "PLATEAU_SIP_TENANT": TENANT,
        },
        work / "gateway.log",
    )
    acd_env = base | {
        "PLATEAU_DATABASE_URL": acd_dsn,
        "PLATEAU_GRPC_PORT": str(acd_grpc),
        "PLATEAU_CALL_CONTROL_TARGET": f"127.0.0.1:{gw_grpc}",
    }
    acd = start_acd(acd_env, work)
    try:
        wait_port(gw_grpc, gateway, "the gateway", work / "gateway.log")
        wait_port(acd_grpc, acd, "the acd", work / "acd.log")
        await asyncio.sleep(1.0)
        yield Running(
            sip_port, acd_grpc, acd_dsn, psutil.Process(acd.pid), psutil.Process(gateway.pid)
        )
    finally:
        stop(acd)
        stop(gateway)


async def agents_ready(
    work: Path, sip_port: int, acd_grpc: int, password: str
) -> asyncio.subprocess.Process:
    """Register every extension on one sipp UAS, log each agent in, make it available;
    the UAS process (kill it when done)."""
    agent_port = free_port()
    uas = await asyncio.create_subprocess_exec(
        sipp_binary(),
        *["-sn", "uas", "-i", "127.0.0.1", "-p", str(agent_port), "-nostdin"],
        *["-mp", str(free_media_ports())],
        cwd=work,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for extension in EXTENSIONS:
            scenario = work / "register.xml"
            scenario.write_text(register(extension, password, agent_port))
            code, output = await run_sipp(
                ["-sf", str(scenario), "-m", "1", f"127.0.0.1:{sip_port}"], work, timeout=30
            )
            if code != 0:
                sys.exit(f"agent {extension} could not register:\n{output}")
        metadata = (("x-plateau-tenant", TENANT),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{acd_grpc}") as channel:
            stub = desk_grpc.AgentDeskStub(channel)
            for extension in EXTENSIONS:
                agent_id = f"a-{extension}"
                await stub.Login(desk.LoginRequest(agent_id=agent_id), metadata=metadata)
                await stub.SetAvailable(
                    desk.SetAvailableRequest(agent_id=agent_id), metadata=metadata
                )
    except BaseException:
        # Not left behind when an agent cannot register (sys.exit) or the bench stops.
        uas.kill()
        await uas.wait()
        raise
    return uas


async def queue_to_agent(acd_dsn: str, after: int) -> tuple[list[float], list[float], int]:
    """``waited_ms`` of the reservations recorded after ``after``, the fact-to-acd lags (ms)
    of the answers and wrap-ups recorded after it, and the last position."""
    pool = await create_pool(acd_dsn, max_size=1)
    try:
        rows = await pool.fetch(
            "select position, data from events where type = 'call.agent_reserved' "
            "and position > $1 order by position",
            after,
        )
        lags = await pool.fetch(
            "select extract(epoch from recorded_at - occurred_at) * 1000 as lag from events "
            "where type in ('call.answered', 'agent.wrap_up_started') and position > $1",
            after,
        )
        last = await pool.fetchval("select coalesce(max(position), 0) from events")
    finally:
        await pool.close()
    waits = [float(r["data"]["waited_ms"]) for r in rows]
    return waits, [float(r["lag"]) for r in lags], int(last)


async def main(rates: list[int]) -> None:
    work = make_work_dir()
    password = secrets.token_urlsafe(12)
    print(
        f"inbound calls through gateway + acd, {SECONDS} s per rate, {TALK_MS} ms talk, "
        f"{AGENTS} agents; PDD = INVITE -> 180; Q->A = call.queued -> call.agent_reserved; "
        "F->A = answer or end at the gateway -> the acd's decision recorded"
    )
    header = (
        f"{'path':<24}{'rate':>6}{'calls/s':>9}{'failed':>8}{'PDD p50':>9}{'p99':>8}"
        f"{'Q->A p50':>10}{'p99':>8}{'F->A p50':>10}{'p99':>8}{'CPU ms/call acd':>16}{'gw':>6}"
    )
    with platform(work) as (admin_dsn, broker):
        async with processes(admin_dsn, broker, work, password) as running:
            sip_port, acd_dsn = running.sip_port, running.acd_dsn
            uas = await agents_ready(work, sip_port, running.acd_grpc, password)
            try:
                _, _, position = await queue_to_agent(acd_dsn, 0)
                print(header)
                for rate in rates:
                    cpu = cpu_seconds(running.acd), cpu_seconds(running.gateway)
                    ok, failed, seconds, delays = await carrier_run(
                        f"127.0.0.1:{sip_port}", rate, work
                    )
                    await asyncio.sleep(2)  # the last reservations are recorded
                    acd_ms = (cpu_seconds(running.acd) - cpu[0]) * 1000 / max(ok, 1)
                    gateway_ms = (cpu_seconds(running.gateway) - cpu[1]) * 1000 / max(ok, 1)
                    waits, lags, position = await queue_to_agent(acd_dsn, position)
                    print(
                        f"{'sipp->gw->acd->sipp':<24}{rate:>6}{ok / seconds:>9.1f}{failed:>8}"
                        f"{percentile(delays, 50):>9.1f}{percentile(delays, 99):>8.1f}"
                        f"{percentile(waits, 50):>10.1f}{percentile(waits, 99):>8.1f}"
                        f"{percentile(lags, 50):>10.1f}{percentile(lags, 99):>8.1f}"
                        f"{acd_ms:>16.2f}{gateway_ms:>6.2f}",
                        flush=True,
                    )
            finally:
                uas.kill()
                await uas.wait()
        baseline_port = free_both()
        uas = await asyncio.create_subprocess_exec(
            sipp_binary(),
            *["-sn", "uas", "-i", "127.0.0.1", "-p", str(baseline_port), "-nostdin"],
            *["-mp", str(free_media_ports())],
            cwd=work,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            for rate in rates:
                ok, failed, seconds, delays = await carrier_run(
                    f"127.0.0.1:{baseline_port}", rate, work
                )
                print(
                    f"{'sipp->sipp (baseline)':<24}{rate:>6}{ok / seconds:>9.1f}{failed:>8}"
                    f"{percentile(delays, 50):>9.1f}{percentile(delays, 99):>8.1f}"
                    f"{'-':>10}{'-':>8}{'-':>10}{'-':>8}{'-':>16}{'-':>6}",
                    flush=True,
                )
        finally:
            uas.kill()
            await uas.wait()
    print(f"logs: {work}")


if __name__ == "__main__":
    chosen = [int(arg) for arg in sys.argv[1:]] or [20, 50, 100]
    asyncio.run(main(chosen))
