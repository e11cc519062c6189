"""The distributor: ordering, RONA, abandons, logout, wrap-up timer, overflow, replays."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from plateau_acd.domain.agent import (
    AgentStatus,
    CompleteWrapUp,
    Login,
    Logout,
    Pause,
    Recorded,
    SetAvailable,
)
from plateau_acd.domain.queue import QueueConfig, SkillRequirement, Strategy
from plateau_acd.domain.routing import (
    AcdState,
    AgentCommand,
    AgentLegFailed,
    CallAnswered,
    CallArrived,
    CallHungUp,
    Decision,
    Distributor,
    Fact,
    RingNoAnswer,
    Tick,
    Trigger,
    apply,
    fold,
)
from plateau_contracts.events.agents import (
    AgentBecameAvailable,
    AgentBecameBusy,
    AgentLoggedOut,
    AgentNotResponding,
    AgentReserved,
    Skill,
    WrapUpCompleted,
    WrapUpStarted,
)
from plateau_contracts.events.calls import AgentLegFailure, AgentRinging
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallOverflowed,
    CallQueued,
    CallRequeued,
    EntryPointMapped,
    OverflowReason,
    RequeueReason,
    RoutingFailed,
    RoutingFailure,
)
from plateau_contracts.events.routing import (
    CallAnswered as AnsweredFromQueue,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CODES = frozenset({"break"})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Ledger:
    """The acd's event store in miniature: versions per stream, and the state they fold to."""

    def __init__(self, state: AcdState) -> None:
        self.initial = state
        self.state = state
        self.records: list[Recorded[Fact]] = []
        self.versions: dict[str, int] = defaultdict(int)
        self.distributor = Distributor()

    def run(self, trigger: Trigger) -> list[Decision]:
        events = self.distributor.decide(self.state, trigger)
        for event in events:
            stream = event.stream_id("t")
            self.versions[stream] += 1
            self.record(Recorded(event, trigger.at, self.versions[stream]))
        return events

    def record(self, recorded: Recorded[Fact]) -> None:
        self.records.append(recorded)
        self.state = apply(self.state, recorded)

    def ring(self, call_id: str, agent_id: str, seconds: float) -> None:
        fact = AgentRinging(
            call_id=call_id, agent_id=agent_id, extension="1", contact="sip:1@h", sip_call_id="s"
        )
        self.record(Recorded(fact, at(seconds)))

    def login(self, seconds: float, *agent_ids: str, skills: Iterable[Skill] = ()) -> None:
        for agent_id in agent_ids:
            self.run(AgentCommand(agent_id, Login(agent_id[2:], tuple(skills)), at(seconds)))

    def arrive(
        self, seconds: float, *call_ids: str, dnis: str = "+242053000100", priority: int = 0
    ) -> None:
        for call_id in call_ids:
            self.run(
                CallArrived(call_id, at(seconds), dnis=dnis, ani="+242066000001", priority=priority)
            )

    def holder(self, call_id: str) -> str | None:
        queue = self.state.queue_of(call_id)
        call = queue.find(call_id) if queue else None
        return call.reserved_for if call else None


def support(**overrides: object) -> AcdState:
    config = QueueConfig(queue_id="q-support", name="Support", wrap_up_s=30, ring_timeout_s=15)
    config = QueueConfig(**{**config.__dict__, **overrides})
    return AcdState.configured([config], {"+242053000100": "q-support"})


