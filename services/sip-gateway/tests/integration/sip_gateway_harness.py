"""Helpers for the gateway's tests with real peers: a gateway in-process on free loopback
ports (SIP, gRPC, the real event store), sipp scenarios written to a temp dir, bounded
waits and event-order checks read back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.eventstore import EventStore
from plateau_runtime.grpc_server import GrpcServer
from plateau_sip_gateway.bootstrap import Gateway
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.entrypoints.call_control import call_control_service
from plateau_sip_gateway.settings import GatewaySettings

TENANT = "demo"
DNIS = "053000100"
SIPP_TIMEOUT = 120.0


def tool(name: str, package: str) -> str:
    """The path of a peer binary; a missing one fails the test (in CI and outside it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package {package}")
    return path


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def trunks(max_calls: int = 100, network: str = "127.0.0.1/32") -> TrunksConfig:
    return TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "carrier",
                    "tenant": TENANT,
                    "source_networks": [network],
                    "entry_points": {"+242053000100": "sales"},
                    "capacity": {"kind": "calls", "max_calls": max_calls},
                    "retry_after_s": 7,
                    "options_interval_s": 0,
                }
            ]
        }
    )


@dataclass
class RunningGateway:
    gateway: Gateway
    store: EventStore
    sip_port: int
    grpc_port: int
    stub: pb_grpc.CallControlStub

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    async def connect_agent(
        self, call_id: str, extension: str, ring_timeout_s: float = 10.0, agent: str = "a-1"
    ) -> pb.ConnectAgentResponse:
        request = pb.ConnectAgentRequest(
            request_id=f"{call_id}-{extension}-{time.monotonic_ns()}",
            call_id=call_id,
            agent_id=agent,
            extension=extension,
            queue_id="q-sales",
        )
        request.ring_timeout.FromMilliseconds(int(ring_timeout_s * 1000))
        response: pb.ConnectAgentResponse = await self.stub.ConnectAgent(
            request, metadata=(("x-plateau-tenant", TENANT),), timeout=10
        )
        return response

    async def hangup(self, call_id: str) -> None:
        await self.stub.Hangup(
            pb.HangupRequest(request_id=f"h-{call_id}", call_id=call_id),
            metadata=(("x-plateau-tenant", TENANT),),
            timeout=10,
        )

    async def streams(self) -> dict[str, list[str]]:
        """Every stream's event types, in stream order (after queued appends land)."""
        await self.gateway.recorder.drain()
        streams: dict[str, list[tuple[int, str]]] = {}
        async for stored in self.store.iterate():
            envelope = stored.envelope
            streams.setdefault(envelope.stream, []).append((envelope.stream_version, envelope.type))
        return {s: [t for _, t in sorted(v)] for s, v in streams.items()}

    async def events(self, stream: str) -> list[dict[str, object]]:
        await self.gateway.recorder.drain()
        return [
            {"type": e.envelope.type, **e.envelope.data}
            for e in await self.store.read_stream(stream)
        ]

    async def offered_calls(self) -> list[str]:
        return [
            s.removeprefix("call-")
            for s, types in (await self.streams()).items()
            if types and types[0] == "call.offered"
        ]


