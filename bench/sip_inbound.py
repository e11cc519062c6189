"""Inbound calls through the whole gateway path, next to sipp talking straight to sipp.

Run from the checkout:  .venv/bin/python bench/sip_inbound.py [RATE ...]

Starts the embedded PostgreSQL and broker in a temp dir, the sip-gateway as its own
process (``python -m plateau_sip_gateway``: event store, outbox relay, gRPC), a sipp agent
(UAS) registered with digest auth, and a driver standing in for the acd: it consumes
``call.offered`` from the broker and calls ``CallControl.ConnectAgent``. For each rate
(calls/s, default 50 100 150) sipp plays the carrier for ``SECONDS`` and the bench prints
achieved calls/s, failed calls, post-dial delay (INVITE -> 180) p50/p99 and the gateway's
CPU milliseconds per call; then the same carrier scenario against ``sipp -sn uas``
directly (the baseline). Figures only: nothing here asserts a speed. Needs ``sipp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psutil
from aiokafka import AIOKafkaConsumer

from plateau_contracts.envelope import Envelope
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.bus import ensure_topics
from plateau_runtime.db import connect
from plateau_runtime.embedded import EmbeddedBroker, EmbeddedPostgres
from plateau_runtime.migrations import migrate, role_dsn
from plateau_runtime.services import service as service_spec

SECONDS = 5
TALK_MS = 500
DNIS = "053000100"
EXTENSION = "1001"
_COUNTER = re.compile(r"(Successful|Failed) call\s*\|\s*\d+\s*\|\s*(\d+)")

CARRIER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier">
  <send retrans="500" start_rtd="pdd"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=carrier 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" rtd="pdd"/>
  <recv response="180" optional="true"/>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
  <pause milliseconds="TALK_MS"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
</scenario>
""".replace("TALK_MS", str(TALK_MS))

REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:EXT@[remote_ip]>;tag=[pid]r
To: <sip:EXT@[remote_ip]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:EXT@127.0.0.1:PORT>
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:EXT@[remote_ip]>;tag=[pid]r
To: <sip:EXT@[remote_ip]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:EXT@127.0.0.1:PORT>
[authentication username=EXT password=PASSWORD]
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_both() -> int:
    while True:
        port = free_port()
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        sys.exit("sipp is not installed: install the Debian package sip-tester")
    return path