def kinds(events: Iterable[object]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_calls_wait_while_agents_are_busy_and_are_served_in_order() -> None:
    ledger = Ledger(support())
    ledger.arrive(0, "c-1", "c-2", "c-3")
    assert [c.call_id for c in ledger.state.queues["q-support"].waiting()] == ["c-1", "c-2", "c-3"]
    ledger.login(5, "a-1")
    assert ledger.holder("c-1") == "a-1"
    ledger.login(6, "a-2")
    assert ledger.holder("c-2") == "a-2"
    assert ledger.holder("c-3") is None


def test_a_reservation_says_who_was_considered_and_why() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.login(30, "a-2")
    ledger.arrive(100, "c-1")
    events = [r.data for r in ledger.records[-2:]]
    assert kinds(events) == ["CallAgentReserved", "AgentReserved"]
    decision = events[0]
    assert isinstance(decision, CallAgentReserved)
    assert decision.agent_id == "a-1"
    assert decision.extension == "1"
    assert decision.strategy == "longest_idle"
    assert [(c.agent_id, c.idle_ms) for c in decision.candidates] == [
        ("a-1", 100_000),
        ("a-2", 70_000),
    ]
    assert decision.decision == "longest idle: a-1 idle 100 s, next a-2 idle 70 s"
    assert events[1] == AgentReserved(agent_id="a-1", call_id="c-1", queue_id="q-support")


def test_priority_then_arrival() -> None:
    ledger = Ledger(support())
    ledger.arrive(0, "c-low-1")
    ledger.arrive(1, "c-high", priority=100)
    ledger.arrive(2, "c-low-2")
    ledger.arrive(3, "c-mid", priority=5)
    order = [c.call_id for c in ledger.state.queues["q-support"].calls]
    assert order == ["c-high", "c-mid", "c-low-1", "c-low-2"]
    ledger.login(4, "a-1")
    assert ledger.holder("c-high") == "a-1"


def test_ring_no_answer_requeues_at_the_head_and_pauses_the_agent() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    ledger.arrive(2, "c-2")
    ledger.ring("c-1", "a-1", 2)
    assert ledger.state.agents["a-1"].status is AgentStatus.RINGING
    events = ledger.run(RingNoAnswer("c-1", "a-1", at(17)))
    assert events == [
        CallRequeued(
            queue_id="q-support", call_id="c-1", agent_id="a-1", reason=RequeueReason.RING_NO_ANSWER
        ),
        AgentNotResponding(
            agent_id="a-1",
            call_id="c-1",
            queue_id="q-support",
            ring_timeout_s=15,
            reason="ring_no_answer",
        ),
    ]
    assert [c.call_id for c in ledger.state.queues["q-support"].calls] == ["c-1", "c-2"]
    assert ledger.state.agents["a-1"].status is AgentStatus.NOT_RESPONDING
    # A duplicate of the gateway's fact decides nothing.
    assert ledger.run(RingNoAnswer("c-1", "a-1", at(17))) == []
    # Another agent takes the requeued call first.
    ledger.login(20, "a-2")
    assert ledger.holder("c-1") == "a-2"


def test_requeued_call_goes_ahead_of_older_calls() -> None:
    ledger = Ledger(support())
    ledger.arrive(0, "c-1", "c-2")
    ledger.login(1, "a-1")
    ledger.run(RingNoAnswer("c-1", "a-1", at(16)))
    ledger.arrive(17, "c-3")
    ledger.login(18, "a-2")
    assert ledger.holder("c-1") == "a-2"
    assert [c.call_id for c in ledger.state.queues["q-support"].calls] == ["c-1", "c-2", "c-3"]


def test_caller_abandons_while_waiting_with_wait_time() -> None:
    ledger = Ledger(support())
    ledger.arrive(0, "c-1")
    assert ledger.run(CallHungUp("c-1", at(42.5))) == [
        CallAbandoned(queue_id="q-support", call_id="c-1", waited_ms=42_500)
    ]
    assert ledger.state.queues["q-support"].calls == ()
    assert ledger.run(CallHungUp("c-1", at(43))) == []


def test_caller_abandons_while_the_agent_rings() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(10, "c-1", "c-2")
    ledger.ring("c-1", "a-1", 11)
    events = ledger.run(CallHungUp("c-1", at(14)))
    assert kinds(events) == [
        "CallAbandoned",
        "AgentBecameAvailable",
        "CallAgentReserved",
        "AgentReserved",
    ]
    assert events[0] == CallAbandoned(
        queue_id="q-support", call_id="c-1", waited_ms=4000, agent_id="a-1"
    )
    assert ledger.holder("c-2") == "a-1"


def test_answer_then_hang_up_then_wrap_up_timer() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1", "c-2")
    assert ledger.run(CallAnswered("c-1", "a-1", at(5))) == [
        AnsweredFromQueue(
            queue_id="q-support",
            call_id="c-1",
            agent_id="a-1",
            waited_ms=4000,
            within_service_level=True,
        ),
        AgentBecameBusy(agent_id="a-1", call_id="c-1", queue_id="q-support", direction="inbound"),
    ]
    assert ledger.state.queue_of("c-1") is None
    assert ledger.run(CallHungUp("c-1", at(65))) == [
        WrapUpStarted(agent_id="a-1", call_id="c-1", queue_id="q-support", timeout_s=30)
    ]
    assert ledger.run(Tick(at(94.9))) == []
    events = ledger.run(Tick(at(95)))
    assert events[:2] == [
        WrapUpCompleted(agent_id="a-1", call_id="c-1", completed_by="timer"),
        AgentBecameAvailable(agent_id="a-1"),
    ]
    assert ledger.holder("c-2") == "a-1"
    assert ledger.state.agents["a-1"].calls_today == 1


def test_agent_completes_wrap_up_before_the_timer() -> None:
    ledger = Ledger(support(wrap_up_s=None))
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    ledger.run(CallAnswered("c-1", "a-1", at(5)))
    ledger.run(CallHungUp("c-1", at(50)))
    assert ledger.run(Tick(at(5000))) == []
    events = ledger.run(AgentCommand("a-1", CompleteWrapUp("resolved"), at(5001)))
    assert kinds(events) == ["WrapUpCompleted", "AgentBecameAvailable"]


def test_a_late_answer_after_requeue_is_ignored() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    ledger.run(RingNoAnswer("c-1", "a-1", at(16)))
    assert ledger.run(CallAnswered("c-1", "a-1", at(16.1))) == []


def test_logout_while_reserved_releases_the_call_first() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.login(1, "a-2")
    ledger.run(AgentCommand("a-2", Pause("break", CODES), at(1)))
    ledger.arrive(2, "c-1")
    events = ledger.run(AgentCommand("a-1", Logout(), at(3)))
    assert events == [
        CallRequeued(
            queue_id="q-support",
            call_id="c-1",
            agent_id="a-1",
            reason=RequeueReason.AGENT_LOGGED_OUT,
        ),
        AgentLoggedOut(agent_id="a-1", reason="requested"),
    ]
    ledger.run(AgentCommand("a-2", SetAvailable(), at(4)))
    assert ledger.holder("c-1") == "a-2"


def test_unregistered_extension_logs_the_agent_out() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    events = ledger.run(AgentLegFailed("c-1", "a-1", AgentLegFailure.NOT_REGISTERED, at(1.2)))
    assert kinds(events) == ["CallRequeued", "AgentLoggedOut"]
    assert events[1] == AgentLoggedOut(agent_id="a-1", reason="extension_unregistered")


def test_busy_agent_is_set_not_responding() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    events = ledger.run(AgentLegFailed("c-1", "a-1", AgentLegFailure.BUSY, at(1.2)))
    assert isinstance(events[0], CallRequeued)
    assert events[0].reason is RequeueReason.AGENT_REJECTED
    assert ledger.state.agents["a-1"].status is AgentStatus.NOT_RESPONDING


def two_queues(**support_overrides: object) -> AcdState:
    base = support(**support_overrides)
    sales = QueueConfig(queue_id="q-sales", name="Sales", priority=0)
    return AcdState.configured(
        [*(q.config for q in base.queues.values()), sales],
        {"+242053000100": "q-support", "+242053000200": "q-sales"},
    )


def test_overflow_after_max_wait_to_the_target_queue() -> None:
    ledger = Ledger(two_queues(max_wait_s=60, overflow_queue_id="q-sales"))
    ledger.arrive(0, "c-1")
    ledger.arrive(10, "c-2")
    assert ledger.run(Tick(at(59.999))) == []
    events = ledger.run(Tick(at(60)))
    assert events == [
        CallOverflowed(
            queue_id="q-support",
            call_id="c-1",
            to_queue_id="q-sales",
            reason=OverflowReason.MAX_WAIT_EXCEEDED,
            waited_ms=60_000,
        ),
        CallQueued(
            queue_id="q-sales",
            call_id="c-1",
            direction="inbound",
            priority=0,
            ani="+242066000001",
            dnis="+242053000100",
            overflowed_from="q-support",
        ),
    ]
    assert ledger.state.queue_of("c-1") is ledger.state.queues["q-sales"]
    assert kinds(ledger.run(Tick(at(70)))) == ["CallOverflowed", "CallQueued"]


def test_max_wait_without_overflow_fails_routing() -> None:
    ledger = Ledger(support(max_wait_s=30))
    ledger.arrive(0, "c-1")
    events = ledger.run(Tick(at(31)))
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, RoutingFailed)
    assert failed.reason is RoutingFailure.MAX_WAIT_EXCEEDED
    assert failed.queue_id == "q-support"
    assert ledger.state.queue_of("c-1") is None


