"""Live outbound answers: ahead of inbound calls, preview agents, the gateway's 2-s abandon,
unknown campaigns, and how the gateway's and the dialer's facts become triggers."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from plateau_acd.domain.agent import AgentStatus, Login, Recorded
from plateau_acd.domain.queue import QueueConfig
from plateau_acd.domain.routing import (
    OUTBOUND_PRIORITY,
    AcdState,
    AgentCommand,
    CallAnswered,
    CallArrived,
    CallHungUp,
    Decision,
    Distributor,
    Fact,
    Trigger,
    apply,
    fold,
)
from plateau_acd.outbound import Campaign, Origination, Outbound
from plateau_contracts.events.agents import AgentBecameBusy
from plateau_contracts.events.calls import (
    AgentRinging,
    ComplianceAbandoned,
    DialCompleted,
    DialOutcome,
    DialRequester,
)
from plateau_contracts.events.routing import (
    CallAbandoned,
    CallAgentReserved,
    CallDequeued,
    CallQueued,
    RoutingFailed,
    RoutingFailure,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
INBOUND = "+242053000100"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Ledger:
    """The acd's store in miniature: versions per stream and the state they fold to."""

    def __init__(self, state: AcdState) -> None:
        self.state = state
        self.initial = state
        self.records: list[Recorded[Fact]] = []
        self.versions: dict[str, int] = defaultdict(int)

    def run(self, trigger: Trigger) -> list[Decision]:
        events = Distributor().decide(self.state, trigger)
        for event in events:
            stream = event.stream_id("t")
            self.versions[stream] += 1
            recorded: Recorded[Fact] = Recorded(event, trigger.at, self.versions[stream])
            self.records.append(recorded)
            self.state = apply(self.state, recorded)
        return events

    def login(self, seconds: float, *agent_ids: str) -> None:
        for agent_id in agent_ids:
            self.run(AgentCommand(agent_id, Login(agent_id[2:]), at(seconds)))

    def inbound(self, seconds: float, call_id: str) -> None:
        self.run(CallArrived(call_id, at(seconds), dnis=INBOUND, ani="+242066000001"))

    def answer(self, seconds: float, call_id: str, agent_id: str | None = None) -> list[Decision]:
        return self.run(
            CallArrived(
                call_id,
                at(seconds),
                ani="+242066000009",
                queue_id="q-sales",
                direction="outbound",
                priority=OUTBOUND_PRIORITY,
                campaign_id="camp-1",
                agent_id=agent_id,
            )
        )

    def holder(self, call_id: str) -> str | None:
        queue = self.state.queue_of(call_id)
        call = queue.find(call_id) if queue else None
        return call.reserved_for if call else None


def floor() -> AcdState:
    """An inbound queue of higher priority than the campaign's queue; agents shared."""
    return AcdState.configured(
        [
            QueueConfig(queue_id="q-support", priority=10, wrap_up_s=0),
            QueueConfig(queue_id="q-sales", wrap_up_s=0),
        ],
        {INBOUND: "q-support"},
    )


def kinds(events: list[Decision]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_live_answer_goes_ahead_of_inbound_calls_of_a_higher_priority_queue() -> None:
    ledger = Ledger(floor())
    ledger.inbound(0, "in-1")
    ledger.inbound(1, "in-2")
    queued = ledger.answer(30, "out-1")
    assert queued == [
        CallQueued(
            queue_id="q-sales",
            call_id="out-1",
            direction="outbound",
            priority=OUTBOUND_PRIORITY,
            ani="+242066000009",
            campaign_id="camp-1",
        )
    ]
    ledger.login(31, "a-1")
    assert ledger.holder("out-1") == "a-1"
    assert ledger.holder("in-1") is None
    ledger.login(32, "a-2")
    assert ledger.holder("in-1") == "a-2"


def test_the_reservation_of_a_live_answer_is_explained_like_an_inbound_one() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.login(20, "a-2")
    events = ledger.answer(60, "out-1")
    assert kinds(events) == ["CallQueued", "CallAgentReserved", "AgentReserved"]
    reserved = events[1]
    assert isinstance(reserved, CallAgentReserved)
    assert (reserved.queue_id, reserved.agent_id, reserved.strategy) == (
        "q-sales",
        "a-1",
        "longest_idle",
    )
    assert [c.agent_id for c in reserved.candidates] == ["a-1", "a-2"]
    assert reserved.decision.startswith("longest idle: a-1")


def test_preview_reserves_the_agent_the_originate_named() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.login(20, "a-2")
    events = ledger.answer(60, "out-1", agent_id="a-2")
    reserved = events[1]
    assert isinstance(reserved, CallAgentReserved)
    assert (reserved.agent_id, reserved.strategy) == ("a-2", "preview")
    assert reserved.decision == "preview: the originate named a-2, who is available"


def test_preview_falls_back_to_the_queue_when_the_named_agent_is_not_free() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.inbound(1, "in-1")  # a-1 takes it
    ledger.login(2, "a-2")
    events = ledger.answer(60, "out-1", agent_id="a-1")
    reserved = events[1]
    assert isinstance(reserved, CallAgentReserved)
    assert (reserved.agent_id, reserved.strategy) == ("a-2", "longest_idle")


def test_the_gateways_compliance_abandon_takes_the_call_out_without_a_queue_abandon() -> None:
    ledger = Ledger(floor())
    ledger.answer(0, "out-1")
    events = ledger.run(CallHungUp("out-1", at(2), cause="compliance_abandon"))
    assert events == [
        CallDequeued(
            queue_id="q-sales",
            call_id="out-1",
            waited_ms=2000,
            campaign_id="camp-1",
            cause="compliance_abandon",
        )
    ]
    assert not any(isinstance(e, CallAbandoned) for e in events)
    assert ledger.state.queues["q-sales"].calls == ()
    # Then the call's end changes nothing.
    assert ledger.run(CallHungUp("out-1", at(2.1), cause="compliance_abandon")) == []


def test_an_abandon_while_the_agent_rings_frees_the_agent_for_the_next_call() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.answer(10, "out-1")
    ringing = AgentRinging(
        call_id="out-1", agent_id="a-1", extension="1", contact="sip:1@h", sip_call_id="s"
    )
    ledger.state = apply(ledger.state, Recorded(ringing, at(10.5)))
    ledger.inbound(11, "in-1")
    events = ledger.run(CallHungUp("out-1", at(12), cause="compliance_abandon"))
    assert kinds(events) == [
        "CallDequeued",
        "AgentBecameAvailable",
        "CallAgentReserved",
        "AgentReserved",
    ]
    assert isinstance(events[0], CallDequeued) and events[0].agent_id == "a-1"
    assert ledger.holder("in-1") == "a-1"


def test_the_agent_who_answers_is_on_an_outbound_call() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.answer(10, "out-1")
    events = ledger.run(CallAnswered("out-1", "a-1", at(10.4)))
    busy = [e for e in events if isinstance(e, AgentBecameBusy)]
    assert len(busy) == 1 and busy[0].direction == "outbound"
    assert ledger.state.agent("a-1").status is AgentStatus.ON_CALL
    assert ledger.state.queues["q-sales"].calls == ()


def test_an_answer_for_an_unknown_campaign_is_refused_and_left_to_the_gateway() -> None:
    ledger = Ledger(floor())
    events = ledger.run(
        CallArrived("out-1", at(0), direction="outbound", campaign_id="camp-x", queue_id=None)
    )
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, RoutingFailed)
    assert (failed.queue_id, failed.campaign_id, failed.reason) == (
        None,
        "camp-x",
        RoutingFailure.OTHER,
    )
    assert failed.detail is not None and "camp-x" in failed.detail