@contextlib.asynccontextmanager
async def running_gateway(
    pool: asyncpg.Pool,
    home: Path,
    *,
    passwords: dict[str, str],
    config: TrunksConfig | None = None,
    schema: str,
) -> AsyncIterator[RunningGateway]:
    """A gateway on free loopback ports over ``pool``'s schema, stopped on exit."""
    settings = GatewaySettings(
        sip_port=0,
        sip_tcp=False,
        home=home,
        sip_tenant=TENANT,
        sip_nonce_secret="test-nonce-key-0123456789",
    )
    store = EventStore(pool, schema)
    gateway = Gateway.build(settings, store, trunks=config or trunks(), passwords=passwords)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    server = GrpcServer("127.0.0.1", 0, [call_control_service(gateway.b2bua)])
    try:
        async with asyncio.timeout(15):
            await gateway.ready.wait()
        await server.start()
        assert gateway.endpoint is not None
        sip_port = gateway.endpoint.local_address("UDP")[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield RunningGateway(
                gateway, store, sip_port, server.port, pb_grpc.CallControlStub(channel)
            )
    finally:
        await server.stop(0.5)
        stop.set()
        async with asyncio.timeout(15):
            await task


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- sipp ---------------------------------------------------------------------------------


@dataclass
class Sipp:
    process: asyncio.subprocess.Process
    port: int
    started: float

    async def result(self, timeout: float = SIPP_TIMEOUT) -> tuple[int, str]:
        try:
            async with asyncio.timeout(timeout):
                output, _ = await self.process.communicate()
        except TimeoutError:
            self.process.kill()
            output, _ = await self.process.communicate()
        code = self.process.returncode if self.process.returncode is not None else -1
        return code, output.decode(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_sipp(
    args: list[str], cwd: Path, *, port: int | None = None, ip: str = "127.0.0.1"
) -> Sipp:
    port = port or free_port(host=ip)
    process = await asyncio.create_subprocess_exec(
        tool("sipp", "sip-tester"),
        *args,
        "-i",
        ip,
        "-p",
        str(port),
        "-nostdin",
        "-mp",
        str(free_port(host=ip)),
        "-timeout",
        f"{int(SIPP_TIMEOUT) - 10}s",
        "-timeout_error",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
    )
    return Sipp(process, port, time.monotonic())


async def run_sipp(args: list[str], cwd: Path, **kwargs: object) -> tuple[int, str]:
    sipp = await start_sipp(args, cwd, **kwargs)  # type: ignore[arg-type]
    return await sipp.result()


def write(cwd: Path, name: str, text: str) -> str:
    path = cwd / name
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return str(path)


SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""

INVITE = (
    """
    <send retrans="500">
      <![CDATA[
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

"""
    + SDP
    + """
      ]]>
    </send>
    <recv response="100" optional="true"/>
    <recv response="180"/>
"""
)

ACK_2XX = """
    <send>
      <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
      ]]>
    </send>
"""

BYE = """
    <send retrans="500">
      <![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
      ]]>
    </send>
    <recv response="200" crlf="true"/>
"""

ACK_ERROR = """
    <send>
      <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
      ]]>
    </send>
"""


def carrier_talks(pause_ms: int = 500, answer_timeout_ms: int = 30000) -> str:
    """Carrier: INVITE, ringback, 200 (once an agent answers), ACK, talk, BYE."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier talks">
{INVITE}
    <recv response="180" optional="true"/>
    <recv response="200" rtd="true" timeout="{answer_timeout_ms}"/>
{ACK_2XX}
    <pause milliseconds="{pause_ms}"/>
{BYE}
</scenario>"""


def carrier_hears_bye(answer_timeout_ms: int = 30000) -> str:
    """Carrier: INVITE, ringback, 200, ACK, then the gateway hangs up (BYE)."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier hears bye">
{INVITE}
    <recv response="180" optional="true"/>
    <recv response="200" timeout="{answer_timeout_ms}"/>
{ACK_2XX}
    <recv request="BYE" timeout="{answer_timeout_ms}"/>
    <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>"""


def carrier_cancels(after_ms: int) -> str:
    """Carrier: INVITE, ringback, hang up before an answer (CANCEL), 487, ACK."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier cancels">
{INVITE}
    <pause milliseconds="{after_ms}"/>
    <send retrans="500"><![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0
]]></send>
    <recv response="200"/>
    <recv response="487"/>
{ACK_ERROR}
</scenario>"""


def carrier_refused(code: int, ringback: bool = False, timeout_ms: int = 30000) -> str:
    """Carrier: INVITE answered with ``code`` (after ringback or not), ACK."""
    ring = INVITE if ringback else INVITE.replace('<recv response="180"/>', "")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier refused {code}">
{ring}
    <recv response="{code}" timeout="{timeout_ms}"/>
{ACK_ERROR}
</scenario>"""


def register(extension: str, password: str, contact_port: int) -> str:
    """An agent's REGISTER with digest auth, binding a contact on ``contact_port``."""
    message = f"""
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{extension}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{extension}@[remote_ip]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:{extension}@127.0.0.1:{contact_port}>
Max-Forwards: 70
Expires: 3600
"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register {extension}">
  <send retrans="500"><![CDATA[{message}Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[{message}[authentication username={extension} password={password}]
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>"""


AGENT_SDP = SDP.replace("user1", "agent")


def agent_answers() -> str:
    """Agent softphone: INVITE -> 180, 200; ACK; then BYE from either side."""
    return _agent(
        f"""
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{AGENT_SDP}
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"""
    )


def agent_rings_out() -> str:
    """Agent softphone that rings until the gateway CANCELs: 200 to CANCEL, 487, ACK."""
    return _agent(
        """
  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv request="ACK"/>"""
    )


def agent_rejects(code: int = 486) -> str:
    """Agent softphone that refuses the call with ``code``."""
    return _agent(
        f"""
  <send><![CDATA[
SIP/2.0 {code} Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK"/>"""
    )


def _agent(after_ringing: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agent">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Length: 0
]]></send>
{after_ringing}
</scenario>"""