def test_a_ringing_call_does_not_overflow() -> None:
    ledger = Ledger(two_queues(max_wait_s=60, overflow_queue_id="q-sales"))
    ledger.login(0, "a-1")
    ledger.arrive(0, "c-1")
    assert ledger.run(Tick(at(61))) == []


def test_queue_priority_wins_for_shared_agents() -> None:
    state = two_queues()
    vip = QueueConfig(queue_id="q-vip", priority=10)
    state = AcdState.configured(
        [*(q.config for q in state.queues.values()), vip],
        {**state.entry_points, "+242053000900": "q-vip"},
    )
    ledger = Ledger(state)
    ledger.arrive(0, "c-std")
    ledger.arrive(50, "c-vip", dnis="+242053000900")
    ledger.arrive(60, "c-sales", dnis="+242053000200")
    ledger.login(100, "a-1")
    assert ledger.holder("c-vip") == "a-1"
    ledger.login(101, "a-2")
    assert ledger.holder("c-std") == "a-2"  # same queue priority: the longer wait


def test_skills_route_to_the_right_agent_and_the_head_blocks_its_queue() -> None:
    state = AcdState.configured(
        [
            QueueConfig(
                queue_id="q-fr",
                strategy=Strategy.SKILLS_BASED,
                required_skills=(SkillRequirement("french", 3),),
            )
        ],
        {"+242053000300": "q-fr"},
    )
    ledger = Ledger(state)
    ledger.login(0, "a-en", skills=[Skill(name="english", level=9)])
    ledger.login(0, "a-fr-low", skills=[Skill(name="french", level=2)])
    ledger.arrive(1, "c-1", dnis="+242053000300")
    assert ledger.holder("c-1") is None
    ledger.login(2, "a-fr", skills=[Skill(name="french", level=5)])
    assert ledger.holder("c-1") == "a-fr"


