"""Helpers for the gateway's tests with real peers: a gateway in-process on free loopback
ports (SIP, gRPC, the real event store), bounded waits and event-order checks read back
from the store. The sipp scenarios and processes live in ``plateau_sip_gateway.testing
.sipp`` (shared with the end-to-end tests and the benchmark) and are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from plateau_sip_gateway.config import MediaConfig
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.entrypoints.call_control import call_control_service
from plateau_sip_gateway.settings import GatewaySettings
from plateau_sip_gateway.testing.sipp import (
    ACK_2XX,
    AGENT_SDP,
    BYE,
    INVITE,
    SDP,
    Sipp,
    agent_answers,
    agent_rejects,
    agent_rings_out,
    carrier_cancels,
    carrier_hears_bye,
    carrier_refused,
    carrier_talks,
    free_port,
    register,
    run_sipp,
    start_sipp,
    write,
)

__all__ = [
    "ACK_2XX",
    "AGENT_SDP",
    "BYE",
    "DNIS",
    "INVITE",
    "SDP",
    "TENANT",
    "RunningGateway",
    "Sipp",
    "agent_answers",
    "agent_rejects",
    "agent_rings_out",
    "carrier_cancels",
    "carrier_hears_bye",
    "carrier_refused",
    "carrier_talks",
    "free_port",
    "register",
    "run_sipp",
    "running_gateway",
    "start_sipp",
    "trunks",
    "wait_until",
    "write",
]

TENANT = "demo"
DNIS = "053000100"


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

    async def types_of(self, call_id: str) -> list[str]:
        """The event types of one call, in order."""
        return [str(e["type"]) for e in await self.events(f"call-{call_id}")]

    async def wait_for(self, call_id: str, event_type: str, count: int = 1) -> None:
        """Wait until the call has recorded ``event_type`` (``count`` times)."""

        async def seen() -> bool:
            return (await self.types_of(call_id)).count(event_type) >= count

        await wait_until(seen, 30, event_type)

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
    rtpengine: tuple[str, int] | None = None,
    media: MediaConfig | None = None,
    replica: str = "",
    resync_s: float = 30.0,
) -> AsyncIterator[RunningGateway]:
    """A gateway on free loopback ports over ``pool``'s schema, stopped on exit; its media
    anchored in the rtpengine at ``rtpengine`` (ng host, port) when one is given. With
    ``replica``, it is that replica of several sharing the schema (call owners, shared
    registrations), its ``CallControl`` reached by the others on its loopback port."""
    grpc_port = free_port(socket.SOCK_STREAM) if replica else 0
    settings = GatewaySettings(
        sip_port=0,
        sip_tcp=False,
        home=home,
        sip_tenant=TENANT,
        sip_nonce_secret="test-nonce-key-0123456789",
        sip_rtpengine_enabled=rtpengine is not None,
        sip_rtpengine_ng=f"{rtpengine[0]}:{rtpengine[1]}" if rtpengine else None,
        sip_replica=replica,
        sip_replica_address=f"127.0.0.1:{grpc_port}" if replica else "",
        sip_replica_resync_s=resync_s,
    )
    store = EventStore(pool, schema)
    gateway = Gateway.build(
        settings, store, trunks=config or trunks(), passwords=passwords, media=media, pool=pool
    )
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
