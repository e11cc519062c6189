"""The production SIP edge run for real on loopback: deploy/k8s's kamailio.cfg (Debian's
Kamailio, from tools/test-packages) in front of gateway replicas, and in-process gateways
configured as replicas behind it.

Each party has its own loopback address, as pods and the internet have their own: the
edge (both of Kamailio's sockets) on ``EDGE_IP``, replica ``i`` on ``replica_ip(i)``,
carriers and softphones elsewhere in 127.0.0.0/8. That is what lets a test tell the
carrier's address from the edge's, and what ``ds_is_from_list`` (by address) needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
from plateau_sip_gateway.testing.sipp import free_both, free_port

ROOT = Path(__file__).resolve().parents[2]
DISPATCHER = ROOT / "deploy" / "k8s" / "components" / "sip-dispatcher"
EDGE_IP = "127.0.0.2"
TENANT = "demo"


def replica_ip(index: int) -> str:
    return f"127.0.0.{10 + index}"


def kamailio_binary() -> str:
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if found is None:
        pytest.fail("kamailio is missing: tools/test-packages installs it (Debian's kamailio)")
    return found


def edge_config(
    tmp: Path, *, edge_port: int, replicas_port: int, replicas: Sequence[tuple[str, int]]
) -> Path:
    """kamailio.cfg with its edge socket on ``edge_port`` and its replicas' socket on
    ``replicas_port`` (both on EDGE_IP), dispatching to ``replicas`` (host, port)."""
    listing = tmp / "dispatcher.list"
    listing.write_text("".join(f"1 sip:{host}:{port} 0 0\n" for host, port in replicas))
    text = (DISPATCHER / "kamailio.cfg").read_text()
    for old, new in (
        ("/etc/kamailio/dispatcher.list", str(listing)),
        (":5060", f":{edge_port}"),
        (":5080", f":{replicas_port}"),
        # No OPTIONS probes during the tests: sipp replicas would count them as calls.
        ('"ds_ping_interval", 10', '"ds_ping_interval", 0'),
    ):
        assert old in text, f"kamailio.cfg no longer contains {old!r}"
        text = text.replace(old, new)
    config = tmp / "kamailio.cfg"
    config.write_text(text)
    return config


def answers_options(host: str, port: int) -> bool:
    """Whether ``host:port`` answers an OPTIONS with 200 (from an address of its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.bind(("127.0.0.1", 0))
        own = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch=z9hG4bK-ready{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{host}>\r\n"
            "Call-ID: ready@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, port))
        try:
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


@dataclass
class Edge:
    """A running Kamailio edge: its two sockets and its log."""

    edge_port: int
    replicas_port: int
    log: Path
    host: str = EDGE_IP

    @property
    def target(self) -> str:
        """Where carriers and softphones send (sipp's remote host:port)."""
        return f"{self.host}:{self.edge_port}"

    @property
    def outbound_proxy(self) -> str:
        """The replicas' PLATEAU_SIP_OUTBOUND_PROXY."""
        return f"sip:{self.host}:{self.replicas_port}"


def edge_ports() -> tuple[int, int]:
    """Free UDP+TCP ports on EDGE_IP for the edge socket and the replicas' socket."""
    return free_both(EDGE_IP), free_both(EDGE_IP)


@contextlib.asynccontextmanager
async def running_edge(
    tmp: Path, replicas: Sequence[tuple[str, int]], ports: tuple[int, int] | None = None
) -> AsyncIterator[Edge]:
    """Kamailio with deploy/k8s's configuration in front of ``replicas``, answering OPTIONS
    before this yields; stopped on exit."""
    kamailio = kamailio_binary()
    edge_port, replicas_port = ports or edge_ports()
    config = edge_config(tmp, edge_port=edge_port, replicas_port=replicas_port, replicas=replicas)
    log = tmp / "kamailio.log"
    with log.open("wb") as sink:
        proxy = await asyncio.create_subprocess_exec(
            *[kamailio, "-DD", "-E", "-m", "64", "-M", "8", "-f", str(config)],
            *["-Y", str(tmp), "-P", str(tmp / "kamailio.pid")],
            env={**os.environ, "SIP_ADVERTISED_HOST": EDGE_IP, "POD_IP": EDGE_IP},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(answers_options, EDGE_IP, edge_port):
            assert proxy.returncode is None, "kamailio exited:\n" + log.read_text()[-4000:]
            assert time.monotonic() < deadline, "kamailio did not answer OPTIONS in 30 s"
        yield Edge(edge_port, replicas_port, log)
    finally:
        if proxy.returncode is None:
            proxy.terminate()
            try:
                await asyncio.wait_for(proxy.wait(), timeout=10)
            except TimeoutError:
                proxy.kill()
                await proxy.wait()


# gateway replicas ---------------------------------------------------------------------


@dataclass
class Replica:
    """A gateway running in-process as one replica behind the edge."""

    name: str
    gateway: Gateway
    store: EventStore
    host: str
    sip_port: int
    stub: pb_grpc.CallControlStub

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.sip_port)

    async def connect_agent(
        self, call_id: str, extension: str, agent: str = "a-1", ring_timeout_s: float = 10.0
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

    async def events(self, stream: str) -> list[dict[str, object]]:
        await self.gateway.recorder.drain()
        return [
            {"type": e.envelope.type, **e.envelope.data}
            for e in await self.store.read_stream(stream)
        ]

    async def calls(self, first: str) -> list[str]:
        """The ids of the calls whose stream starts with the event type ``first``."""
        await self.gateway.recorder.drain()
        starts: dict[str, str] = {}
        async for stored in self.store.iterate():
            envelope = stored.envelope
            if envelope.stream.startswith("call-") and envelope.stream_version == 1:
                starts[envelope.stream.removeprefix("call-")] = envelope.type
        return [call for call, kind in starts.items() if kind == first]


@dataclass
class ReplicaSettings:
    """What a replica behind the edge is configured with (the rest as in production)."""

    trusted_proxies: str = f"{EDGE_IP}/32"
    outbound_proxy: str | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    clustered: bool = False
    """Each replica named ``replica-<i>``: call owners, forwarding and shared
    registrations through the database, as several production replicas run."""


@contextlib.asynccontextmanager
async def running_replicas(
    pool: asyncpg.Pool,
    schema: str,
    home: Path,
    count: int,
    *,
    trunks: TrunksConfig,
    settings: ReplicaSettings,
) -> AsyncIterator[list[Replica]]:
    """``count`` gateways on ``replica_ip(0..count-1)``, each advertising its own address,
    over one event store; stopped on exit."""
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(
                _replica(pool, schema, home / f"replica-{i}", i, trunks, settings)
            )
            for i in range(count)
        ]
        yield replicas


def _replica_settings(
    home: Path, host: str, options: ReplicaSettings, name: str, grpc_port: int
) -> GatewaySettings:
    home.mkdir(parents=True, exist_ok=True)
    return GatewaySettings(
        sip_replica=name,
        sip_replica_address=f"127.0.0.1:{grpc_port}" if name else "",
        sip_host=host,
        sip_port=0,
        sip_tcp=False,
        sip_advertised_host=host,  # its own address: in-dialog requests find it by Request-URI
        sip_trusted_proxies=options.trusted_proxies,
        sip_outbound_proxy=options.outbound_proxy,
        home=home,
        sip_tenant=TENANT,
        sip_nonce_secret="edge-test-nonce-key-0123456789",
    )


@contextlib.asynccontextmanager
async def _replica(
    pool: asyncpg.Pool,
    schema: str,
    home: Path,
    index: int,
    trunks: TrunksConfig,
    options: ReplicaSettings,
) -> AsyncIterator[Replica]:
    host = replica_ip(index)
    name = f"replica-{index}" if options.clustered else ""
    grpc_port = free_port(socket.SOCK_STREAM) if name else 0
    settings = _replica_settings(home, host, options, name, grpc_port)
    store = EventStore(pool, schema)
    gateway = Gateway.build(settings, store, trunks=trunks, passwords=options.passwords, pool=pool)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    server = GrpcServer(
        "127.0.0.1", grpc_port, [call_control_service(gateway.b2bua, gateway.replicas)]
    )
    try:
        async with asyncio.timeout(15):
            await gateway.ready.wait()
        await server.start()
        assert gateway.endpoint is not None
        port = gateway.endpoint.local_address("UDP")[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Replica(name, gateway, store, host, port, pb_grpc.CallControlStub(channel))
    finally:
        await server.stop(0.5)
        stop.set()
        async with asyncio.timeout(15):
            await task


async def wait_until_true(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` until it returns true (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