def test_unknown_dnis_fails_routing() -> None:
    ledger = Ledger(support())
    events = ledger.run(CallArrived("c-1", at(0), dnis="+242000000000"))
    assert len(events) == 1
    assert isinstance(events[0], RoutingFailed)
    assert events[0].reason is RoutingFailure.UNKNOWN_DNIS
    assert events[0].stream_id("t") == "entrypoint-t:+242000000000"


def test_a_duplicate_offer_is_not_queued_twice() -> None:
    ledger = Ledger(support())
    ledger.arrive(0, "c-1")
    assert ledger.run(CallArrived("c-1", at(1), dnis="+242053000100")) == []
    ledger.login(2, "a-1")
    assert ledger.run(CallArrived("c-1", at(3), dnis="+242053000100")) == []


def test_round_robin_cursor_survives_a_replay() -> None:
    ledger = Ledger(support(strategy=Strategy.ROUND_ROBIN, wrap_up_s=0))
    ledger.login(0, "a-1", "a-2", "a-3")
    for n in range(4):
        ledger.arrive(10 + n, f"c-{n}")
        ledger.run(CallAnswered(f"c-{n}", ledger.holder(f"c-{n}") or "", at(10.5 + n)))
        ledger.run(CallHungUp(f"c-{n}", at(10.7 + n)))
    chosen = [r.data.agent_id for r in ledger.records if isinstance(r.data, CallAgentReserved)]
    assert chosen == ["a-1", "a-2", "a-3", "a-1"]
    rebuilt = fold(ledger.initial, ledger.records)
    assert rebuilt.queues["q-support"].round_robin_cursor == "a-1"
    assert rebuilt == ledger.state


