"""The pacing loop over real PostgreSQL and gRPC: it dials only due, checked contacts of a
running campaign, as many as the floor allows; every dial is in the compliance ledger;
outcomes plan retries at the right times; a crash between recording a dial and sending it
neither dials twice nor forgets it.

The gateway is a scripted ``CallControl`` gRPC server (the dialer's real adapter talks to
it over a socket). The gateway's and the acd's facts are recorded in event stores of their
own and applied through the dialer's consumer handler, as the relay would deliver them."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from plateau_contracts.catalogue import parse
from plateau_contracts.events import agents as ag
from plateau_contracts.events import calls as ca
from plateau_contracts.events.common import StreamedEvent
from plateau_contracts.events.dialer import (
    CallingWindow,
    CampaignCreated,
    DialAttempted,
    DialComplianceChecked,
    DialScheduled,
    PacingMode,
)
from plateau_contracts.events.routing import QueueConfigured
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_contracts.grpc.calls.v1 import call_control_pb2_grpc as pb_grpc
from plateau_dialer.adapters.gateway import Dialled, GrpcCallControl
from plateau_dialer.campaigns import CampaignCommands
from plateau_dialer.dialing import CampaignProgress, DialingLoop
from plateau_dialer.domain.contacts_file import FileHints
from plateau_dialer.domain.pacing_measurements import PacingEstimator
from plateau_runtime.db import create_pool
from plateau_runtime.eventstore import EventStore, NewEvent
from plateau_runtime.grpc_server import GrpcServer, GrpcService, current_tenant
from plateau_runtime.testing import MigratedSchema, make_schema

pytestmark = pytest.mark.integration

TENANT = "mno-cg"
NUMBERS = ["066000001", "066000002", "066000003", "066000004", "066000005"]
START = datetime(2026, 8, 13, 9, 0, tzinfo=UTC)  # a Thursday, 10:00 in Brazzaville


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ScriptedGateway(pb_grpc.CallControlServicer):
    """Answers ``Originate`` like the gateway: a call id per request id, the same one for a
    repeated request id."""

    originated: list[pb.OriginateRequest] = field(default_factory=list)
    calls: dict[str, str] = field(default_factory=dict)  # request id -> call id
    #: What happens at the gateway before its reply reaches the dialer (say, the answer).
    before_reply: Callable[[pb.OriginateRequest, str], Awaitable[None]] | None = None

    async def Originate(
        self, request: pb.OriginateRequest, context: grpc.aio.ServicerContext
    ) -> pb.OriginateResponse:
        assert current_tenant() == TENANT
        if request.request_id not in self.calls:
            self.originated.append(request)
            self.calls[request.request_id] = f"call-{len(self.calls) + 1}"
            if self.before_reply is not None:
                await self.before_reply(request, self.calls[request.request_id])
        return pb.OriginateResponse(call_id=self.calls[request.request_id])

    def dialled_numbers(self) -> list[str]:
        return [r.number for r in self.originated]


@dataclass
class Floor:
    loop: DialingLoop
    commands: CampaignCommands
    dialer: EventStore
    others: EventStore  # the gateway's and the acd's facts
    pool: asyncpg.Pool
    gateway: ScriptedGateway
    clock: Clock

    async def tell(self, *facts: StreamedEvent) -> None:
        """Record facts in their producer's store and hand them to the dialer's consumer."""
        for fact in facts:
            [stored] = await self.others.append(
                fact.stream_id(TENANT), [NewEvent(fact, tenant=TENANT, occurred_at=self.clock.now)]
            )
            async with self.pool.acquire() as conn, conn.transaction():
                await self.loop.apply(conn, stored.envelope)

    async def ledger(self) -> list[DialComplianceChecked]:
        return [
            e
            async for stored in self.dialer.iterate()
            if isinstance(e := parse(stored.envelope), DialComplianceChecked)
        ]

    async def of_type(self, kind: type[StreamedEvent]) -> list[StreamedEvent]:
        return [
            e
            async for stored in self.dialer.iterate()
            if isinstance(e := parse(stored.envelope), kind)
        ]

    def call_of(self, number: str) -> tuple[str, str]:
        """(call id, attempt id) of the last dial of a number."""
        request = next(
            r for r in reversed(self.gateway.originated) if r.number.endswith(number[1:])
        )
        return self.gateway.calls[request.request_id], request.attempt_id


@pytest.fixture
async def floor(
    service_schema: MigratedSchema, service_pool: asyncpg.Pool, admin_dsn: str
) -> AsyncIterator[Floor]:
    others_schema = await make_schema(admin_dsn, prefix="facts")
    others_pool = await create_pool(others_schema.dsn, max_size=2)
    gateway = ScriptedGateway()
    server = GrpcServer(
        "127.0.0.1",
        0,
        [
            GrpcService(
                "plateau.calls.v1.CallControl", pb_grpc.add_CallControlServicer_to_server, gateway
            )
        ],
    )
    await server.start()
    adapter = GrpcCallControl(f"127.0.0.1:{server.port}")
    clock = Clock()
    store = EventStore(service_pool, service_schema.schema)
    loop = DialingLoop(store, service_pool, adapter, clock=clock)
    world = Floor(
        loop,
        CampaignCommands(store, service_pool),
        store,
        EventStore(others_pool, others_schema.schema),
        service_pool,
        gateway,
        clock,
    )
    try:
        yield world
    finally:
        await adapter.close()
        await server.stop(0)
        await others_pool.close()


async def running_campaign(
    floor: Floor,
    pacing: PacingMode = PacingMode.PROGRESSIVE,
    required_skills: tuple[str, ...] = (),
) -> None:
    await floor.commands.create(
        TENANT,
        CampaignCreated(
            campaign_id="renewals",
            name="Renewals",
            queue_id="q-sales",
            required_skills=required_skills,
            pacing=pacing,
            max_abandon_rate=0.03,
            max_attempts=2,
            retry_after_s=3600,
            ring_timeout_s=20,
            calling_window=CallingWindow(
                start=time(8),
                end=time(20),
                days=("mon", "tue", "wed", "thu", "fri"),
                time_zone="Africa/Brazzaville",
            ),
        ),
    )
    data = ("phone\n" + "\n".join(NUMBERS) + "\n").encode()
    await floor.commands.import_file(
        TENANT,
        "renewals",
        filename="c.csv",
        source=io.BytesIO(data),
        hints=FileHints(),
        imported_by="test",
    )
    await floor.commands.command(TENANT, "renewals", lambda c: c.start("test"))
    await floor.tell(
        QueueConfigured(
            queue_id="q-sales",
            name="Sales",
            strategy="longest_idle",
            required_skills=("sales",),
            service_level_threshold_s=20,
            service_level_target=0.8,
            ring_timeout_s=15,
        )
    )


async def agents_available(
    floor: Floor, *agent_ids: str, skill: str = "sales", also: tuple[str, ...] = ()
) -> None:
    for agent_id in agent_ids:
        skills = tuple(ag.Skill(name=name) for name in (skill, *also))
        await floor.tell(
            ag.AgentLoggedIn(agent_id=agent_id, extension="1001", skills=skills),
            ag.AgentBecameAvailable(agent_id=agent_id),
        )


async def test_a_campaigns_own_skills_narrow_its_floor_to_the_agents_who_have_them(
    floor: Floor,
) -> None:
    await running_campaign(floor, required_skills=("lingala",))
    await agents_available(floor, "a-1", "a-2")  # the queue's skill only
    assert await floor.loop.tick() == 0
    await agents_available(floor, "a-3", also=("lingala",))
    await agents_available(floor, "a-4", skill="lingala")  # not the queue's skill
    assert await floor.loop.tick() == 1  # one agent has both


async def test_progressive_dials_one_call_per_free_agent_and_records_every_dial(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    assert await floor.loop.tick() == 0  # nobody on the floor yet: nothing is dialled
    await agents_available(floor, "a-1", "a-2", "a-3")
    await agents_available(floor, "a-9", skill="collections")  # not for this queue
    assert await floor.loop.tick() == 3
    assert await floor.loop.tick() == 0  # three in flight for three free agents
    assert len(floor.gateway.originated) == 3
    assert all(r.requested_by == pb.REQUESTER_DIALER for r in floor.gateway.originated)
    assert {r.request_id for r in floor.gateway.originated} == {
        r.attempt_id for r in floor.gateway.originated
    }
    ledger = await floor.ledger()
    assert [(c.decision, c.attempt_number, c.within_calling_window) for c in ledger] == [
        ("allowed", 1, True)
    ] * 3
    assert all(c.local_time.endswith("+01:00") for c in ledger)
    attempted = await floor.of_type(DialAttempted)
    assert sorted(a.call_id or "" for a in attempted) == ["call-1", "call-2", "call-3"]


async def test_outcomes_plan_retries_at_the_right_times_and_end_contacts(floor: Floor) -> None:
    await running_campaign(floor)
    await agents_available(floor, "a-1", "a-2", "a-3")
    await floor.loop.tick()
    busy_call, busy_attempt = floor.call_of(NUMBERS[0])
    quiet_call, quiet_attempt = floor.call_of(NUMBERS[1])
    live_call, live_attempt = floor.call_of(NUMBERS[2])
    await floor.tell(
        ca.DialCompleted(
            call_id=busy_call,
            outcome=ca.DialOutcome.BUSY,
            campaign_id="renewals",
            attempt_id=busy_attempt,
            sip_code=486,
        ),
        ca.DialCompleted(
            call_id=quiet_call,
            outcome=ca.DialOutcome.NO_ANSWER,
            campaign_id="renewals",
            attempt_id=quiet_attempt,
        ),
        ca.DialCompleted(
            call_id=live_call,
            outcome=ca.DialOutcome.ANSWERED,
            campaign_id="renewals",
            attempt_id=live_attempt,
        ),
        ca.CallConnected(call_id=live_call, agent_id="a-1", extension="1001", queue_id="q-sales"),
    )
    scheduled = [s for s in await floor.of_type(DialScheduled) if isinstance(s, DialScheduled)]
    assert sorted((s.reason, s.attempt_number, s.not_before - START) for s in scheduled) == [
        ("retry_busy", 2, timedelta(minutes=10)),
        ("retry_no_answer", 2, timedelta(hours=1)),
    ]
    plans = {
        r["number"]: (r["attempts"], r["done"])
        for r in await floor.pool.fetch("select number, attempts, done from dial_plans")
    }
    assert plans["+242066000003"] == (1, "completed")
    # Two dials ended: two more contacts are dialled; the busy one is not due yet.
    assert await floor.loop.tick() == 2
    assert floor.gateway.dialled_numbers().count("+242066000001") == 1
    floor.clock.now = START + timedelta(minutes=11)
    # a-2 and a-3's calls are still in flight: the busy retry waits for a free agent.
    await agents_available(floor, "a-4")
    assert await floor.loop.tick() == 1
    assert floor.gateway.dialled_numbers().count("+242066000001") == 2
    # The second busy is the last attempt (max 2): the contact is done.
    busy_call, busy_attempt = floor.call_of(NUMBERS[0])
    await floor.tell(
        ca.DialCompleted(
            call_id=busy_call,
            outcome=ca.DialOutcome.BUSY,
            campaign_id="renewals",
            attempt_id=busy_attempt,
        )
    )
    done = await floor.pool.fetchval("select done from dial_plans where number = '+242066000001'")
    assert done == "max_attempts_reached"


async def test_nothing_is_dialled_outside_the_window_or_for_a_paused_campaign(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    await agents_available(floor, "a-1", "a-2")
    floor.clock.now = datetime(2026, 8, 13, 19, 30, tzinfo=UTC)  # 20:30 local: closed
    assert await floor.loop.tick() == 0
    floor.clock.now = START
    await floor.commands.command(TENANT, "renewals", lambda c: c.pause("test", None))
    assert await floor.loop.tick() == 0
    assert floor.gateway.originated == []
    await floor.commands.command(TENANT, "renewals", lambda c: c.resume("test"))
    assert await floor.loop.tick() == 2


async def test_a_do_not_call_number_added_after_the_import_is_refused_and_recorded(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    await floor.pool.execute(
        "insert into do_not_call (tenant, number, source) values ($1, '+242066000001', 'opt-out')",
        TENANT,
    )
    await agents_available(floor, "a-1")
    assert await floor.loop.tick() == 0  # the first due contact was refused, not dialled
    refused = [c for c in await floor.ledger() if c.decision == "refused"]
    assert [(c.number, c.refusal, c.on_do_not_call) for c in refused] == [
        ("+242066000001", "do_not_call", True)
    ]
    assert await floor.loop.tick() == 1
    assert floor.gateway.dialled_numbers() == ["+242066000002"]


async def test_a_crash_between_recording_a_dial_and_sending_it_neither_repeats_nor_forgets(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    await agents_available(floor, "a-1", "a-2")

    class Unreachable:
        async def originate(self, tenant: str, **_: object):  # type: ignore[no-untyped-def]
            from plateau_dialer.adapters.gateway import Dialled

            return Dialled(unreached=True, detail="UNAVAILABLE")

    down = DialingLoop(floor.dialer, floor.pool, Unreachable(), clock=floor.clock)
    assert await down.tick() == 2  # recorded as in flight, but never reached the gateway
    assert floor.gateway.originated == []
    # A new dialer process: it sends the recorded dials again (same request ids) and
    # dials no new contact for agents those dials already hold.
    restarted = floor.loop
    assert await restarted.tick() == 0
    assert len(floor.gateway.originated) == 2
    assert await restarted.resend_unsent() == 0  # all sent now
    ledger = await floor.ledger()
    assert len(ledger) == 2
    assert {r.attempt_id for r in floor.gateway.originated} == {c.attempt_id for c in ledger}


class _Killed(Exception):
    """Stands for the dialer process dying (kill -9) at that point."""


async def test_a_crash_after_the_gateway_dialled_but_before_it_was_recorded_dials_once(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    await agents_available(floor, "a-1", "a-2")
    real = floor.loop._gateway  # the same socket, cut after the answer

    class DiesAfterSending:
        async def originate(self, tenant: str, **request: Any) -> Dialled:
            await real.originate(tenant, **request)
            raise _Killed

    dying = DialingLoop(floor.dialer, floor.pool, DiesAfterSending(), clock=floor.clock)
    with pytest.raises(_Killed):
        await dying.tick()
    assert len(floor.gateway.originated) == 1  # the carrier is being called
    in_flight = await floor.pool.fetch("select attempt_id, sent from dial_attempts")
    # Both dials were recorded in flight before either was sent; neither is confirmed.
    assert [r["sent"] for r in in_flight] == [False, False]

    # The restarted dialer sends both again with their ids: the gateway answers the first
    # with the call it already placed and dials only the second; no contact gets a new
    # attempt while one is in flight.
    assert await floor.loop.tick() == 0
    assert len(floor.gateway.originated) == 2
    assert {r.request_id for r in floor.gateway.originated} == {r["attempt_id"] for r in in_flight}
    attempted = [a for a in await floor.of_type(DialAttempted) if isinstance(a, DialAttempted)]
    assert sorted((a.attempt_number, a.call_id) for a in attempted) == [
        (1, "call-1"),
        (1, "call-2"),
    ]
    assert await floor.loop.tick() == 0  # two agents, two dials in flight
    assert len(await floor.ledger()) == 2


async def test_the_pacing_measurements_survive_a_restart(floor: Floor) -> None:
    await running_campaign(floor, PacingMode.PREDICTIVE)
    await agents_available(floor, "a-1", "a-2", "a-3")
    assert await floor.loop.measurements(TENANT, "renewals") == PacingEstimator.cold()
    placed = await floor.loop.tick()
    assert placed >= 3
    busy_call, busy_attempt = floor.call_of(NUMBERS[0])
    live_call, _ = floor.call_of(NUMBERS[1])
    floor.clock.now = START + timedelta(seconds=12)
    completed = ca.DialCompleted(
        call_id=busy_call,
        outcome=ca.DialOutcome.BUSY,
        campaign_id="renewals",
        attempt_id=busy_attempt,
        sip_code=486,
    )
    await floor.tell(
        completed,
        ca.CallConnected(call_id=live_call, agent_id="a-1", extension="1001", queue_id="q-sales"),
    )
    before = await floor.loop.measurements(TENANT, "renewals")
    assert before.observations == placed + 3  # the dials, the busy, the live answer (x2)
    today = before.ledger.day(START.date())
    assert (today.dials, today.live_answers, today.abandons) == (placed, 1, 0)
    assert before.other_seconds.weight == PacingEstimator.cold().other_seconds.weight + 1

    # A new dialer process over the same database: it paces from what the first learned.
    restarted = DialingLoop(floor.dialer, floor.pool, floor.loop._gateway, clock=floor.clock)
    assert await restarted.measurements(TENANT, "renewals") == before
    # A fact delivered again (the broker is at-least-once) is not learned twice.
    await floor.tell(completed)
    assert await restarted.measurements(TENANT, "renewals") == before


async def test_an_answer_connected_before_originates_reply_is_recorded_ends_its_dial(
    floor: Floor,
) -> None:
    async def answered_at_once(request: pb.OriginateRequest, call_id: str) -> None:
        # The customer answers and the acd connects an agent before the dialer has
        # recorded the gateway's reply (which names the call).
        await floor.tell(
            ca.DialCompleted(
                call_id=call_id,
                outcome=ca.DialOutcome.ANSWERED,
                campaign_id="renewals",
                attempt_id=request.attempt_id,
            ),
            ca.CallConnected(call_id=call_id, agent_id="a-1", extension="1001", queue_id="q-sales"),
        )

    await running_campaign(floor)
    await agents_available(floor, "a-1")
    floor.gateway.before_reply = answered_at_once
    assert await floor.loop.tick() == 1
    [(result, done)] = await floor.pool.fetch(
        "select a.result, p.done from dial_attempts a join dial_plans p using (contact_id)"
    )
    assert (result, done) == ("connected", "completed")


async def test_the_campaigns_progress_counts_remaining_contacts_level_and_abandons(
    floor: Floor,
) -> None:
    await running_campaign(floor)
    cold = await floor.loop.progress(TENANT, await _settings(floor))
    assert cold == CampaignProgress(len(NUMBERS), 0.0, 0.0, 0.0)

    await agents_available(floor, "a-1", "a-2")
    assert await floor.loop.tick() == 2
    abandoned_call, abandoned_attempt = floor.call_of(NUMBERS[0])
    connected_call, _ = floor.call_of(NUMBERS[1])
    floor.clock.now = START + timedelta(seconds=10)
    await floor.tell(
        ca.ComplianceAbandoned(
            call_id=abandoned_call,
            campaign_id="renewals",
            attempt_id=abandoned_attempt,
            waited_ms=2000,
            message_played=False,
        ),
        ca.CallConnected(
            call_id=connected_call, agent_id="a-1", extension="1001", queue_id="q-sales"
        ),
    )
    progress = await floor.loop.progress(TENANT, await _settings(floor))
    # The connected contact is done; the abandoned one will be called again (2 attempts).
    assert progress.contacts_remaining == len(NUMBERS) - 1
    assert progress.dial_level == 1.0  # progressive: two dials for two free agents
    # One abandon over two live answers, today and over the rolling 30 days.
    assert (progress.abandon_rate_today, progress.abandon_rate_30d) == (0.5, 0.5)

    # Tomorrow the day's rate starts again; the 30-day rate remembers.
    floor.clock.now = START + timedelta(days=1)
    later = await floor.loop.progress(TENANT, await _settings(floor))
    assert (later.abandon_rate_today, later.abandon_rate_30d) == (0.0, 0.5)


async def _settings(floor: Floor) -> CampaignCreated:
    campaign = await floor.commands.campaign(TENANT, "renewals")
    assert campaign.created is not None
    return campaign.created
