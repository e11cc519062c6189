"""The B2BUA's call aggregate: every path of DESIGN §4, illegal transitions, and replay."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_contracts.events.calls import (
    AgentLegFailure,
    AgentNoAnswer,
    AgentRejected,
    AgentRinging,
    CallConnected,
    CallEnded,
    CallHeld,
    CallOffered,
    CallOriginated,
    CallRejected,
    CallTransferred,
    ComplianceAbandoned,
    DialCompleted,
    DialOutcome,
    DialRefusalReason,
    DialRefused,
    DialRequester,
    EndCause,
    EndedBy,
    RejectReason,
    TransferTarget,
)
from plateau_sip_gateway.domain.call import (
    AbandonForCompliance,
    BridgeAgent,
    CallDomainError,
    CallState,
    Command,
    Event,
    ExpireAgentRing,
    FailAgentLeg,
    HangUp,
    HangUpByAgent,
    HangUpByCaller,
    HangupReason,
    Hold,
    IllegalCallTransitionError,
    OfferCall,
    Originate,
    Phase,
    RecordDialRefusal,
    RecordRejection,
    ReportAgentUnavailable,
    ResolveDial,
    Resume,
    RingAgent,
    StaleAgentLegError,
    TearDown,
    Transfer,
    agent_leg_failure,
    close_for_restart,
    decide,
    evolve,
    fold,
)

pytestmark = pytest.mark.unit

OFFER = OfferCall(
    call_id="c-1",
    trunk="mno",
    ani="+242066123456",
    dnis="+242053000100",
    sip_call_id="carrier-1@10.0.0.1",
)
ORIGINATE = Originate(
    call_id="c-2",
    campaign_id="cmp-1",
    contact_id="ct-1",
    attempt_id="att-1",
    number="+242066123456",
    list_version=3,
    trunk="mno",
    requested_by=DialRequester.DIALER,
    sip_call_id="out-1@gw",
)


def ring(agent: str = "a-1001", leg: str = "leg-1") -> RingAgent:
    return RingAgent(
        agent_id=agent,
        extension=agent.removeprefix("a-"),
        contact=f"sip:{agent}@192.0.2.10:5062",
        sip_call_id=leg,
        queue_id="q-sales",
    )


class Call:
    """Drives one call through commands, keeping every event it recorded."""

    def __init__(self) -> None:
        self.state = CallState()
        self.events: list[Event] = []

    def __call__(self, *commands: Command) -> list[Event]:
        produced: list[Event] = []
        for command in commands:
            new = decide(self.state, command)
            for event in new:
                self.state = evolve(self.state, event)
            produced += new
        self.events += produced
        return produced


def kinds(events: list[Event]) -> list[str]:
    return [event.event_type for event in events]


def only_end(events: list[Event]) -> CallEnded:
    (ended,) = [event for event in events if isinstance(event, CallEnded)]
    return ended


# -- inbound ------------------------------------------------------------------------------


def test_inbound_happy_path_with_hold_and_transfer_to_a_queue() -> None:
    call = Call()
    call(OFFER)
    assert call.state.phase is Phase.WAITING
    call(ring())
    assert call.state.phase is Phase.AGENT_RINGING
    call(BridgeAgent("leg-1"), Hold("softphone"), Resume("api"))
    assert call.state.phase is Phase.CONNECTED
    call(Transfer(TransferTarget(kind="queue", queue_id="q-billing"), "softphone"))
    assert call.state.phase is Phase.WAITING
    assert call.state.agent is None
    call(ring("a-1002", "leg-2"), BridgeAgent("leg-2", media="anchored"), HangUpByCaller())

    assert kinds(call.events) == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.held",
        "call.resumed",
        "call.transferred",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    offered, ringing, connected, held, _, transferred, *_ = call.events
    assert isinstance(offered, CallOffered) and offered.sip_call_id == "carrier-1@10.0.0.1"
    assert isinstance(ringing, AgentRinging) and ringing.sip_call_id == "leg-1"
    assert isinstance(connected, CallConnected) and connected.queue_id == "q-sales"
    assert isinstance(held, CallHeld) and (held.agent_id, held.via) == ("a-1001", "softphone")
    assert isinstance(transferred, CallTransferred) and transferred.agent_id == "a-1001"
    ended = only_end(call.events)
    # An answered caller's BYE: no response code ends it.
    assert (ended.cause, ended.ended_by, ended.sip_code, ended.agent_id) == (
        EndCause.CALLER_HANGUP,
        EndedBy.CALLER,
        None,
        "a-1002",
    )
    assert all(event.call_id == "c-1" for event in call.events)
    assert fold(call.events) == call.state
    assert call.state.agent_attempts == 2 and call.state.transfers == 1
    assert call.state.carrier_sip_call_id == "carrier-1@10.0.0.1"


def test_caller_abandons_while_queued() -> None:
    call = Call()
    call(OFFER)
    ended = only_end(call(HangUpByCaller()))
    assert (ended.cause, ended.ended_by, ended.sip_code, ended.agent_id) == (
        EndCause.CALLER_HANGUP,
        EndedBy.CALLER,
        487,
        None,
    )


def test_caller_cancels_while_the_agent_rings() -> None:
    call = Call()
    call(OFFER, ring())
    ended = only_end(call(HangUpByCaller()))
    assert (ended.sip_code, ended.agent_id) == (487, None)
    assert call.state.phase is Phase.ENDED
    # The agent's 200 OK that crossed the CANCEL cannot connect anything any more.
    with pytest.raises(IllegalCallTransitionError, match="is ended"):
        call(BridgeAgent("leg-1"))


def test_agent_no_answer_returns_the_call_to_waiting() -> None:
    call = Call()
    call(OFFER, ring())
    (no_answer,) = call(ExpireAgentRing("leg-1", rang_ms=15_000))
    assert isinstance(no_answer, AgentNoAnswer)
    assert (no_answer.agent_id, no_answer.extension, no_answer.rang_ms) == ("a-1001", "1001", 15000)
    assert (call.state.phase, call.state.agent) == (Phase.WAITING, None)
    call(ring("a-1002", "leg-2"), BridgeAgent("leg-2"))
    assert call.state.connected_agent == "a-1002"
    assert fold(call.events) == call.state


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (486, AgentLegFailure.BUSY),
        (600, AgentLegFailure.BUSY),
        (603, AgentLegFailure.DECLINED),
        (480, AgentLegFailure.UNREACHABLE),
        (408, AgentLegFailure.UNREACHABLE),
        (None, AgentLegFailure.UNREACHABLE),
        (404, AgentLegFailure.NOT_REGISTERED),
        (488, AgentLegFailure.OTHER),
    ],
)
def test_agent_rejects(code: int | None, reason: AgentLegFailure) -> None:
    assert agent_leg_failure(code) is reason
    call = Call()
    call(OFFER, ring())
    (rejected,) = call(FailAgentLeg("leg-1", sip_code=code))
    assert isinstance(rejected, AgentRejected)
    assert (rejected.reason, rejected.sip_code, rejected.agent_id) == (reason, code, "a-1001")
    assert (call.state.phase, call.state.last_agent_sip_code) == (Phase.WAITING, code)


def test_an_unregistered_agent_is_reported_without_ringing() -> None:
    call = Call()
    call(OFFER)
    (rejected,) = call(ReportAgentUnavailable("a-1001", "1001"))
    assert isinstance(rejected, AgentRejected)
    assert rejected.reason is AgentLegFailure.NOT_REGISTERED
    assert call.state.phase is Phase.WAITING
    assert fold(call.events) == call.state


def test_answers_from_a_stale_agent_leg_are_refused() -> None:
    call = Call()
    call(OFFER, ring(leg="leg-1"), ExpireAgentRing("leg-1", 15_000), ring("a-1002", "leg-2"))
    for stale in (BridgeAgent("leg-1"), FailAgentLeg("leg-1", 486), ExpireAgentRing("leg-1", 1)):
        with pytest.raises(StaleAgentLegError, match="ACK and BYE"):
            call(stale)
    assert call.state.agent is not None and call.state.agent.agent_id == "a-1002"


def test_agent_hangs_up() -> None:
    call = Call()
    call(OFFER, ring(), BridgeAgent("leg-1"), Hold("api"))
    ended = only_end(call(HangUpByAgent()))
    assert (ended.cause, ended.ended_by, ended.agent_id) == (
        EndCause.AGENT_HANGUP,
        EndedBy.AGENT,
        "a-1001",
    )


@pytest.mark.parametrize(
    ("reason", "cause", "code"),
    [
        (HangupReason.NORMAL, EndCause.API_HANGUP, 480),
        (HangupReason.NO_AGENT, EndCause.NO_AGENT, 480),
        (HangupReason.QUEUE_CLOSED, EndCause.NO_AGENT, 480),
        (HangupReason.UNKNOWN_DESTINATION, EndCause.NO_AGENT, 404),
    ],
)
def test_api_hangup_of_a_waiting_inbound_call(
    reason: HangupReason, cause: EndCause, code: int
) -> None:
    call = Call()
    call(OFFER)
    ended = only_end(call(HangUp(reason)))
    assert (ended.cause, ended.ended_by, ended.sip_code) == (cause, EndedBy.API, code)


def test_api_hangup_of_a_connected_call_is_a_bye() -> None:
    call = Call()
    call(OFFER, ring(), BridgeAgent("leg-1"))
    ended = only_end(call(HangUp(HangupReason.NO_AGENT)))
    assert (ended.cause, ended.sip_code, ended.agent_id) == (EndCause.API_HANGUP, None, "a-1001")


def test_blind_transfer_to_a_number_ends_the_call() -> None:
    call = Call()
    call(OFFER, ring(), BridgeAgent("leg-1"))
    target = TransferTarget(kind="number", number="+242066000001")
    transferred, ended = call(Transfer(target, "softphone"))
    assert isinstance(transferred, CallTransferred) and transferred.target == target
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.ended_by, ended.agent_id) == (
        EndCause.TRANSFERRED_AWAY,
        EndedBy.AGENT,
        None,
    )
    assert fold(call.events) == call.state


def test_transfer_to_an_agent_leaves_the_call_waiting_for_that_agent() -> None:
    call = Call()
    call(OFFER)
    # The acd may move a queued call by API; a softphone cannot, having no call.
    with pytest.raises(IllegalCallTransitionError, match="no agent is connected"):
        call(Transfer(TransferTarget(kind="agent", agent_id="a-7"), "softphone"))
    (transferred,) = call(Transfer(TransferTarget(kind="agent", agent_id="a-7"), "api"))
    assert isinstance(transferred, CallTransferred) and transferred.agent_id is None
    call(ring("a-7", "leg-7"), BridgeAgent("leg-7"))
    assert call.state.connected_agent == "a-7"


def test_media_timeout_and_failures_are_ended_by_the_gateway() -> None:
    call = Call()
    call(OFFER, ring(), BridgeAgent("leg-1"))
    ended = only_end(call(TearDown(EndCause.MEDIA_TIMEOUT)))
    assert (ended.cause, ended.ended_by, ended.agent_id) == (
        EndCause.MEDIA_TIMEOUT,
        EndedBy.GATEWAY,
        "a-1001",
    )


def test_rejected_inbound_call_is_one_event_and_never_open() -> None:
    rejected = CallRejected(
        call_id="c-9", reason=RejectReason.OVER_CAPACITY, sip_code=503, source="10.0.0.1:5060"
    )
    call = Call()
    call(RecordRejection(rejected))
    assert call.events == [rejected]
    assert (call.state.phase, call.state.final_sip_code, call.state.is_open) == (
        Phase.REJECTED,
        503,
        False,
    )
    assert close_for_restart(call.state) == []
    with pytest.raises(IllegalCallTransitionError):
        call(HangUpByCaller())


# -- outbound -----------------------------------------------------------------------------


def test_outbound_live_answer_connected_to_an_agent() -> None:
    call = Call()
    (originated,) = call(ORIGINATE)
    assert isinstance(originated, CallOriginated) and originated.list_version == 3
    assert call.state.phase is Phase.DIALLING
    (completed,) = call(ResolveDial(DialOutcome.ANSWERED, ring_ms=6_000))
    assert isinstance(completed, DialCompleted)
    assert (completed.campaign_id, completed.attempt_id) == ("cmp-1", "att-1")
    assert call.state.phase is Phase.WAITING
    call(ring(), BridgeAgent("leg-1"), HangUpByCaller())
    ended = only_end(call.events)
    assert (ended.cause, ended.sip_code) == (EndCause.CALLER_HANGUP, None)
    assert fold(call.events) == call.state


SOFTPHONE_DIAL = replace(
    ORIGINATE,
    requested_by=DialRequester.AGENT_SOFTPHONE,
    agent_id="a-1001",
    agent_extension="1001",
    agent_leg_sip_call_id="softphone-1@agent",
)


def test_a_softphone_dial_is_connected_to_its_agent_as_the_customer_answers() -> None:
    call = Call()
    (originated,) = call(SOFTPHONE_DIAL)
    assert isinstance(originated, CallOriginated)
    assert originated.agent_leg_sip_call_id == "softphone-1@agent"
    assert call.state.agent is not None and call.state.connected_agent is None
    completed, connected = call(ResolveDial(DialOutcome.ANSWERED, ring_ms=4_000))
    assert isinstance(completed, DialCompleted) and isinstance(connected, CallConnected)
    assert (connected.agent_id, connected.extension) == ("a-1001", "1001")
    assert call.state.phase is Phase.CONNECTED and call.state.connected_agent == "a-1001"
    (ended,) = call(HangUpByAgent())
    assert isinstance(ended, CallEnded) and ended.agent_id == "a-1001"
    assert fold(call.events) == call.state


def test_an_agent_giving_up_on_its_own_dial_ends_it() -> None:
    call = Call()
    call(SOFTPHONE_DIAL)
    (ended,) = call(HangUpByAgent())
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.ended_by) == (EndCause.AGENT_HANGUP, EndedBy.AGENT)
    # Nobody else may hang up "for the agent" while a dial without one rings.
    other = Call()
    other(ORIGINATE)
    with pytest.raises(IllegalCallTransitionError, match="dialling"):
        other(HangUpByAgent())


def test_a_softphone_dial_the_customer_refuses_ends_without_connecting() -> None:
    call = Call()
    call(SOFTPHONE_DIAL)
    completed, ended = call(ResolveDial(DialOutcome.BUSY, sip_code=486))
    assert isinstance(completed, DialCompleted) and completed.outcome is DialOutcome.BUSY
    assert isinstance(ended, CallEnded) and ended.agent_id is None
    assert not call.state.ever_connected


@pytest.mark.parametrize(
    ("outcome", "code", "cause", "by"),
    [
        (DialOutcome.BUSY, 486, EndCause.BUSY, EndedBy.CALLER),
        (DialOutcome.NO_ANSWER, None, EndCause.NO_ANSWER, EndedBy.GATEWAY),
        (DialOutcome.NO_ANSWER, 480, EndCause.NO_ANSWER, EndedBy.CALLER),
        (DialOutcome.FAILED, 503, EndCause.FAILED, EndedBy.CALLER),
        (DialOutcome.FAILED, None, EndCause.FAILED, EndedBy.GATEWAY),
        (DialOutcome.MACHINE, None, EndCause.MACHINE, EndedBy.GATEWAY),
    ],
)
def test_outbound_dial_outcomes_that_end_the_call(
    outcome: DialOutcome, code: int | None, cause: EndCause, by: EndedBy
) -> None:
    call = Call()
    call(ORIGINATE)
    completed, ended = call(ResolveDial(outcome, sip_code=code, ring_ms=25_000))
    assert isinstance(completed, DialCompleted)
    assert (completed.outcome, completed.sip_code) == (outcome, code)
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.ended_by, ended.sip_code) == (cause, by, code)
    assert call.state.phase is Phase.ENDED
    assert fold(call.events) == call.state


@pytest.mark.parametrize("agent_ringing", [False, True])
def test_compliance_abandon_of_a_live_answer(agent_ringing: bool) -> None:
    call = Call()
    call(ORIGINATE, ResolveDial(DialOutcome.ANSWERED))
    if agent_ringing:
        call(ring())
    abandoned, ended = call(AbandonForCompliance(waited_ms=2_000, message_played=True))
    assert isinstance(abandoned, ComplianceAbandoned)
    assert (abandoned.campaign_id, abandoned.waited_ms, abandoned.message_played) == (
        "cmp-1",
        2000,
        True,
    )
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.ended_by) == (EndCause.COMPLIANCE_ABANDON, EndedBy.GATEWAY)
    assert fold(call.events) == call.state


def test_no_compliance_abandon_once_connected_or_for_inbound() -> None:
    call = Call()
    call(ORIGINATE, ResolveDial(DialOutcome.ANSWERED), ring(), BridgeAgent("leg-1"))
    call(Transfer(TransferTarget(kind="queue", queue_id="q"), "api"))
    with pytest.raises(IllegalCallTransitionError, match="never connected"):
        call(AbandonForCompliance(waited_ms=2_000))
    inbound = Call()
    inbound(OFFER)
    with pytest.raises(IllegalCallTransitionError, match="outbound"):
        inbound(AbandonForCompliance(waited_ms=2_000))


def test_an_answered_dial_carries_no_failure_code_and_resolves_once() -> None:
    call = Call()
    call(ORIGINATE)
    with pytest.raises(CallDomainError, match="no failure code"):
        call(ResolveDial(DialOutcome.ANSWERED, sip_code=486))
    call(ResolveDial(DialOutcome.ANSWERED))
    with pytest.raises(IllegalCallTransitionError, match="is waiting"):
        call(ResolveDial(DialOutcome.BUSY, 486))


def test_dial_refusal_is_one_event_and_never_open() -> None:
    refused = DialRefused(
        call_id="c-5",
        number="+242069999999",
        requested_by=DialRequester.DIALER,
        requester="dialer",
        reason=DialRefusalReason.NOT_IN_CONTACT_LIST,
        campaign_id="cmp-1",
    )
    call = Call()
    call(RecordDialRefusal(refused))
    assert (call.state.phase, call.state.is_open) == (Phase.REFUSED, False)
    assert close_for_restart(call.state) == []
    assert fold(call.events) == call.state


# -- restart ------------------------------------------------------------------------------


OPEN_CALLS: dict[str, tuple[Command, ...]] = {
    "waiting": (OFFER,),
    "agent_ringing": (OFFER, ring()),
    "connected": (OFFER, ring(), BridgeAgent("leg-1")),
    "held": (OFFER, ring(), BridgeAgent("leg-1"), Hold("softphone")),
    "dialling": (ORIGINATE,),
    "answered": (ORIGINATE, ResolveDial(DialOutcome.ANSWERED)),
}


@pytest.mark.parametrize("name", sorted(OPEN_CALLS))
def test_gateway_restart_closes_every_open_call(name: str) -> None:
    call = Call()
    call(*OPEN_CALLS[name])
    rebuilt = fold(call.events)
    assert rebuilt == call.state and rebuilt.is_open
    (ended,) = close_for_restart(rebuilt)
    assert isinstance(ended, CallEnded)
    assert (ended.cause, ended.ended_by) == (EndCause.GATEWAY_RESTART, EndedBy.GATEWAY)
    expected_agent = "a-1001" if name in ("connected", "held") else None
    assert ended.agent_id == expected_agent
    closed = evolve(rebuilt, ended)
    assert closed.phase is Phase.ENDED
    assert close_for_restart(closed) == []


# -- illegal transitions ------------------------------------------------------------------


ILLEGAL: list[tuple[tuple[Command, ...], Command, str]] = [
    ((), HangUpByCaller(), "a new call is new"),
    ((), ring(), "a new call is new"),
    ((OFFER,), OFFER, "call c-1 is waiting"),
    ((OFFER,), BridgeAgent("leg-1"), "it must be agent_ringing"),
    ((OFFER,), Hold("api"), "it must be connected"),
    ((OFFER,), HangUpByAgent(), "call c-1 is waiting"),
    ((OFFER, ring()), ring("a-2", "leg-2"), "it must be waiting"),
    ((OFFER, ring()), Transfer(TransferTarget(kind="queue", queue_id="q"), "api"), "ringing"),
    ((OFFER, ring(), BridgeAgent("leg-1")), Resume("api"), "it must be held"),
    ((OFFER, ring(), BridgeAgent("leg-1"), Hold("api")), Hold("api"), "it must be connected"),
    ((OFFER,), ResolveDial(DialOutcome.BUSY), "it must be dialling"),
    ((ORIGINATE,), HangUpByCaller(), "call c-2 is dialling"),
    ((ORIGINATE,), ring(), "call c-2 is dialling"),
    ((OFFER, HangUpByCaller()), HangUp(), "call c-1 is ended"),
    ((OFFER, HangUpByCaller()), TearDown(EndCause.FAILED), "call c-1 is ended"),
]


@pytest.mark.parametrize(("setup", "command", "message"), ILLEGAL)
def test_illegal_transitions_say_which_phase_the_call_is_in(
    setup: tuple[Command, ...], command: Command, message: str
) -> None:
    call = Call()
    call(*setup)
    before = call.state
    with pytest.raises(IllegalCallTransitionError, match=message):
        call(command)
    assert call.state == before


def test_a_corrupt_stream_is_refused_on_replay() -> None:
    call = Call()
    call(OFFER, ring())
    wrong_agent = CallConnected(call_id="c-1", agent_id="a-9", extension="9")
    with pytest.raises(IllegalCallTransitionError, match="a-1001 is ringing, not a-9"):
        fold([*call.events, wrong_agent])
    other_call = CallConnected(call_id="c-8", agent_id="a-1001", extension="1001")
    with pytest.raises(CallDomainError, match="applied to call c-1"):
        fold([*call.events, other_call])
    ended = close_for_restart(call.state)
    with pytest.raises(IllegalCallTransitionError):
        fold([*call.events, *ended, *ended])


# -- any sequence of commands -------------------------------------------------------------

_LEGS = ("leg-1", "leg-2")
_commands: st.SearchStrategy[Command] = st.one_of(
    st.just(OFFER),
    st.just(ORIGINATE),
    st.builds(ring, st.sampled_from(["a-1", "a-2"]), st.sampled_from(_LEGS)),
    st.builds(ReportAgentUnavailable, st.just("a-3"), st.just("3")),
    st.builds(BridgeAgent, st.sampled_from(_LEGS)),
    st.builds(ExpireAgentRing, st.sampled_from(_LEGS), st.integers(0, 60_000)),
    st.builds(FailAgentLeg, st.sampled_from(_LEGS), st.sampled_from([None, 404, 480, 486, 603])),
    st.builds(Hold, st.sampled_from(["softphone", "api"])),
    st.builds(Resume, st.sampled_from(["softphone", "api"])),
    st.builds(
        Transfer,
        st.sampled_from(
            [
                TransferTarget(kind="queue", queue_id="q"),
                TransferTarget(kind="agent", agent_id="a-2"),
                TransferTarget(kind="number", number="+242066000001"),
            ]
        ),
        st.sampled_from(["softphone", "api"]),
    ),
    st.just(HangUpByCaller()),
    st.just(HangUpByAgent()),
    st.builds(HangUp, st.sampled_from(list(HangupReason))),
    st.just(TearDown(EndCause.MEDIA_TIMEOUT)),
    st.builds(
        ResolveDial,
        st.sampled_from(list(DialOutcome)),
        st.sampled_from([None, 486]),
    ),
    st.builds(AbandonForCompliance, st.integers(0, 5_000)),
)


_ENDINGS: st.SearchStrategy[Command] = st.sampled_from(
    [HangUpByCaller(), HangUpByAgent(), HangUp(), TearDown(EndCause.FAILED)]
)


def _plausible(state: CallState) -> st.SearchStrategy[Command]:
    """Commands that suit the call's phase, so that long paths get explored too."""
    leg = state.agent.sip_call_id if state.agent else "leg-1"
    fresh = f"leg-{state.agent_attempts + 1}"
    by_phase: dict[Phase, list[st.SearchStrategy[Command]]] = {
        Phase.NEW: [st.just(OFFER), st.just(ORIGINATE)],
        Phase.WAITING: [
            st.builds(ring, st.sampled_from(["a-1", "a-2"]), st.just(fresh)),
            st.builds(AbandonForCompliance, st.integers(0, 5_000)),
        ],
        Phase.AGENT_RINGING: [
            st.builds(BridgeAgent, st.just(leg)),
            st.builds(ExpireAgentRing, st.just(leg), st.integers(0, 60_000)),
            st.builds(FailAgentLeg, st.just(leg), st.sampled_from([None, 486, 603])),
        ],
        Phase.CONNECTED: [
            st.builds(Hold, st.sampled_from(["softphone", "api"])),
            st.builds(
                Transfer, st.just(TransferTarget(kind="queue", queue_id="q")), st.just("api")
            ),
        ],
        Phase.HELD: [st.builds(Resume, st.sampled_from(["softphone", "api"]))],
        Phase.DIALLING: [
            st.just(ResolveDial(DialOutcome.ANSWERED)),
            st.builds(ResolveDial, st.sampled_from(list(DialOutcome)), st.just(None)),
        ],
    }
    return st.one_of(*by_phase.get(state.phase, [_commands]), _ENDINGS)


@settings(max_examples=400)
@given(st.data())
def test_any_command_sequence_keeps_the_call_consistent(data: st.DataObject) -> None:
    call = Call()
    for _ in range(data.draw(st.integers(0, 30), label="steps")):
        anything = data.draw(st.integers(0, 3), label="wild") == 0
        command = data.draw(_commands if anything else _plausible(call.state))
        before = call.state
        try:
            call(command)
        except CallDomainError:
            assert call.state == before  # a refused command records nothing
        assert fold(call.events) == call.state
    events = call.events
    assert sum(isinstance(event, CallEnded) for event in events) <= 1
    if any(isinstance(event, CallEnded) for event in events):
        assert isinstance(events[-1], CallEnded)  # nothing after the end
    ringing: str | None = None
    for event in events:
        if isinstance(event, AgentRinging):
            ringing = event.agent_id
        elif isinstance(event, AgentNoAnswer | AgentRejected | CallTransferred | CallEnded):
            ringing = None
        elif isinstance(event, CallConnected):
            assert ringing == event.agent_id  # never connected without that agent ringing
            ringing = None
    restart = close_for_restart(call.state)
    assert len(restart) == (1 if call.state.is_open else 0)
    assert not fold(restart, call.state).is_open