def test_replaying_the_log_gives_the_same_state_and_duplicates_change_nothing() -> None:
    ledger = Ledger(two_queues(max_wait_s=60, overflow_queue_id="q-sales"))
    ledger.login(0, "a-1", "a-2")
    ledger.arrive(1, "c-1", "c-2", "c-3")
    ledger.ring("c-1", "a-1", 2)
    ledger.run(RingNoAnswer("c-1", "a-1", at(17)))
    ledger.run(CallAnswered("c-2", "a-2", at(18)))
    ledger.run(Tick(at(200)))
    ledger.run(CallHungUp("c-2", at(240)))
    ledger.run(AgentCommand("a-1", SetAvailable(), at(250)))
    assert fold(ledger.initial, ledger.records) == ledger.state
    assert fold(ledger.state, ledger.records) == ledger.state
    doubled = [r for r in ledger.records for _ in (0, 1)]
    assert fold(ledger.initial, doubled) == ledger.state


def test_a_stale_ring_no_answer_of_an_earlier_reservation_is_ignored() -> None:
    ledger = Ledger(support())
    ledger.login(0, "a-1")
    ledger.arrive(1, "c-1")
    first = RingNoAnswer("c-1", "a-1", at(16))
    ledger.run(first)
    ledger.run(AgentCommand("a-1", SetAvailable(), at(20)))
    assert ledger.holder("c-1") == "a-1"  # the same call, the same agent, a new reservation
    assert ledger.run(first) == []
    assert ledger.run(CallAnswered("c-1", "a-1", at(19))) == []
    assert ledger.holder("c-1") == "a-1"


def test_a_call_for_an_unconfigured_queue_fails_without_inventing_the_queue() -> None:
    ledger = Ledger(support())
    events = ledger.run(CallArrived("c-1", at(0), queue_id="q-campaign", direction="outbound"))
    assert len(events) == 1
    assert isinstance(events[0], RoutingFailed)
    assert events[0].reason is RoutingFailure.OTHER
    assert "q-campaign" not in ledger.state.queues


def test_configuration_facts_build_queues_and_entry_points() -> None:
    ledger = Ledger(AcdState())
    config = QueueConfig(queue_id="q-new", name="New", wrap_up_s=10, max_wait_s=30)
    ledger.record(Recorded(config.to_event(), at(0), 1))
    ledger.record(Recorded(EntryPointMapped(dnis="+242053000999", queue_id="q-new"), at(0), 1))
    assert ledger.state.queues["q-new"].config == config
    ledger.versions["queue-t:q-new"] = 1
    ledger.arrive(1, "c-1", dnis="+242053000999")
    assert ledger.state.queue_of("c-1") is ledger.state.queues["q-new"]
