"""The acd against real PostgreSQL, the real broker and real gRPC: calls wait and are served
in order, ring-no-answer requeues at the head, abandons are recorded, pause and resume,
overflow, skills, the desk's stream, duplicates, and a restart that loses nothing."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from acd_harness import (
    DNIS,
    RunningAcd,
    World,
    eventually,
    login_available,
    metadata,
    world,
)

from plateau_acd.entrypoints import calls
from plateau_contracts.catalogue import parse
from plateau_contracts.events.calls import CallOffered, EndedBy
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallAnswered,
    CallOverflowed,
    CallQueued,
    CallRequeued,
    RequeueReason,
)
from plateau_contracts.grpc.agents.v1 import agent_desk_pb2 as desk
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_runtime.consumer import apply_once
from plateau_runtime.embedded import EmbeddedBroker
from plateau_runtime.eventstore import NewEvent, StreamAppend

pytestmark = pytest.mark.integration


async def queued(running: RunningAcd, count: int) -> bool:
    return len(await running.events("call.queued")) >= count


async def offer_in_order(w: World, running: RunningAcd, *call_ids: str) -> None:
    """Offer calls one by one, each queued before the next is offered (arrival order)."""
    for call_id in call_ids:
        before = len(await running.events("call.queued"))
        await w.gateway.offer(w.tenant, call_id)
        await eventually(lambda b=before: queued(running, b + 1), f"{call_id} queued")


async def reserved_order(running: RunningAcd) -> list[str]:
    """Calls in the order the acd reserved an agent for them (its decisions, recorded)
    (``ConnectAgent`` requests are sent concurrently: they may reach the gateway in any
    order)."""
    return [
        f.call_id
        for f in await running.facts("call.agent_reserved")
        if isinstance(f, CallAgentReserved)
    ]


def reserved_per_call(facts: list[object]) -> Counter[str]:
    return Counter(f.call_id for f in facts if isinstance(f, CallAgentReserved))


async def test_calls_wait_while_all_agents_are_busy_and_are_served_in_order(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1", "a-2", "a-3")
            await offer_in_order(
                w, running, w.c("c-1"), w.c("c-2"), w.c("c-3"), w.c("c-4"), w.c("c-5")
            )
            await eventually(lambda: len(w.call_control.connects) >= 3, "3 calls connected")
            first_three = [w.c("c-1"), w.c("c-2"), w.c("c-3")]
            assert await reserved_order(running) == first_three
            assert sorted(w.call_control.connected_calls()) == first_three
            status = await stub.QueueStatus(desk.QueueStatusRequest(), metadata=metadata(w.tenant))
            main = next(q for q in status.queues if q.queue_id == "q-main")
            assert (main.calls_waiting, main.agents_on_call, main.agents_available) == (2, 3, 0)

            await w.gateway.end(w.tenant, w.c("c-2"), EndedBy.AGENT)
            await eventually(lambda: len(w.call_control.connects) >= 4, "c-4 connected")
            await w.gateway.end(w.tenant, w.c("c-1"), EndedBy.AGENT)
            await eventually(lambda: len(w.call_control.connects) >= 5, "c-5 connected")
            all_five = [w.c(f"c-{n}") for n in range(1, 6)]
            assert await reserved_order(running) == all_five
            assert sorted(w.call_control.connected_calls()) == all_five
            await eventually(
                lambda: running_count(running, "call.answered", 5), "5 answers recorded"
            )
            facts = await running.facts("call.agent_reserved")
            assert set(reserved_per_call(facts).values()) == {1}, "a call reserved twice"
            # c-4 went to the agent freed by c-2, and the reservation says why.
            c4 = next(
                f for f in facts if isinstance(f, CallAgentReserved) and f.call_id == w.c("c-4")
            )
            c2 = next(
                f for f in facts if isinstance(f, CallAgentReserved) and f.call_id == w.c("c-2")
            )
            assert c4.agent_id == c2.agent_id
            assert c4.candidates[0].agent_id == c4.agent_id
            assert c4.strategy == "longest_idle" and "longest idle" in c4.decision
            answered = await running.facts("call.answered")
            assert all(isinstance(a, CallAnswered) and a.within_service_level for a in answered)
            # Agents never held two calls: every ConnectAgent names a distinct reservation.
            ids = [r.request_id for r in w.call_control.connects]
            assert len(ids) == len(set(ids))


async def running_count(running: RunningAcd, kind: str, count: int) -> bool:
    return len(await running.events(kind)) >= count


async def test_ring_no_answer_requeues_at_the_head_and_the_agent_is_not_responding(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        w.call_control.script["a-1"] = "no_answer"
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1")
            await w.gateway.offer(w.tenant, w.c("c-1"))
            await eventually(lambda: running_count(running, "call.requeued", 1), "a requeue")
            await offer_in_order(w, running, w.c("c-2"))
            requeued = await running.facts("call.requeued")
            assert isinstance(requeued[0], CallRequeued)
            assert requeued[0].reason is RequeueReason.RING_NO_ANSWER and requeued[0].at_head
            not_responding = await running.facts("agent.not_responding")
            assert [getattr(f, "reason", None) for f in not_responding] == ["ring_no_answer"]
            status = await stub.Login(
                desk.LoginRequest(agent_id="a-2"), metadata=metadata(w.tenant)
            )
            assert status.state == desk.AGENT_STATE_UNAVAILABLE
            await stub.SetAvailable(
                desk.SetAvailableRequest(agent_id="a-2"), metadata=metadata(w.tenant)
            )
            await eventually(lambda: len(w.call_control.connects) >= 2, "c-1 offered again")
            # The requeued call goes before c-2, which arrived while it rang.
            assert [(r.call_id, r.agent_id) for r in w.call_control.connects[:2]] == [
                (w.c("c-1"), "a-1"),
                (w.c("c-1"), "a-2"),
            ]
            a1 = await stub.Logout(desk.LogoutRequest(agent_id="a-1"), metadata=metadata(w.tenant))
            assert a1.state == desk.AGENT_STATE_LOGGED_OUT


async def test_a_caller_who_hangs_up_while_waiting_is_recorded_as_abandoned(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        async with w.running_acd() as running:
            await offer_in_order(w, running, w.c("c-1"))
            await w.gateway.end(w.tenant, w.c("c-1"))
            await eventually(lambda: running_count(running, "call.abandoned", 1), "an abandon")
            [abandon] = await running.facts("call.abandoned")
            assert isinstance(abandon, CallAbandoned)
            assert abandon.queue_id == "q-main" and abandon.agent_id is None
            [queued_fact] = await running.events("call.queued")
            [abandoned] = await running.events("call.abandoned")
            wait = abandoned.envelope.occurred_at - queued_fact.envelope.occurred_at
            assert abandon.waited_ms == int(wait.total_seconds() * 1000)


async def test_pause_and_resume_and_the_desk_stream(admin_dsn: str, broker: EmbeddedBroker) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        w.call_control.script["a-1"] = "ring"
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Pause(
                    desk.PauseRequest(agent_id="a-1", code="nap"), metadata=metadata(w.tenant)
                )
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "break, lunch" in (refused.value.details() or "")
            paused = await stub.Pause(
                desk.PauseRequest(agent_id="a-1", code="break"), metadata=metadata(w.tenant)
            )
            assert (paused.state, paused.pause_code) == (desk.AGENT_STATE_PAUSED, "break")
            watch = stub.WatchAgent(
                desk.WatchAgentRequest(agent_id="a-1"), metadata=metadata(w.tenant)
            )
            first = await watch.read()
            assert first.status.state == desk.AGENT_STATE_PAUSED
            await offer_in_order(w, running, w.c("c-1"))
            status = await stub.QueueStatus(
                desk.QueueStatusRequest(queue_ids=["q-main"]), metadata=metadata(w.tenant)
            )
            assert (status.queues[0].calls_waiting, status.queues[0].agents_paused) == (1, 1)
            assert w.call_control.connects == []
            await stub.SetAvailable(
                desk.SetAvailableRequest(agent_id="a-1"), metadata=metadata(w.tenant)
            )
            seen = []
            while not seen or seen[-1].status.state != desk.AGENT_STATE_RINGING:
                seen.append(await watch.read())
            ringing = seen[-1]
            assert ringing.offered_call.call_id == w.c("c-1")
            assert ringing.offered_call.caller_number == "+242066123456"
            assert ringing.offered_call.queue_name == "Main"
            # A pause asked while the phone rings starts when the call is over.
            during = await stub.Pause(
                desk.PauseRequest(agent_id="a-1", code="lunch"), metadata=metadata(w.tenant)
            )
            assert during.state == desk.AGENT_STATE_RINGING
            await w.gateway.end(w.tenant, w.c("c-1"))
            while seen[-1].status.state != desk.AGENT_STATE_PAUSED:
                seen.append(await watch.read())
            assert seen[-1].status.pause_code == "lunch"
            watch.cancel()
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await stub.Logout(desk.LogoutRequest(agent_id="a-9"), metadata=metadata(w.tenant))
            assert busy.value.code() is grpc.StatusCode.NOT_FOUND


async def test_overflow_to_a_second_queue_after_the_maximum_wait(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure(
            max_wait_s=1, overflow_queue="q-spill", required_skills=[{"name": "lingala"}]
        )
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1")  # no lingala: cannot take q-main
            await offer_in_order(w, running, w.c("c-1"))
            await eventually(lambda: len(w.call_control.connects) >= 1, "the overflowed call")
            [overflow] = await running.facts("call.overflowed")
            assert isinstance(overflow, CallOverflowed) and overflow.to_queue_id == "q-spill"
            assert overflow.waited_ms >= 1000
            spill = [f for f in await running.facts("call.queued") if f.queue_id == "q-spill"]
            assert isinstance(spill[0], CallQueued) and spill[0].overflowed_from == "q-main"
            assert w.call_control.connects[0].queue_id == "q-spill"


async def test_skills_route_to_the_agent_with_the_required_level(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure(
            strategy="skills_based", required_skills=[{"name": "french", "min_level": 2}]
        )
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            # a-1 (french 1) has waited longest but lacks the level; a-3 (3) beats a-2 (2).
            await login_available(stub, w.tenant, "a-1", "a-2", "a-3")
            await offer_in_order(w, running, w.c("c-1"))
            await eventually(lambda: len(w.call_control.connects) >= 1, "a connect")
            assert w.call_control.connects[0].agent_id == "a-3"
            [reserved] = await running.facts("call.agent_reserved")
            assert isinstance(reserved, CallAgentReserved)
            assert [c.agent_id for c in reserved.candidates] == ["a-3", "a-2"]
            assert [c.skill_level for c in reserved.candidates] == [3, 2]


async def test_a_replayed_fact_changes_nothing(admin_dsn: str, broker: EmbeddedBroker) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        async with w.running_acd() as running:
            await offer_in_order(w, running, w.c("c-1"))
            [offered] = await w.gateway.store.read_stream(f"call-{w.c('c-1')}")
            async with w.acd_pool.acquire() as conn:

                async def effect(c: object) -> None:
                    await calls.handle(running.acd, conn, offered.envelope)

                applied = await apply_once(conn, w.group, offered.envelope, effect)
                assert applied is False
                # Even handled again without the checkpoint, a known call is not queued twice.
                async with conn.transaction():
                    await calls.handle(running.acd, conn, offered.envelope)
            await running.acd.refresh()
            assert len(await running.events("call.queued")) == 1


async def test_a_burst_of_facts_decided_together_reserves_each_call_once(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    """Facts consumed in one batch are decided in one transaction, each on the state its
    predecessors lead to: an agent is never reserved twice, a call never offered twice."""
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        call_ids = [w.c(f"b-{n}") for n in range(8)]
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await login_available(stub, w.tenant, "a-1", "a-2", "a-3")
            # All eight offered in one transaction of the gateway: they arrive together.
            await w.gateway.store.append_many(
                [
                    StreamAppend(
                        f"call-{call_id}",
                        [
                            NewEvent(
                                CallOffered(
                                    call_id=call_id,
                                    ani="+242066123456",
                                    dnis=DNIS,
                                    trunk="t",
                                    sip_call_id=call_id,
                                ),
                                tenant=w.tenant,
                            )
                        ],
                    )
                    for call_id in call_ids
                ]
            )
            await eventually(lambda: queued(running, 8), "8 calls queued")
            await eventually(lambda: running_count(running, "call.answered", 3), "3 answered")
            served: list[str] = []
            while len(served) < len(call_ids):
                connected = [c for c in w.call_control.connected_calls() if c not in served]
                for call_id in connected:
                    await w.gateway.end(w.tenant, call_id, EndedBy.AGENT)
                served += connected
                expected = min(len(served) + 3, len(call_ids))
                await eventually(
                    lambda e=expected: running_count(running, "call.answered", e),
                    "the next calls answered",
                )
            facts = await running.facts("call.agent_reserved")
            assert sorted(reserved_per_call(facts)) == sorted(call_ids)
            assert set(reserved_per_call(facts).values()) == {1}, "a call reserved twice"
            assert len(await running.events("call.queued")) == 8
            # Nothing is left waiting.
            await running.acd.refresh()
            book = running.acd.book(w.tenant)
            assert not any(q.calls for q in book.state.queues.values())


async def test_twenty_waiting_calls_survive_a_crash_and_each_is_routed_once(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        call_ids = [w.c(f"c-{n:02d}") for n in range(1, 21)]
        running = await w.start_acd()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel:
            stub = running.desk(channel)
            for agent_id in ("a-1", "a-2", "a-3"):
                await stub.Login(desk.LoginRequest(agent_id=agent_id), metadata=metadata(w.tenant))
            await offer_in_order(w, running, *call_ids)
        await w.stop_acd(running, crash=True)

        running = await w.start_acd()
        try:
            assert sum(len(q.calls) for q in running.acd.book(w.tenant).state.queues.values()) == 20
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel:
                stub = running.desk(channel)
                for agent_id in ("a-1", "a-2", "a-3"):
                    await stub.SetAvailable(
                        desk.SetAvailableRequest(agent_id=agent_id), metadata=metadata(w.tenant)
                    )
                ended: set[str] = set()
                while len(ended) < 20:
                    await eventually(
                        lambda: len(set(w.call_control.connected_calls()) - ended) > 0,
                        f"a call to end after {len(ended)}",
                    )
                    for call_id in w.call_control.connected_calls():
                        if call_id not in ended:
                            ended.add(call_id)
                            await w.gateway.end(w.tenant, call_id, EndedBy.AGENT)
            assert await reserved_order(running) == call_ids
            assert sorted(w.call_control.connected_calls()) == call_ids
            try:
                await eventually(lambda: running_count(running, "call.answered", 20), "20 answers")
            except pytest.fail.Exception as missing:
                raise AssertionError(await why_unanswered(w, running, call_ids)) from missing
            reserved = reserved_per_call(await running.facts("call.agent_reserved"))
            assert reserved == Counter({call_id: 1 for call_id in call_ids})
        finally:
            await w.stop_acd(running)


async def why_unanswered(w: World, running: RunningAcd, call_ids: list[str]) -> str:
    """For each call without an answer: what the gateway recorded, what the acd decided, and
    how far the acd's consumer got in the call's stream (a failure names its cause)."""
    decided = await running.events()
    answered = {
        getattr(parse(e.envelope), "call_id", None)
        for e in decided
        if e.envelope.type == "call.answered"
    }
    lines = []
    async with w.acd_pool.acquire() as conn:
        for call_id in call_ids:
            if call_id in answered:
                continue
            facts = [e.envelope.type for e in await w.gateway.store.read_stream(f"call-{call_id}")]
            acd = [
                f"{e.position}:{e.envelope.type}"
                for e in decided
                if getattr(parse(e.envelope), "call_id", None) == call_id
            ]
            checkpoint = await conn.fetchval(
                "select version from consumer_checkpoints where stream = $1", f"call-{call_id}"
            )
            lines.append(f"{call_id}: gateway {facts}, acd {acd}, consumed up to {checkpoint}")
    return "calls without an answer:\n" + "\n".join(lines)


async def test_an_unknown_number_is_hung_up_and_a_call_gone_at_the_gateway_is_not_retried(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        w.call_control.script["a-1"] = "gone"
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            await w.gateway.offer(w.tenant, w.c("c-1"), dnis="+242053000199")
            await eventually(lambda: len(w.call_control.hangups) >= 1, "the hang-up")
            [failed] = await running.events("call.routing_failed")
            assert failed.envelope.stream == f"entrypoint-{w.tenant}:+242053000199"
            assert w.call_control.hangups[0].call_id == w.c("c-1")
            assert w.call_control.hangups[0].reason == pb.HANGUP_REASON_UNKNOWN_DESTINATION
            assert w.call_control.hangups[0].request_id == str(failed.envelope.event_id)

            await login_available(stub, w.tenant, "a-1")
            await w.gateway.offer(w.tenant, w.c("c-2"))
            await eventually(lambda: running_count(running, "call.abandoned", 1), "the end")
            assert len(w.call_control.connects) == 1  # NOT_FOUND: never sent again
            status = await stub.WatchAgent(
                desk.WatchAgentRequest(agent_id="a-1"), metadata=metadata(w.tenant)
            ).read()
            assert status.status.state == desk.AGENT_STATE_AVAILABLE


async def test_a_reservation_in_flight_at_a_crash_is_sent_again_with_the_same_request_id(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        w.call_control.script["a-1"] = "ring"
        running = await w.start_acd()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel:
            await login_available(running.desk(channel), w.tenant, "a-1")
        await offer_in_order(w, running, w.c("c-1"))
        await eventually(lambda: len(w.call_control.connects) == 1, "the first ConnectAgent")
        await w.stop_acd(running, crash=True)

        running = await w.start_acd()
        try:
            await eventually(lambda: len(w.call_control.connects) == 2, "the ConnectAgent again")
            first, again = w.call_control.connects
            assert again.request_id == first.request_id  # the gateway answers it once
            assert (again.call_id, again.agent_id) == (first.call_id, first.agent_id)
            [reserved] = await running.events("call.agent_reserved")
            assert str(reserved.envelope.event_id) == first.request_id
        finally:
            await w.stop_acd(running)


async def test_a_recent_routing_failure_is_hung_up_again_after_a_restart(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        running = await w.start_acd()
        await w.gateway.offer(w.tenant, w.c("c-1"), dnis="+242053000199")
        await eventually(lambda: len(w.call_control.hangups) == 1, "the hang-up")
        await w.stop_acd(running, crash=True)
        running = await w.start_acd()
        try:
            await eventually(lambda: len(w.call_control.hangups) == 2, "the hang-up again")
            first, again = w.call_control.hangups
            assert (again.request_id, again.call_id) == (first.request_id, first.call_id)
        finally:
            await w.stop_acd(running)


async def test_busy_unregistered_and_logout_while_ringing(
    admin_dsn: str, broker: EmbeddedBroker
) -> None:
    async with world(admin_dsn, broker.bootstrap) as w:
        await w.configure()
        w.call_control.script |= {"a-1": "busy", "a-2": "unregistered", "a-3": "ring"}
        async with (
            w.running_acd() as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.desk_port}") as channel,
        ):
            stub = running.desk(channel)
            # Busy: the call goes back to the head, the agent is not responding ("rejected").
            await login_available(stub, w.tenant, "a-1")
            await w.gateway.offer(w.tenant, w.c("c-1"))
            await eventually(lambda: running_count(running, "call.requeued", 1), "a requeue")
            [rejected] = await running.facts("agent.not_responding")
            assert getattr(rejected, "reason", None) == "rejected"
            # Unregistered: the agent is logged out, the call requeued again.
            await login_available(stub, w.tenant, "a-2")
            await eventually(lambda: running_count(running, "agent.logged_out", 1), "a logout")
            [logged_out] = await running.facts("agent.logged_out")
            assert getattr(logged_out, "reason", None) == "extension_unregistered"
            # Logout while ringing: the call goes back; a-1 takes it once the old leg rang out.
            await login_available(stub, w.tenant, "a-3")
            await eventually(lambda: w.c("c-1") in w.call_control.ringing, "a-3 ringing")
            await stub.Logout(desk.LogoutRequest(agent_id="a-3"), metadata=metadata(w.tenant))
            w.call_control.script["a-1"] = "answer"
            await stub.SetAvailable(
                desk.SetAvailableRequest(agent_id="a-1"), metadata=metadata(w.tenant)
            )
            await eventually(lambda: w.call_control.refused >= 1, "a refused ConnectAgent")
            await w.call_control.ring_out(w.tenant, w.c("c-1"))
            await eventually(lambda: running_count(running, "call.answered", 1), "the answer")
            [answered] = await running.facts("call.answered")
            assert getattr(answered, "agent_id", None) == "a-1"
            reasons = [getattr(f, "reason", None) for f in await running.facts("call.requeued")]
            assert reasons == [
                RequeueReason.AGENT_REJECTED,
                RequeueReason.AGENT_UNREACHABLE,
                RequeueReason.AGENT_LOGGED_OUT,
            ]
