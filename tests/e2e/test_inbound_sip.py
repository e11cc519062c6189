"""Inbound calls end to end: ``sipp`` as the carrier -> the sip-gateway process (``python -m
plateau_sip_gateway``, its event store and outbox relay) -> a test driver that consumes
``call.offered`` from the real broker and calls ``CallControl.ConnectAgent`` -> a real
``baresip`` softphone registered with digest auth and answering automatically.

Every call must complete, and each call's events must arrive on ``plateau.calls`` in
order: offered, agent_ringing, connected, ended. The same then with ``sipp`` agents at
50 calls/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from plateau_contracts.envelope import Envelope
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.bus import ensure_topics
from plateau_runtime.db import connect
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.migrations import migrate, role_dsn
from plateau_runtime.services import service as service_spec

pytestmark = pytest.mark.e2e

DNIS = "053000100"
EXTENSION = "1001"
EXPECTED = ["call.offered", "call.agent_ringing", "call.connected", "call.ended"]
GRACE_S = 3.0


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package {package}")
    return path


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_both() -> int:
    """A port free for UDP and TCP both (SIP listens on the two)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def baresip_modules() -> Path:
    """Where the installed baresip keeps its modules (next to its binary's prefix)."""
    prefix = Path(tool("baresip", "baresip-core")).resolve().parent.parent
    for candidate in sorted(prefix.glob("lib*/**/baresip/modules")):
        if (candidate / "g711.so").exists():
            return candidate
    pytest.fail(f"baresip's modules (g711.so) are not under {prefix}/lib")


def tone(path: Path, seconds: float = 1.0) -> None:
    """An 8 kHz mono 16-bit wav: what baresip's aufile source can play to G.711."""
    rate = 8000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (
            int(6000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))
        )
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))