def test_replaying_outbound_decisions_gives_the_same_state() -> None:
    ledger = Ledger(floor())
    ledger.login(0, "a-1")
    ledger.answer(1, "out-1")
    ledger.answer(2, "out-2")
    ledger.run(CallHungUp("out-2", at(4), cause="compliance_abandon"))
    replayed = fold(ledger.initial, ledger.records)
    assert replayed == ledger.state
    assert fold(replayed, ledger.records) == replayed


# -- the gateway's facts as triggers ------------------------------------------------------


def outbound_book(requested_by: DialRequester = DialRequester.DIALER) -> Outbound:
    book = Outbound()
    book.know_campaign(Campaign("t", "camp-1", "May renewals", "q-sales", "running"))
    book.know_call(
        Origination(
            "t", "out-1", "camp-1", "ct-1", "att-1", "+242066000009", None, requested_by.value
        )
    )
    return book


def answered(call_id: str = "out-1", campaign_id: str = "camp-1") -> DialCompleted:
    return DialCompleted(
        call_id=call_id,
        outcome=DialOutcome.ANSWERED,
        campaign_id=campaign_id,
        attempt_id="att-1",
    )


def test_an_answer_becomes_an_outbound_arrival_in_the_campaigns_queue() -> None:
    trigger = outbound_book().trigger_of("t", answered(), at(0))
    assert trigger == CallArrived(
        "out-1",
        at(0),
        ani="+242066000009",
        queue_id="q-sales",
        direction="outbound",
        priority=OUTBOUND_PRIORITY,
        campaign_id="camp-1",
    )


def test_an_answer_carries_the_campaigns_own_skills() -> None:
    book = outbound_book()
    book.know_campaign(
        Campaign("t", "camp-1", "May renewals", "q-sales", "running", ("french", "lingala"))
    )
    trigger = book.trigger_of("t", answered(), at(0))
    assert isinstance(trigger, CallArrived)
    assert trigger.required_skills == ("french", "lingala")


def test_an_answer_of_an_unknown_campaign_arrives_without_a_queue() -> None:
    trigger = outbound_book().trigger_of("t", answered(campaign_id="camp-x"), at(0))
    assert isinstance(trigger, CallArrived)
    assert (trigger.queue_id, trigger.campaign_id, trigger.direction) == (
        None,
        "camp-x",
        "outbound",
    )


def test_other_outcomes_and_softphone_dials_are_not_routed() -> None:
    busy = DialCompleted(
        call_id="out-1", outcome=DialOutcome.BUSY, campaign_id="camp-1", attempt_id="att-1"
    )
    assert outbound_book().trigger_of("t", busy, at(0)) is None
    softphone = outbound_book(DialRequester.AGENT_SOFTPHONE)
    assert softphone.trigger_of("t", answered(), at(0)) is None


def test_a_compliance_abandon_is_the_calls_hang_up() -> None:
    fact = ComplianceAbandoned(
        call_id="out-1",
        campaign_id="camp-1",
        attempt_id="att-1",
        waited_ms=2000,
        message_played=False,
    )
    assert outbound_book().trigger_of("t", fact, at(2)) == CallHungUp(
        "out-1", at(2), cause="compliance_abandon"
    )
