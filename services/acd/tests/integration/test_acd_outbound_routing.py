"""Live outbound answers through the real acd (PostgreSQL, broker, gRPC): the campaign's
queue learnt from ``plateau.dialer``, the answer served ahead of waiting inbound calls and
connected like an inbound call, the gateway's 2-s abandon counted as nothing of the queue's,
an unknown campaign refused and left to the gateway, and a crash that forgets neither the
campaigns nor the dials in progress."""

from __future__ import annotations

import grpc
import pytest
from acd_harness import RunningAcd, World, eventually, login_available, metadata, world

from plateau_contracts.events.calls import EndedBy
from plateau_contracts.events.routing import (
    CallAgentReserved,
    CallAnswered,
    CallDequeued,
    CallQueued,
    RoutingFailed,
)
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_runtime.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration

CAMPAIGN = "renewals"
SALES = "q-spill"  # the campaign's queue (no entry point maps to it)


async def count(running: RunningAcd, kind: str) -> int:
    return len(await running.events(kind))


async def campaign_known(w: World, running: RunningAcd) -> None:
    await w.gateway.create_campaign(w.tenant, CAMPAIGN, SALES)
    await eventually(
        lambda: running.outbound.campaign(w.tenant, CAMPAIGN) is not None, "the campaign known"
    )


async def test_a_live_answer_is_connected_ahead_of_waiting_inbound_calls(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            await campaign_known(w, running)
            stub = running.desk(channel)
            await w.gateway.offer(w.tenant, w.c("in-1"))
            await w.gateway.offer(w.tenant, w.c("in-2"))
            await eventually(lambda: _count_is(running, "call.queued", 2), "inbound queued")
            # Stopped while its dial was in flight: the answer is still taken.
            await w.gateway.stop_campaign(w.tenant, CAMPAIGN)
            await eventually(
                lambda: (
                    getattr(running.outbound.campaign(w.tenant, CAMPAIGN), "state", "") == "stopped"
                ),
                "the stop known",
            )
            await w.gateway.answered(w.tenant, w.c("out-1"), CAMPAIGN)
            await eventually(lambda: _count_is(running, "call.queued", 3), "the answer queued")

            await login_available(stub, w.tenant, "a-1")
            await eventually(lambda: len(w.call_control.connects) >= 1, "an agent connected")
            first = w.call_control.connects[0]
            assert (first.call_id, first.queue_id) == (w.c("out-1"), SALES)
            await eventually(lambda: _count_is(running, "call.answered", 1), "the answer")

            queued = [
                f
                for f in await running.facts("call.queued")
                if isinstance(f, CallQueued) and f.call_id == w.c("out-1")
            ]
            assert len(queued) == 1
            assert (queued[0].direction, queued[0].campaign_id, queued[0].queue_id) == (
                "outbound",
                CAMPAIGN,
                SALES,
            )
            assert queued[0].ani == "+242066123456"
            [reserved] = await running.facts("call.agent_reserved")
            assert isinstance(reserved, CallAgentReserved)
            assert reserved.decision.startswith("longest idle: a-1")
            [reservation] = await running.events("call.agent_reserved")
            assert first.request_id == str(reservation.envelope.event_id)
            [answered] = await running.facts("call.answered")
            assert isinstance(answered, CallAnswered) and answered.queue_id == SALES

            # The customer and the agent talk, then hang up: the agent takes the next call.
            await w.gateway.end(w.tenant, w.c("out-1"), EndedBy.AGENT)
            await eventually(lambda: len(w.call_control.connects) >= 2, "an inbound connected")
            # The two offers are two streams, maybe on two partitions: the acd may learn of
            # either first, and the one it queued first is served first.
            inbound_order = [
                f.call_id
                for f in await running.facts("call.queued")
                if isinstance(f, CallQueued) and f.call_id in {w.c("in-1"), w.c("in-2")}
            ]
            assert w.call_control.connects[1].call_id == inbound_order[0]
            async with w.acd_pool.acquire() as conn:
                left = await conn.fetchval(
                    "select count(*) from outbound_calls where call_id = $1", w.c("out-1")
                )
            assert left == 0  # forgotten once ended


async def test_preview_and_a_crash_forget_neither_the_campaign_nor_the_dial(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        running = await w.start_acd()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel:
            await campaign_known(w, running)
            await login_available(running.desk(channel), w.tenant, "a-1", "a-2")
            await w.gateway.originate(w.tenant, w.c("out-1"), CAMPAIGN, agent_id="a-2")
            await eventually(
                lambda: running.outbound.origination(w.tenant, w.c("out-1")) is not None,
                "the origination kept",
            )
        await w.stop_acd(running, crash=True)

        running = await w.start_acd()
        try:
            assert running.outbound.campaign(w.tenant, CAMPAIGN) is not None
            await w.gateway.answer(w.tenant, w.c("out-1"), CAMPAIGN)
            await eventually(lambda: len(w.call_control.connects) >= 1, "the preview agent")
            assert w.call_control.connects[0].agent_id == "a-2"  # not a-1, idle longer
            [reserved] = await running.facts("call.agent_reserved")
            assert isinstance(reserved, CallAgentReserved) and reserved.strategy == "preview"
        finally:
            await w.stop_acd(running)


async def test_no_agent_the_gateway_abandons_and_the_queue_counts_no_abandon(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            await campaign_known(w, running)
            await w.gateway.answered(w.tenant, w.c("out-1"), CAMPAIGN)
            await eventually(lambda: _count_is(running, "call.queued", 1), "the answer queued")
            await w.gateway.compliance_abandon(w.tenant, w.c("out-1"), CAMPAIGN)
            await eventually(lambda: _count_is(running, "call.dequeued", 1), "the call dequeued")
            [left] = await running.facts("call.dequeued")
            assert isinstance(left, CallDequeued)
            assert (left.queue_id, left.campaign_id, left.cause) == (
                SALES,
                CAMPAIGN,
                "compliance_abandon",
            )

            # An answer of a campaign the acd does not know: refused, not hung up.
            await w.gateway.answered(w.tenant, w.c("out-2"), "unknown-campaign")
            await eventually(lambda: _count_is(running, "call.routing_failed", 1), "refusal")
            [refused] = await running.facts("call.routing_failed")
            assert isinstance(refused, RoutingFailed)
            assert (refused.queue_id, refused.campaign_id) == (None, "unknown-campaign")

            # The agent who logs in afterwards finds nothing to take; nothing was hung up.
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1")
            status = await stub.QueueStatus(desk.QueueStatusRequest(), metadata=metadata(w.tenant))
            assert sum(q.calls_waiting for q in status.queues) == 0
            assert await count(running, "call.abandoned") == 0
            assert w.call_control.hangups == []
            assert w.call_control.connects == []


async def _count_is(running: RunningAcd, kind: str, expected: int) -> bool:
    return await count(running, kind) >= expected