@contextlib.contextmanager
def baresip_agent(workdir: Path, gateway_port: int, password: str) -> Iterator[int]:
    """A registered, auto-answering baresip for extension 1001; its SIP port."""
    config_dir = workdir / "baresip"
    config_dir.mkdir()
    tone(config_dir / "tone.wav")
    sip_port = free_both()
    (config_dir / "config").write_text(
        "\n".join(
            [
                f"module_path {baresip_modules()}",
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{sip_port}",
                f"audio_source aufile,{config_dir / 'tone.wav'}",
                "module g711.so",
                "module aufile.so",
                "module sndfile.so",
                "module menu.so",
                "module ctrl_tcp.so",
                "module_app account.so",
                f"ctrl_tcp_listen 127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                "",
            ]
        )
    )
    (config_dir / "accounts").write_text(
        f"<sip:{EXTENSION}@127.0.0.1:{gateway_port}>;auth_pass={password};"
        "answermode=auto;regint=60;audio_codecs=PCMU,PCMA\n"
    )
    log = (workdir / "baresip.log").open("wb")
    process = subprocess.Popen(
        [tool("baresip", "baresip-core"), "-f", str(config_dir)],
        cwd=config_dir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield sip_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()  # baresip can hang on shutdown
            process.wait(5)
        log.close()


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    sip_port: int
    grpc_port: int
    tenant: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def gateway_process(
    admin_dsn: str, broker: EmbeddedBroker, workdir: Path, passwords: dict[str, str]
) -> AsyncIterator[GatewayProcess]:
    """``python -m plateau_sip_gateway`` on free ports, for a tenant of its own."""
    password = secrets.token_urlsafe(16)
    schema = service_spec("sip-gateway").service_schema()
    admin = await connect(admin_dsn)
    try:
        await migrate(admin, schema, password)
    finally:
        await admin.close()
    tenant = f"e2e-{secrets.token_hex(3)}"
    trunks = workdir / "trunks.json"
    trunks.write_text(
        json.dumps(
            {
                "trunks": [
                    {
                        "name": "carrier",
                        "tenant": tenant,
                        "source_networks": ["127.0.0.1/32"],
                        "entry_points": {"+242053000100": "sales"},
                        "capacity": {"kind": "calls", "max_calls": 500},
                        "options_interval_s": 0,
                    }
                ]
            }
        )
    )
    extensions = workdir / "extensions.json"
    extensions.write_text(json.dumps(passwords))
    extensions.chmod(0o600)
    sip_port, grpc_port = free_both(), free_port(socket.SOCK_STREAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_")}
    env.update(
        PLATEAU_HOME=str(workdir / "home"),
        PLATEAU_DATABASE_URL=role_dsn(admin_dsn, schema, password),
        PLATEAU_KAFKA_BOOTSTRAP=broker.bootstrap,
        PLATEAU_GRPC_PORT=str(grpc_port),
        PLATEAU_SIP_PORT=str(sip_port),
        PLATEAU_SIP_TRUNKS_FILE=str(trunks),
        PLATEAU_SIP_EXTENSIONS_FILE=str(extensions),
        PLATEAU_SIP_TENANT=tenant,
        PLATEAU_LOG_FORMAT="json",
        PLATEAU_LOG_LEVEL="warning",
    )
    log = workdir / "gateway.log"
    process = spawn_gateway(env, log)
    running = GatewayProcess(process, sip_port, grpc_port, tenant, log)
    try:
        await wait_for_grpc(grpc_port, running)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def spawn_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m plateau_sip_gateway`` as a user starts it, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plateau_sip_gateway"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_for_grpc(port: int, gateway: GatewayProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            pytest.fail(f"the gateway exited {gateway.process.returncode}:\n{gateway.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            await asyncio.sleep(0.5)  # the SIP task starts right after gRPC
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the gateway did not listen on gRPC {port} within {timeout:.0f} s")


@dataclass
class Driver:
    """The acd's stand-in: on each ``call.offered`` of the tenant, ConnectAgent."""

    bootstrap: str
    tenant: str
    grpc_port: int
    extension: str
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.bootstrap, ["plateau.calls"])
        consumer = AIOKafkaConsumer(
            "plateau.calls",
            bootstrap_servers=self.bootstrap,
            group_id=f"driver-{secrets.token_hex(4)}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                stub = pb_grpc.CallControlStub(channel)
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=100, max_records=500)
                    for records in batch.values():
                        for record in records:
                            envelope = Envelope.from_message(record.value)
                            if envelope.tenant != self.tenant:
                                continue
                            seen = self.streams.setdefault(envelope.stream, [])
                            if any(v == envelope.stream_version for v, _ in seen):
                                continue  # at-least-once: a redelivery
                            seen.append((envelope.stream_version, envelope.type))
                            if envelope.type == "call.offered":
                                await self._connect(stub, envelope)
        finally:
            await consumer.stop()

    async def _connect(self, stub: pb_grpc.CallControlStub, envelope: Envelope) -> None:
        call_id = str(envelope.data["call_id"])
        request = pb.ConnectAgentRequest(
            request_id=str(envelope.event_id),
            call_id=call_id,
            agent_id="a-1001",
            extension=self.extension,
            queue_id="q-sales",
        )
        request.ring_timeout.FromSeconds(10)
        try:
            await stub.ConnectAgent(
                request, metadata=(("x-plateau-tenant", self.tenant),), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            self.errors.append(f"{call_id}: {exc.code().name} {exc.details()}")

    def ended(self) -> int:
        return sum(1 for types in self.streams.values() if types and types[-1][1] == "call.ended")

    def out_of_order(self) -> dict[str, list[str]]:
        """Calls whose events did not arrive as offered, ringing, connected, ended."""
        return {
            stream: [t for _, t in seen]
            for stream, seen in self.streams.items()
            if stream.startswith("call-")
            and ([t for _, t in seen] != EXPECTED or [v for v, _ in seen] != [1, 2, 3, 4])
        }


CARRIER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier">
  <send retrans="500"><![CDATA[
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
  <recv response="180"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
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
  <pause milliseconds="{talk_ms}"/>
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
"""

REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{ext}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{ext}@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:{ext}@127.0.0.1:{contact_port}>
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{ext}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{ext}@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:{ext}@127.0.0.1:{contact_port}>
[authentication username={ext} password={password}]
Max-Forwards: 70
Expires: 3600
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""


async def sipp(args: list[str], cwd: Path, timeout: float = 180.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        tool("sipp", "sip-tester"),
        *args,
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-mp",
        str(free_port()),
        "-timeout",
        f"{int(timeout) - 10}s",
        "-timeout_error",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")[-4000:]


async def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def driving(driver: Driver) -> AsyncIterator[Driver]:
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(stop))
    try:
        yield driver
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def test_100_calls_reach_a_baresip_agent_in_order(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls = 100
    async with gateway_process(admin_dsn, broker, tmp_path, {EXTENSION: password}) as gateway:
        with baresip_agent(tmp_path, gateway.sip_port, password):
            driver = Driver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
            async with driving(driver):
                await wait_for(
                    lambda: f"extension-{EXTENSION}" in driver.streams,
                    30,
                    "baresip's registration on the bus",
                )
                scenario = tmp_path / "carrier.xml"
                scenario.write_text(CARRIER.replace("{talk_ms}", "200"))
                started = time.monotonic()
                code, output = await sipp(
                    [
                        "-sf",
                        str(scenario),
                        "-s",
                        DNIS,
                        "-m",
                        str(calls),
                        "-r",
                        "10",
                        "-l",
                        "1",
                        f"127.0.0.1:{gateway.sip_port}",
                        "-p",
                        str(free_port()),
                    ],
                    tmp_path,
                )
                seconds = time.monotonic() - started
                assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
                await wait_for(lambda: driver.ended() >= calls, 30, f"{calls} call.ended")
            assert driver.errors == []
            assert driver.out_of_order() == {}
            assert driver.ended() == calls
            print(f"\n{calls} calls sipp -> gateway -> baresip completed in {seconds:.1f} s")


async def test_sipp_agents_at_50_calls_per_second(
    admin_dsn: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    calls, rate = 500, 50
    async with gateway_process(admin_dsn, broker, tmp_path, {EXTENSION: password}) as gateway:
        agent_port = free_port()
        agent = await asyncio.create_subprocess_exec(
            tool("sipp", "sip-tester"),
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(agent_port),
            "-nostdin",
            "-mp",
            str(free_port()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            register = tmp_path / "register.xml"
            register.write_text(
                REGISTER.replace("{ext}", EXTENSION)
                .replace("{contact_port}", str(agent_port))
                .replace("{password}", password)
            )
            code, output = await sipp(
                [
                    "-sf",
                    str(register),
                    "-m",
                    "1",
                    f"127.0.0.1:{gateway.sip_port}",
                    "-p",
                    str(free_port()),
                ],
                tmp_path,
            )
            assert code == 0, f"REGISTER failed:\n{output}"
            driver = Driver(broker.bootstrap, gateway.tenant, gateway.grpc_port, EXTENSION)
            async with driving(driver):
                scenario = tmp_path / "carrier.xml"
                scenario.write_text(CARRIER.replace("{talk_ms}", "1000"))
                started = time.monotonic()
                code, output = await sipp(
                    [
                        "-sf",
                        str(scenario),
                        "-s",
                        DNIS,
                        "-m",
                        str(calls),
                        "-r",
                        str(rate),
                        "-l",
                        "400",
                        f"127.0.0.1:{gateway.sip_port}",
                        "-p",
                        str(free_port()),
                    ],
                    tmp_path,
                )
                seconds = time.monotonic() - started
                assert code == 0, f"sipp carrier failed:\n{output}\n{gateway.output()}"
                await wait_for(lambda: driver.ended() >= calls, 60, f"{calls} call.ended")
            assert driver.errors == []
            assert driver.out_of_order() == {}
            print(f"\n{calls} calls at {rate}/s sipp -> gateway -> sipp agent in {seconds:.1f} s")
        finally:
            agent.kill()
            await agent.wait()
