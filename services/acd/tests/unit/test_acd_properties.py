"""Property tests: under random sequences, one call one agent, nothing lost or duplicated.

A ``RuleBasedStateMachine`` drives the distributor with random arrivals, logins, pauses,
ready, reservations rung, ring-no-answer, agent-leg failures, answers, hang-ups (abandons
and ends), logouts, wrap-up completions, timer ticks and re-delivered gateway facts, and
after every step checks the invariants of ``plateau_acd.domain.routing``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from plateau_acd.domain.agent import (
    HOLDING_A_CALL,
    AgentDomainError,
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
    Distributor,
    Fact,
    RingNoAnswer,
    Tick,
    Trigger,
    apply,
    fold,
)
from plateau_contracts.events.agents import Skill, WrapUpStarted
from plateau_contracts.events.calls import AgentLegFailure, AgentRinging
from plateau_contracts.events.routing import CallAbandoned, CallAgentReserved, RoutingFailed

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
AGENTS = {
    "a-1": (Skill(name="french", level=5),),
    "a-2": (Skill(name="french", level=2), Skill(name="sales", level=4)),
    "a-3": (Skill(name="sales", level=7),),
    "a-4": (),
}
DNIS = {"support": "+242053000100", "sales": "+242053000200", "french": "+242053000300"}
CODES = frozenset({"break", "lunch"})


def initial_state() -> AcdState:
    return AcdState.configured(
        [
            QueueConfig(
                queue_id="q-support",
                wrap_up_s=20,
                max_wait_s=90,
                overflow_queue_id="q-sales",
            ),
            QueueConfig(
                queue_id="q-sales",
                strategy=Strategy.ROUND_ROBIN,
                priority=5,
                wrap_up_s=None,
                max_wait_s=120,
            ),
            QueueConfig(
                queue_id="q-french",
                strategy=Strategy.SKILLS_BASED,
                required_skills=(SkillRequirement("french", 2),),
                wrap_up_s=0,
                max_wait_s=60,
                overflow_queue_id="q-support",
            ),
        ],
        {
            DNIS["support"]: "q-support",
            DNIS["sales"]: "q-sales",
            DNIS["french"]: "q-french",
        },
    )


class RoutingMachine(RuleBasedStateMachine):
    """The acd under random traffic; its log must always fold to its state."""

    @initialize()
    def start(self) -> None:
        self.initial = initial_state()
        self.state = self.initial
        self.records: list[Recorded[Fact]] = []
        self.versions: dict[str, int] = defaultdict(int)
        self.now = T0
        self.arrived: list[str] = []
        self.delivered: list[Trigger] = []  # gateway facts, for re-delivery
        self.last_fact: Trigger | None = None
        self.distributor = Distributor()

    # -- plumbing -----------------------------------------------------------------------

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def run(self, trigger: Trigger) -> None:
        gateway_fact = isinstance(
            trigger, CallArrived | CallAnswered | RingNoAnswer | AgentLegFailed | CallHungUp
        )
        self.last_fact = trigger if gateway_fact else None
        try:
            events = self.distributor.decide(self.state, trigger)
        except AgentDomainError:
            return  # an illegal desk command: refused, nothing recorded
        for event in events:
            if isinstance(event, CallAgentReserved):
                # Ordering per queue: only the first unreserved call is ever reserved.
                head = self.state.queues[event.queue_id].next_call()
                assert head is not None
                assert head.call_id == event.call_id
                assert self.state.agents[event.agent_id].status is AgentStatus.AVAILABLE
            stream = event.stream_id("t")
            self.versions[stream] += 1
            hypothesis_event(type(event).__name__)
            self.record(Recorded(event, trigger.at, self.versions[stream]))

    def record(self, recorded: Recorded[Fact]) -> None:
        self.records.append(recorded)
        self.state = apply(self.state, recorded)

    def reservations(self) -> list[tuple[str, str]]:
        return sorted(
            (call.call_id, call.reserved_for)
            for queue in self.state.queues.values()
            for call in queue.calls
            if call.reserved_for is not None
        )

    # -- rules --------------------------------------------------------------------------

    @rule(
        line=st.sampled_from(sorted(DNIS)),
        priority=st.sampled_from([0, 0, 0, 5, 100]),
        wait=st.floats(0, 20),
    )
    def call_arrives(self, line: str, priority: int, wait: float) -> None:
        call_id = f"c-{len(self.arrived) + 1}"
        self.arrived.append(call_id)
        trigger = CallArrived(call_id, self.advance(wait), dnis=DNIS[line], priority=priority)
        self.delivered.append(trigger)
        self.run(trigger)

    @rule(agent_id=st.sampled_from(sorted(AGENTS)), paused=st.booleans())
    def login(self, agent_id: str, paused: bool) -> None:
        code = "break" if paused else None
        command = Login(agent_id[2:], AGENTS[agent_id], code, CODES)
        self.run(AgentCommand(agent_id, command, self.advance(1)))

    @rule(
        agent_id=st.sampled_from(sorted(AGENTS)),
        command=st.sampled_from(
            [
                SetAvailable(),
                Pause("lunch", CODES),
                Logout(),
                Logout("supervisor"),
                CompleteWrapUp("resolved"),
            ]
        ),
    )
    def desk(self, agent_id: str, command: SetAvailable | Pause | Logout | CompleteWrapUp) -> None:
        self.run(AgentCommand(agent_id, command, self.advance(1)))

    @precondition(lambda self: bool(self.reservations()))
    @rule(data=st.data())
    def agent_rings(self, data: st.DataObject) -> None:
        call_id, agent_id = data.draw(st.sampled_from(self.reservations()))
        fact = AgentRinging(
            call_id=call_id, agent_id=agent_id, extension="x", contact="sip:x@h", sip_call_id="s"
        )
        self.record(Recorded(fact, self.advance(0.2)))
        self.last_fact = None

    @precondition(lambda self: bool(self.reservations()))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["answer", "answer", "rona", "busy", "declined", "unregistered"]),
    )
    def agent_leg_outcome(self, data: st.DataObject, outcome: str) -> None:
        call_id, agent_id = data.draw(st.sampled_from(self.reservations()))
        at = self.advance(data.draw(st.floats(0.1, 15)))
        trigger: Trigger
        if outcome == "answer":
            trigger = CallAnswered(call_id, agent_id, at)
        elif outcome == "rona":
            trigger = RingNoAnswer(call_id, agent_id, at)
        else:
            reason = AgentLegFailure.BUSY if outcome == "busy" else AgentLegFailure.NOT_REGISTERED
            trigger = AgentLegFailed(call_id, agent_id, reason, at)
        self.delivered.append(trigger)
        self.run(trigger)

    @precondition(lambda self: bool(self.arrived))
    @rule(data=st.data())
    def hang_up(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.arrived))
        trigger = CallHungUp(call_id, self.advance(data.draw(st.floats(0, 30))))
        self.delivered.append(trigger)
        self.run(trigger)

    def talking(self) -> list[str]:
        return sorted(
            a.call_id
            for a in self.state.agents.values()
            if a.status is AgentStatus.ON_CALL and a.call_id is not None
        )

    @precondition(lambda self: bool(self.talking()))
    @rule(data=st.data())
    def conversation_ends(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.talking()))
        trigger = CallHungUp(call_id, self.advance(data.draw(st.floats(1, 300))))
        self.delivered.append(trigger)
        self.run(trigger)

    @rule(seconds=st.floats(0, 100))
    def tick(self, seconds: float) -> None:
        self.run(Tick(self.advance(seconds)))

    @precondition(lambda self: self.last_fact is not None)
    @rule()
    def duplicate_of_the_last_fact(self) -> None:
        assert self.last_fact is not None
        assert self.distributor.decide(self.state, self.last_fact) == []

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def earlier_fact_redelivered(self, data: st.DataObject) -> None:
        trigger = data.draw(st.sampled_from(self.delivered))
        if isinstance(trigger, CallArrived) and trigger.call_id in self.ended():
            return  # a re-offer after the end is the consumer's to drop (by event id)
        self.run(trigger)

    # -- invariants ---------------------------------------------------------------------

    def ended(self) -> set[str]:
        done: set[str] = set()
        for recorded in self.records:
            fact = recorded.data
            if isinstance(fact, CallAbandoned | RoutingFailed | WrapUpStarted):
                done.add(fact.call_id)
        return done

    @invariant()
    def one_call_one_agent(self) -> None:
        if not hasattr(self, "state"):
            return
        placed: dict[str, str] = {}
        for queue in self.state.queues.values():
            for call in queue.calls:
                assert call.call_id not in placed, f"{call.call_id} in two queues"
                placed[call.call_id] = queue.queue_id
        holders: dict[str, str] = {}
        for agent in self.state.agents.values():
            if agent.call_id is None:
                continue
            assert agent.call_id not in holders, f"{agent.call_id} held by two agents"
            holders[agent.call_id] = agent.agent_id
            if agent.status in (AgentStatus.RESERVED, AgentStatus.RINGING):
                holding = self.state.queue_of(agent.call_id)
                assert holding is not None
                waiting = holding.find(agent.call_id)
                assert waiting is not None
                assert waiting.reserved_for == agent.agent_id
        for queue in self.state.queues.values():
            for call in queue.calls:
                if call.reserved_for is not None:
                    agent = self.state.agents[call.reserved_for]
                    assert agent.call_id == call.call_id
                    assert agent.status in HOLDING_A_CALL - {AgentStatus.ON_CALL}

    @invariant()
    def no_call_lost_or_duplicated(self) -> None:
        if not hasattr(self, "state"):
            return
        ended = self.ended()
        for call_id in self.arrived:
            in_queue = self.state.queue_of(call_id) is not None
            talking = any(
                a.call_id == call_id and a.status is AgentStatus.ON_CALL
                for a in self.state.agents.values()
            )
            if call_id in ended:
                assert not in_queue and not talking, f"{call_id} ended but still placed"
            else:
                assert in_queue != talking, f"{call_id} lost or in two places"

    @invariant()
    def log_folds_to_the_state(self) -> None:
        if not hasattr(self, "state"):
            return
        assert fold(self.initial, self.records) == self.state
        assert fold(self.state, self.records) == self.state


RoutingMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRouting = RoutingMachine.TestCase
