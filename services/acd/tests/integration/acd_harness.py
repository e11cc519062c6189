"""Helpers for the acd's integration tests: the acd wired as ``bootstrap`` wires it, on a
fresh schema of the real PostgreSQL and the real broker, its ``AgentDesk`` on a free port,
and a scripted stand-in for the gateway: a real ``CallControl`` gRPC server whose call
facts go through its own event store and outbox relay onto ``plateau.calls``, as the
gateway's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from plateau_acd.adapters.gateway import GrpcGateway
from plateau_acd.configuration import apply_config
from plateau_acd.domain.config import load_config
from plateau_acd.effects import Effects
from plateau_acd.entrypoints.agent_desk import agent_desk_service
from plateau_acd.entrypoints.calls import calls_consumer
from plateau_acd.entrypoints.campaigns import campaigns_consumer
from plateau_acd.handlers import Acd
from plateau_acd.outbound import Outbound
from plateau_contracts.catalogue import parse
from plateau_contracts.envelope import EventData
from plateau_contracts.events.calls import (
    AgentLegFailure,
    AgentNoAnswer,
    AgentRejected,
    AgentRinging,
    CallConnected,
    CallEnded,
    CallOffered,
    CallOriginated,
    ComplianceAbandoned,
    DialCompleted,
    DialOutcome,
    DialRequester,
    EndCause,
    EndedBy,
)
from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    CampaignStopped,
    PacingMode,
)
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2_grpc as desk_grpc
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent, StoredEvent
from plateau_runtime.grpc_server import GrpcServer, GrpcService, current_tenant
from plateau_runtime.outbox import OutboxRelay
from plateau_runtime.services import service
from plateau_runtime.testing import MigratedSchema, make_schema

DNIS = "+242053000100"
ACD_MIGRATIONS: Path | None = service("acd").migrations_dir()


def tenant_config(tenant: str, agents: int = 3, **queue: object) -> dict[str, object]:
    """A small tenant: one queue ``q-main`` on DNIS, ``q-spill`` for overflow, agents."""
    main = {
        "id": "q-main",
        "name": "Main",
        "ring_timeout_s": 5,
        "wrap_up_s": 0,
        **queue,
    }
    return {
        "tenants": [
            {
                "id": tenant,
                "name": "Test tenant",
                "pause_codes": ["break", "lunch"],
                "queues": [main, {"id": "q-spill", "name": "Spill", "wrap_up_s": 0}],
                "entry_points": [{"dnis": DNIS, "queue": "q-main"}],
                "agents": [
                    {
                        "id": f"a-{n}",
                        "name": f"Agent {n}",
                        "extension": str(1000 + n),
                        "skills": [{"name": "french", "level": n}],
                    }
                    for n in range(1, agents + 1)
                ],
            }
        ]
    }


@dataclass
class FakeCallControl(pb_grpc.CallControlServicer):
    """``CallControl`` that records requests and plays the agent leg as scripted per agent:
    ``answer`` (rings, then connects), ``ring`` (rings until ``ring_out``), ``no_answer``
    (rings out), ``busy`` (rings, then 486), ``unregistered`` (no contact), ``gone``
    (NOT_FOUND: the call is unknown). Like the gateway, it refuses (FAILED_PRECONDITION) to
    ring a second agent for a call whose agent leg still rings."""

    gateway: GatewayFacts
    script: dict[str, str] = field(default_factory=dict)
    connects: list[pb.ConnectAgentRequest] = field(default_factory=list)
    hangups: list[pb.HangupRequest] = field(default_factory=list)
    ringing: dict[str, pb.ConnectAgentRequest] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    refused: int = 0

    async def ConnectAgent(
        self, request: pb.ConnectAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectAgentResponse:
        tenant = current_tenant() or ""
        # A request counts in ``connects`` once its facts are recorded, as a real gateway's
        # are by the time it answers: a test that ends a "connected" call must not record
        # the end before the connection.
        if request.request_id in self.received:
            self.connects.append(request)
            return pb.ConnectAgentResponse(agent_sip_call_id=f"leg-{request.request_id}")
        self.received.add(request.request_id)
        how = self.script.get(request.agent_id, "answer")
        if how == "gone":
            self.connects.append(request)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no call {request.call_id}")
        if request.call_id in self.ringing:
            self.refused += 1
            self.received.discard(request.request_id)  # refused: the same id may come again
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the call is agent_ringing")
        if how == "unregistered":
            await self.gateway.record(
                tenant,
                request.call_id,
                AgentRejected(
                    call_id=request.call_id,
                    agent_id=request.agent_id,
                    extension=request.extension,
                    reason=AgentLegFailure.NOT_REGISTERED,
                ),
            )
            self.connects.append(request)
            return pb.ConnectAgentResponse()
        ringing = AgentRinging(
            call_id=request.call_id,
            agent_id=request.agent_id,
            extension=request.extension,
            contact=f"sip:{request.extension}@127.0.0.1",
            sip_call_id=f"leg-{request.request_id}",
            queue_id=request.queue_id,
        )
        facts: list[EventData] = [ringing]
        if how == "answer":
            facts.append(
                CallConnected(
                    call_id=request.call_id,
                    agent_id=request.agent_id,
                    extension=request.extension,
                    queue_id=request.queue_id,
                )
            )
        elif how == "ring":
            self.ringing[request.call_id] = request
        elif how == "busy":
            facts.append(
                AgentRejected(
                    call_id=request.call_id,
                    agent_id=request.agent_id,
                    extension=request.extension,
                    reason=AgentLegFailure.BUSY,
                    sip_code=486,
                )
            )
        elif how == "no_answer":
            facts.append(
                AgentNoAnswer(
                    call_id=request.call_id,
                    agent_id=request.agent_id,
                    extension=request.extension,
                    rang_ms=5000,
                )
            )
        await self.gateway.record(tenant, request.call_id, *facts)
        self.connects.append(request)
        return pb.ConnectAgentResponse(agent_sip_call_id=f"leg-{request.request_id}")

    async def Hangup(
        self, request: pb.HangupRequest, context: grpc.aio.ServicerContext
    ) -> pb.HangupResponse:
        self.hangups.append(request)
        return pb.HangupResponse()

    async def ring_out(self, tenant: str, call_id: str) -> None:
        """The ringing agent leg of a call times out (the gateway's RONA)."""
        request = self.ringing.pop(call_id)
        await self.gateway.record(
            tenant,
            call_id,
            AgentNoAnswer(
                call_id=call_id,
                agent_id=request.agent_id,
                extension=request.extension,
                rang_ms=5000,
            ),
        )

    def connected_calls(self) -> list[str]:
        """Call ids in the order they were first sent to an agent."""
        order: list[str] = []
        for request in self.connects:
            if request.call_id not in order:
                order.append(request.call_id)
        return order


@dataclass
class GatewayFacts:
    """The gateway's side: its own event store, relayed onto ``plateau.calls``."""

    store: EventStore
    pool: asyncpg.Pool

    async def record(self, tenant: str, call_id: str, *facts: EventData) -> None:
        await self.store.append(f"call-{call_id}", [NewEvent(f, tenant=tenant) for f in facts])

    async def offer(self, tenant: str, call_id: str, dnis: str = DNIS) -> None:
        await self.record(
            tenant,
            call_id,
            CallOffered(
                call_id=call_id, ani="+242066123456", dnis=dnis, trunk="t", sip_call_id=call_id
            ),
        )

    async def end(self, tenant: str, call_id: str, by: EndedBy = EndedBy.CALLER) -> None:
        cause = EndCause.CALLER_HANGUP if by is EndedBy.CALLER else EndCause.AGENT_HANGUP
        await self.record(tenant, call_id, CallEnded(call_id=call_id, cause=cause, ended_by=by))

    async def create_campaign(self, tenant: str, campaign_id: str, queue_id: str) -> None:
        """The dialer's ``campaign.created`` (this stand-in's relay publishes it on
        ``plateau.dialer``, the topic of its type)."""
        created = CampaignCreated(
            campaign_id=campaign_id,
            name="Renewals",
            queue_id=queue_id,
            pacing=PacingMode.PROGRESSIVE,
            max_abandon_rate=0.03,
            max_attempts=3,
            retry_after_s=60,
            ring_timeout_s=15,
            calling_window=CallingWindow(
                start=dt.time(0, 0),
                end=dt.time(23, 59),
                days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                time_zone="Africa/Brazzaville",
            ),
        )
        await self.store.append(
            f"campaign-{tenant}:{campaign_id}", [NewEvent(created, tenant=tenant)]
        )

    async def stop_campaign(self, tenant: str, campaign_id: str) -> None:
        """The dialer's ``campaign.stopped`` (calls in flight still finish)."""
        stopped = CampaignStopped(campaign_id=campaign_id, requested_by="test", reason="done")
        await self.store.append(stopped.stream_id(tenant), [NewEvent(stopped, tenant=tenant)])

    async def answered(
        self, tenant: str, call_id: str, campaign_id: str, agent_id: str | None = None
    ) -> None:
        """An originated call the customer answered (the acd's turn: 2 s at most)."""
        await self.originate(tenant, call_id, campaign_id, agent_id)
        await self.answer(tenant, call_id, campaign_id)

    async def originate(
        self, tenant: str, call_id: str, campaign_id: str, agent_id: str | None = None
    ) -> None:
        """The gateway dialled a contact of the campaign (``agent_id``: preview)."""
        await self.record(
            tenant,
            call_id,
            CallOriginated(
                call_id=call_id,
                campaign_id=campaign_id,
                contact_id=f"ct-{call_id}",
                attempt_id=f"at-{call_id}",
                number="+242066123456",
                list_version=1,
                trunk="t",
                requested_by=DialRequester.DIALER,
                agent_id=agent_id,
                sip_call_id=call_id,
            ),
        )

    async def answer(self, tenant: str, call_id: str, campaign_id: str) -> None:
        """The customer answered a call ``originate`` placed."""
        await self.record(
            tenant,
            call_id,
            DialCompleted(
                call_id=call_id,
                outcome=DialOutcome.ANSWERED,
                campaign_id=campaign_id,
                attempt_id=f"at-{call_id}",
            ),
        )

    async def compliance_abandon(self, tenant: str, call_id: str, campaign_id: str) -> None:
        """The gateway's 2-s rule: no agent connected, the call is dropped and counted."""
        await self.record(
            tenant,
            call_id,
            ComplianceAbandoned(
                call_id=call_id,
                campaign_id=campaign_id,
                attempt_id=f"at-{call_id}",
                waited_ms=2000,
                message_played=False,
            ),
            CallEnded(call_id=call_id, cause=EndCause.COMPLIANCE_ABANDON, ended_by=EndedBy.GATEWAY),
        )


@dataclass
class RunningAcd:
    """An acd in this process: its state, its desk's address, its tasks."""

    acd: Acd
    store: EventStore
    desk_port: int
    tasks: list[asyncio.Task[None]]
    stop: asyncio.Event
    server: GrpcServer
    outbound: Outbound

    def desk(self, channel: grpc.aio.Channel) -> desk_grpc.AgentDeskStub:
        return desk_grpc.AgentDeskStub(channel)

    async def events(self, kind: str | None = None) -> list[StoredEvent]:
        found = [e async for e in self.store.iterate()]
        return [e for e in found if kind is None or e.envelope.type == kind]

    async def facts(self, kind: str) -> list[EventData]:
        return [parse(e.envelope) for e in await self.events(kind)]


@dataclass
class World:
    """The acd's schema and pool, the gateway stand-in, the broker; starts acds."""

    acd_schema: MigratedSchema
    acd_pool: asyncpg.Pool
    gateway: GatewayFacts
    call_control: FakeCallControl
    call_control_port: int
    bootstrap: str
    tenant: str
    group: str

    def c(self, name: str) -> str:
        """A call id of this test: call ids, like the gateway's, are unique everywhere
        (consumers keep their checkpoints per stream, ``call-<call_id>``)."""
        return f"{self.tenant}-{name}"

    @property
    def store(self) -> EventStore:
        return EventStore(self.acd_pool, self.acd_schema.schema)

    async def configure(self, **queue: object) -> None:
        config = load_config(tenant_config(self.tenant, **queue))  # type: ignore[arg-type]
        await apply_config(self.store, self.acd_pool, config, "test")

    @contextlib.asynccontextmanager
    async def running_acd(self) -> AsyncIterator[RunningAcd]:
        running = await self.start_acd()
        try:
            yield running
        finally:
            await self.stop_acd(running)

    async def start_acd(self, *also: str) -> RunningAcd:
        """Start an acd serving this test's tenant and the tenants ``also`` names."""
        acd = Acd(self.store, self.acd_pool)
        gateway = GrpcGateway(f"127.0.0.1:{self.call_control_port}")
        outbound = Outbound()
        async with self.acd_pool.acquire() as conn:
            await outbound.load(conn)
        tenants = frozenset({self.tenant, *also})
        consumer = calls_consumer(
            acd,
            self.acd_pool,
            self.bootstrap,
            tenants=tenants,
            consumer=self.group,
            outbound=outbound,
        )
        campaigns = campaigns_consumer(
            outbound,
            self.acd_pool,
            self.bootstrap,
            tenants=tenants,
            consumer=self.group.replace("acd-calls", "acd-dialer"),
        )
        server = GrpcServer("127.0.0.1", 0, [agent_desk_service(acd)])
        await server.start()
        stop = asyncio.Event()
        await acd.load()
        tasks = [
            asyncio.create_task(acd.follow(stop, 0.05)),
            asyncio.create_task(Effects(acd, gateway).run(stop)),
            asyncio.create_task(consumer.run(stop)),
            asyncio.create_task(campaigns.run(stop)),
        ]
        return RunningAcd(acd, self.store, server.port, tasks, stop, server, outbound)

    async def stop_acd(self, running: RunningAcd, *, crash: bool = False) -> None:
        """Stop it; ``crash`` cancels everything at once, as close to kill -9 as a task
        can get (the real kill -9 is the e2e test's)."""
        if crash:
            for task in running.tasks:
                task.cancel()
        running.stop.set()
        await asyncio.gather(*running.tasks, return_exceptions=True)
        await running.server.stop(0)


@contextlib.asynccontextmanager
async def world(admin_dsn: str, bootstrap: str) -> AsyncIterator[World]:
    """A fresh acd schema, a gateway stand-in with its relay, a tenant of this test."""
    acd_schema = await make_schema(admin_dsn, ACD_MIGRATIONS, prefix="acd")
    gateway_schema = await make_schema(admin_dsn, prefix="gw")
    acd_pool = await create_pool(acd_schema.dsn, max_size=20)
    gateway_pool = await create_pool(gateway_schema.dsn, max_size=10)
    facts = GatewayFacts(EventStore(gateway_pool, gateway_schema.schema), gateway_pool)
    relay = OutboxRelay(facts.store, gateway_pool, bootstrap, idle_poll=0.02)
    relay_stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(relay_stop))
    fake = FakeCallControl(facts)
    server = GrpcServer(
        "127.0.0.1",
        0,
        [
            GrpcService(
                "plateau.calls.v1.CallControl", pb_grpc.add_CallControlServicer_to_server, fake
            )
        ],
    )
    await server.start()
    tenant = f"t-{secrets.token_hex(4)}"
    try:
        yield World(
            acd_schema,
            acd_pool,
            facts,
            fake,
            server.port,
            bootstrap,
            tenant,
            f"acd-calls-{tenant}",
        )
    finally:
        await server.stop(0)
        relay_stop.set()
        await relay_task
        await acd_pool.close()
        await gateway_pool.close()


async def eventually(check: Callable[[], object], what: str, timeout: float = 90.0) -> None:
    """Wait until ``check()`` is true (an async check is awaited); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-plateau-tenant", tenant),)


async def login_available(stub: desk_grpc.AgentDeskStub, tenant: str, *agent_ids: str) -> None:
    for agent_id in agent_ids:
        await stub.Login(desk.LoginRequest(agent_id=agent_id), metadata=metadata(tenant))
        await stub.SetAvailable(
            desk.SetAvailableRequest(agent_id=agent_id), metadata=metadata(tenant)
        )