async def sipp(args: list[str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sipp_binary(),
        *args,
        "-nostdin",
        "-i",
        "127.0.0.1",
        "-mp",
        str(free_port()),
        "-timeout",
        f"{SECONDS * 4 + 30}s",
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return output.decode(errors="replace")


def prepare_carrier(cwd: Path) -> Path:
    """The carrier scenario, written afresh, with no delays left from a previous rate."""
    scenario = cwd / "carrier.xml"
    scenario.write_text(CARRIER)
    for old in cwd.glob("carrier_*_rtt.csv"):
        old.unlink()
    return scenario


def read_delays(cwd: Path) -> list[float]:
    """Post-dial delays (ms) from sipp's ``-trace_rtt`` files."""
    delays: list[float] = []
    for path in cwd.glob("carrier_*_rtt.csv"):
        with path.open() as rows:
            for row in csv.reader(rows, delimiter=";"):
                with contextlib.suppress(IndexError, ValueError):
                    delays.append(float(row[1]))
    return delays


async def carrier_run(target: str, rate: int, cwd: Path) -> tuple[int, int, float, list[float]]:
    """Successful and failed calls, seconds, post-dial delays in ms."""
    scenario = prepare_carrier(cwd)
    calls = rate * SECONDS
    started = time.perf_counter()
    output = await sipp(
        [
            *["-sf", str(scenario), "-s", DNIS, target, "-p", str(free_port())],
            *["-m", str(calls), "-r", str(rate), "-l", str(rate * 4)],
            *["-trace_rtt", "-rtt_freq", "1"],
        ],
        cwd,
    )
    elapsed = time.perf_counter() - started
    counts = dict.fromkeys(("Successful", "Failed"), 0)
    for kind, value in _COUNTER.findall(output):
        counts[kind] = int(value)
    return counts["Successful"], counts["Failed"], elapsed, read_delays(cwd)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@contextlib.contextmanager
def platform(work: Path) -> Iterator[tuple[str, EmbeddedBroker]]:
    postgres = EmbeddedPostgres(work / "pg", free_port(socket.SOCK_STREAM))
    broker = EmbeddedBroker(free_port(socket.SOCK_STREAM), work / "broker.log")
    postgres.start()
    broker.start()
    try:
        yield postgres.admin_dsn, broker
    finally:
        broker.stop()
        postgres.stop()


@contextlib.asynccontextmanager
async def gateway(
    admin_dsn: str, broker: EmbeddedBroker, work: Path, password: str
) -> AsyncIterator[tuple[psutil.Process, int, int, str]]:
    role_password = secrets.token_urlsafe(16)
    schema = service_spec("sip-gateway").service_schema()
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, schema, role_password)
    finally:
        await admin.close()
    tenant = "bench"
    (work / "trunks.json").write_text(
        json.dumps(
            {
                "trunks": [
                    {
                        "name": "carrier",
                        "tenant": tenant,
                        "source_networks": ["127.0.0.1/32"],
                        "entry_points": {"+242053000100": "sales"},
                        "capacity": {"kind": "calls", "max_calls": 5000},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    (work / "extensions.json").write_text(json.dumps({EXTENSION: password}))
    sip_port, grpc_port = free_both(), free_port(socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update(
        PLATEAU_HOME=str(work / "home"),
        PLATEAU_DATABASE_URL=role_dsn(admin_dsn, schema, role_password),
        PLATEAU_KAFKA_BOOTSTRAP=broker.bootstrap,
        PLATEAU_GRPC_PORT=str(grpc_port),
        PLATEAU_SIP_PORT=str(sip_port),
        PLATEAU_SIP_TRUNKS_FILE=str(work / "trunks.json"),
        PLATEAU_SIP_EXTENSIONS_FILE=str(work / "extensions.json"),
        PLATEAU_SIP_TENANT=tenant,
        PLATEAU_LOG_LEVEL="warning",
        PLATEAU_LOG_FORMAT="json",
    )
    process = spawn_gateway(env, work / "gateway.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                sys.exit(f"the gateway exited: see {work / 'gateway.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", grpc_port)):
                break
            if time.monotonic() > deadline:
                sys.exit("the gateway did not start within 30 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        yield psutil.Process(process.pid), sip_port, grpc_port, tenant
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def spawn_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Unbuffered, so that the log shows what the gateway did even when a run is stopped.
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plateau_sip_gateway"],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=out,
        )


async def drive(bootstrap: str, grpc_port: int, tenant: str, stop: asyncio.Event) -> None:
    """The acd's stand-in: ConnectAgent for every ``call.offered`` of the tenant."""
    await ensure_topics(bootstrap, ["plateau.calls"])
    consumer = AIOKafkaConsumer(
        "plateau.calls",
        bootstrap_servers=bootstrap,
        group_id=f"bench-{secrets.token_hex(4)}",
        auto_offset_reset="earliest",  # a fresh platform: only this run's calls
    )
    await consumer.start()
    pending: set[asyncio.Task[object]] = set()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.CallControlStub(channel)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=20, max_records=1000)
                for records in batch.values():
                    for record in records:
                        envelope = Envelope.from_message(record.value)
                        if envelope.tenant != tenant or envelope.type != "call.offered":
                            continue
                        request = pb.ConnectAgentRequest(
                            request_id=str(envelope.event_id),
                            call_id=str(envelope.data["call_id"]),
                            agent_id="a-1001",
                            extension=EXTENSION,
                        )
                        task = asyncio.ensure_future(
                            stub.ConnectAgent(
                                request, metadata=(("x-plateau-tenant", tenant),), timeout=10
                            )
                        )
                        pending.add(task)
                        task.add_done_callback(pending.discard)
    finally:
        await consumer.stop()


def make_work_dir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="plateau-bench-"))
    work.chmod(0o755)  # PostgreSQL may run as another user when the bench runs as root
    return work


async def main(rates: list[int]) -> None:
    work = make_work_dir()
    password = secrets.token_urlsafe(12)
    print(f"inbound calls, {SECONDS} s per rate, {TALK_MS} ms talk; PDD = INVITE -> 180")
    header = f"{'path':<28}{'rate':>6}{'calls/s':>9}{'failed':>8}{'PDD p50':>9}{'p99':>8}"
    try:
        with platform(work) as (admin_dsn, broker):
            async with gateway(admin_dsn, broker, work, password) as (proc, sip_port, grpc, tenant):
                agent_port = free_port()
                agent = await asyncio.create_subprocess_exec(
                    sipp_binary(),
                    *["-sn", "uas", "-i", "127.0.0.1", "-p", str(agent_port), "-nostdin"],
                    *["-mp", str(free_port())],
                    cwd=work,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                register = work / "register.xml"
                register.write_text(
                    REGISTER.replace("EXT", EXTENSION)
                    .replace("PORT", str(agent_port))
                    .replace("PASSWORD", password)
                )
                await sipp(
                    [
                        "-sf",
                        str(register),
                        "-m",
                        "1",
                        f"127.0.0.1:{sip_port}",
                        "-p",
                        str(free_port()),
                    ],
                    work,
                )
                stop = asyncio.Event()
                driver = asyncio.create_task(drive(broker.bootstrap, grpc, tenant, stop))
                await asyncio.sleep(2)  # the driver's consumer joins before calls start
                print(header + f"{'CPU ms/call':>13}")
                for rate in rates:
                    cpu = proc.cpu_times()
                    ok, failed, seconds, delays = await carrier_run(
                        f"127.0.0.1:{sip_port}", rate, work
                    )
                    used = proc.cpu_times()
                    cpu_s = (used.user - cpu.user) + (used.system - cpu.system)
                    per_call = 1000 * cpu_s / max(ok + failed, 1)
                    print(
                        f"{'sipp -> gateway -> sipp':<28}{rate:>6}{ok / seconds:>9.1f}"
                        f"{failed:>8}{percentile(delays, 50):>9.1f}{percentile(delays, 99):>8.1f}"
                        f"{per_call:>13.2f}"
                    )
                stop.set()
                await driver
                agent.kill()
                await agent.wait()
        print(header)
        for rate in rates:
            uas_port = free_port()
            uas = await asyncio.create_subprocess_exec(
                sipp_binary(),
                *["-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"],
                *["-mp", str(free_port())],
                cwd=work,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            ok, failed, seconds, delays = await carrier_run(f"127.0.0.1:{uas_port}", rate, work)
            uas.kill()
            await uas.wait()
            print(
                f"{'sipp -> sipp (baseline)':<28}{rate:>6}{ok / seconds:>9.1f}{failed:>8}"
                f"{percentile(delays, 50):>9.1f}{percentile(delays, 99):>8.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _terminate(signum: int, _: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the servers are stopped.
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [50, 100, 150]))
