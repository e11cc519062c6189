"""Two tenants with the same queue, agent and dialled-number ids, end to end: each call is
routed to its own tenant's agent, each tenant's streams hold that tenant's history alone,
and a consumer of the acd's topics applies both tenants' events, none taken for a
duplicate of the other's."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from dataclasses import replace

import grpc
import pytest
from acd_harness import DNIS, eventually, login_available, tenant_config, world

from plateau_acd.configuration import apply_config
from plateau_acd.domain.config import load_config
from plateau_acd.domain.routing import AcdState
from plateau_acd.handlers import Acd
from plateau_contracts.catalogue import parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events.common import split_tenant_stream
from plateau_contracts.events.routing import CallAgentReserved
from plateau_contracts.topics import Topic
from plateau_runtime.consumer import EventConsumer
from plateau_runtime.db import Connection
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.eventstore import StoredEvent
from plateau_runtime.outbox import OutboxRelay

pytestmark = pytest.mark.integration


def versions_by_stream(events: list[StoredEvent]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for stored in events:
        found[stored.envelope.stream].append(stored.envelope.stream_version)
    return found


def folded(state: AcdState) -> AcdState:
    """The state but the agents' time per state: the gateway's ringing, shown but not
    recorded, splits the running acd's time reserved into reserved and ringing."""
    agents = {agent_id: replace(agent, totals_ms={}) for agent_id, agent in state.agents.items()}
    return replace(state, agents=agents)


async def test_two_tenants_with_the_same_ids_keep_their_streams_and_calls_apart(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        other = f"{w.tenant}-b"
        tenants = (w.tenant, other)
        await w.configure()
        # Same queues (q-main, q-spill), same agents (a-1...), same dialled number.
        await apply_config(w.store, w.acd_pool, load_config(tenant_config(other)), "test")
        running = await w.start_acd(other)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel:
                stub = running.desk(channel)
                for tenant in tenants:
                    await login_available(stub, tenant, "a-1")
                calls = {tenant: f"{tenant}-c-1" for tenant in tenants}
                for tenant, call_id in calls.items():
                    await w.gateway.offer(tenant, call_id, dnis=DNIS)

                async def answered() -> bool:
                    return len(await running.events("call.answered")) >= 2

                await eventually(answered, "both calls answered")
                # The states it took from its decisions are those its store folds to.
                rebuilt = Acd(w.store, w.acd_pool)
                await rebuilt.load()
                await running.acd.refresh()
                for tenant in tenants:
                    assert folded(rebuilt.book(tenant).state) == folded(
                        running.acd.book(tenant).state
                    )
        finally:
            await w.stop_acd(running)

        events = await running.events()
        reserved = [e for e in events if e.envelope.type == "call.agent_reserved"]
        routed = {}
        for stored in reserved:
            fact = parse(stored.envelope)
            assert isinstance(fact, CallAgentReserved)
            routed[fact.call_id] = (stored.envelope.tenant, fact.agent_id)
        assert routed == {calls[t]: (t, "a-1") for t in tenants}

        # Each tenant's queue and agent have a stream of their own, whole and in order.
        streams = versions_by_stream(events)
        for tenant in tenants:
            queue = streams[f"queue-{tenant}:q-main"]
            agent = streams[f"agent-{tenant}:a-1"]
            assert queue == list(range(1, len(queue) + 1))
            assert agent == list(range(1, len(agent) + 1))
            history = [
                e.envelope.type
                for e in events
                if e.envelope.stream in (f"queue-{tenant}:q-main", f"agent-{tenant}:a-1")
            ]
            for kind in ("call.queued", "call.agent_reserved", "call.answered"):
                assert history.count(kind) == 1, (tenant, kind, history)
            for kind in ("agent.logged_in", "agent.reserved", "agent.became_busy"):
                assert history.count(kind) == 1, (tenant, kind, history)
        scoped = ("queue-", "agent-", "entrypoint-")
        for stored in events:
            if stored.envelope.stream.startswith(scoped):
                _, tenant, _ = split_tenant_stream(stored.envelope.stream)
                assert tenant == stored.envelope.tenant

        # A consumer of the acd's topics (relay keys and checkpoints are the stream ids)
        # applies every event of both tenants.
        applied: list[Envelope] = []

        async def handler(conn: Connection, envelope: Envelope) -> None:
            if envelope.tenant in tenants:
                applied.append(envelope)

        relay = OutboxRelay(w.store, w.acd_pool, w.bootstrap, idle_poll=0.02)
        consumer = EventConsumer(
            w.acd_pool,
            w.bootstrap,
            consumer=f"reader-{secrets.token_hex(4)}",
            topics=[Topic.ROUTING, Topic.AGENTS],
            handler=handler,
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
        published = {e.envelope.event_id for e in events}  # each on routing or agents
        try:
            await eventually(
                lambda: published <= {e.event_id for e in applied}, "every event applied"
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        for tenant in tenants:
            mine = [e for e in applied if e.tenant == tenant and e.type == "call.agent_reserved"]
            assert [e.stream for e in mine] == [f"queue-{tenant}:q-main"]
        # Once each: the second tenant's q-main and a-1 versions were not "already seen".
        assert sorted(e.event_id for e in applied) == sorted(published)
