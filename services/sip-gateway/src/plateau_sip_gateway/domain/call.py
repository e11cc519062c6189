"""One call as the B2BUA sees it: a pure state machine, rebuilt from its ``call-*`` stream.

``decide(state, command)`` checks a command against the call's phase and returns the
events that record it (payloads of ``plateau_contracts.events.calls``, all for the same
``call_id``); ``evolve(state, event)`` applies one event; ``fold(events)`` rebuilds a
call from its stream. A command the phase does not allow raises
``IllegalCallTransitionError`` naming the phase (the gRPC layer answers
FAILED_PRECONDITION with that message). Time is not read here: durations the contract
records (ring time, wait before a compliance abandon) come in the commands, measured by
the timers that fire them.

Phases::

    inbound   new -> waiting (offered; ringback while the acd queues it)
                     waiting -> agent_ringing -> connected <-> held
                     agent_ringing -> waiting (no answer, rejected: the agent leg is gone)
                     waiting | connected | held -> waiting (transfer to an agent or queue)
    outbound  new -> dialling -> waiting (live answer) -> agent_ringing -> connected ...
                     dialling -> ended (no_answer, busy, failed, machine)
                     waiting | agent_ringing -> ended (compliance abandon)
    new -> rejected (inbound refused) | refused (dial refused): one-event streams
    any open phase -> ended (hang-ups, transfer to a number, failures, gateway restart)

SIP codes recorded with ``call.ended`` (the final response that ended an unanswered
leg; ``None`` when a BYE ended an established one):

* inbound caller CANCELs before an agent answered -> 487 Request Terminated (sent to
  the caller); the contract's ``caller_hangup`` covers both an abandon while queued and a
  cancel while an agent rings (the stream shows which: an open ``call.agent_ringing``);
* ``Hangup`` of an unanswered inbound call -> 480 Temporarily Unavailable, or 404 Not
  Found for ``unknown_destination``; cause ``no_agent`` for the routing reasons,
  ``api_hangup`` for a normal hang-up or once an agent is connected;
* outbound dial outcomes other than ``answered`` end the call with the carrier's code;
  ``ended_by`` is ``caller`` when the carrier side answered with that code and
  ``gateway`` when the gateway gave up itself (ring timeout, no response, machine).

Agent-leg answers are matched by the agent leg's SIP Call-ID: a 200 OK or an error from a
leg that is no longer the ringing one (e.g. a 200 that crossed the gateway's CANCEL)
raises ``StaleAgentLegError``, and the caller of ``decide`` ACKs and BYEs that leg.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

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
    CallResumed,
    CallTransferred,
    ComplianceAbandoned,
    ControlSource,
    DialCompleted,
    DialOutcome,
    DialRefused,
    DialRequester,
    Direction,
    EndCause,
    EndedBy,
    TransferTarget,
)

COMPLIANCE_ABANDON_AFTER_MS = 2000
"""A live outbound answer not connected to an agent within this is abandoned (DESIGN §4)."""

CALLER_CANCELLED_CODE = 487
UNANSWERED_HANGUP_CODE = 480
UNKNOWN_DESTINATION_CODE = 404

Media = Literal["direct", "anchored"]


class Phase(StrEnum):
    """Where a call is in its life."""

    NEW = "new"  # nothing recorded yet
    WAITING = "waiting"  # customer on the line, no agent leg: queued, ringback, or answered
    AGENT_RINGING = "agent_ringing"
    CONNECTED = "connected"
    HELD = "held"
    DIALLING = "dialling"  # outbound, the customer's phone has not answered yet
    REJECTED = "rejected"  # inbound refused before offering
    REFUSED = "refused"  # outbound dial refused, nothing dialled
    ENDED = "ended"


OPEN_PHASES = frozenset(
    {Phase.WAITING, Phase.AGENT_RINGING, Phase.CONNECTED, Phase.HELD, Phase.DIALLING}
)
TALKING_PHASES = frozenset({Phase.CONNECTED, Phase.HELD})


class HangupReason(StrEnum):
    """Why a ``CallControl.Hangup`` client ends a call (mirrors the proto enum)."""

    NORMAL = "normal"
    NO_AGENT = "no_agent"
    UNKNOWN_DESTINATION = "unknown_destination"
    QUEUE_CLOSED = "queue_closed"


class CallDomainError(Exception):
    """A command cannot be applied to a call."""


class IllegalCallTransitionError(CallDomainError):
    """A command or event is not allowed in the call's current phase."""

    def __init__(self, call_id: str | None, phase: Phase, action: str, why: str = "") -> None:
        self.call_id = call_id
        self.phase = phase
        self.action = action
        name = f"call {call_id}" if call_id else "a new call"
        because = f" ({why})" if why else ""
        super().__init__(f"cannot {action}: {name} is {phase}{because}")


class StaleAgentLegError(CallDomainError):
    """A SIP answer concerns an agent leg that is not the one ringing (or connected) now."""


# -- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentLeg:
    """The leg towards an agent's softphone: who, where, and its SIP Call-ID."""

    agent_id: str
    extension: str
    contact: str
    sip_call_id: str
    queue_id: str | None = None


@dataclass(frozen=True)
class CallState:
    """Everything the gateway knows about one call, as recorded in its stream."""

    call_id: str | None = None
    phase: Phase = Phase.NEW
    direction: Direction | None = None
    trunk: str | None = None
    carrier_sip_call_id: str | None = None
    ani: str | None = None  # inbound
    dnis: str | None = None  # inbound
    number: str | None = None  # outbound
    campaign_id: str | None = None
    contact_id: str | None = None
    attempt_id: str | None = None
    requested_by: DialRequester | None = None
    preset_agent_id: str | None = None  # outbound: agent to connect on answer, if named
    agent: AgentLeg | None = None  # the agent leg ringing or connected, if any
    media: Media | None = None
    customer_answered: bool = False  # outbound live answer, or inbound answered (connected)
    ever_connected: bool = False
    dial_outcome: DialOutcome | None = None
    agent_attempts: int = 0
    last_agent_sip_code: int | None = None
    transfers: int = 0
    compliance_abandoned: bool = False
    end_cause: EndCause | None = None
    ended_by: EndedBy | None = None
    final_sip_code: int | None = None  # of the rejection, refusal or end

    @property
    def is_open(self) -> bool:
        """Whether the call is in progress (has legs up and will end with ``call.ended``)."""
        return self.phase in OPEN_PHASES

    @property
    def connected_agent(self) -> str | None:
        """The agent talking to (or holding) the customer, if any."""
        return self.agent.agent_id if self.agent and self.phase in TALKING_PHASES else None


# -- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferCall:
    """Record an admitted inbound INVITE: the caller now hears ringback while queued."""

    call_id: str
    trunk: str
    ani: str
    dnis: str
    sip_call_id: str


@dataclass(frozen=True)
class RecordRejection:
    """Record an inbound INVITE refused before being offered (403, 404, 503 ...)."""

    rejected: CallRejected


@dataclass(frozen=True)
class RingAgent:
    """Ring an agent's registered contact for a waiting call (``ConnectAgent``)."""

    agent_id: str
    extension: str
    contact: str
    sip_call_id: str
    queue_id: str | None = None


@dataclass(frozen=True)
class ReportAgentUnavailable:
    """The agent could not be rung at all (no registered contact): nothing was sent."""

    agent_id: str
    extension: str
    reason: AgentLegFailure = AgentLegFailure.NOT_REGISTERED


@dataclass(frozen=True)
class BridgeAgent:
    """The ringing agent answered (200 OK): bridge the customer to it."""

    agent_sip_call_id: str
    media: Media = "direct"


@dataclass(frozen=True)
class ExpireAgentRing:
    """The ring timeout fired on the agent leg (RONA); the gateway CANCELs it."""

    agent_sip_call_id: str
    rang_ms: int


@dataclass(frozen=True)
class FailAgentLeg:
    """The agent leg got a final error or failed in transport before answering."""

    agent_sip_call_id: str
    sip_code: int | None = None
    reason: AgentLegFailure | None = None  # derived from ``sip_code`` when not given


@dataclass(frozen=True)
class Hold:
    """Put the customer on hold."""

    via: ControlSource


@dataclass(frozen=True)
class Resume:
    """Take the customer off hold."""

    via: ControlSource


@dataclass(frozen=True)
class Transfer:
    """Blind-transfer the call (a number target must already have passed the allow-list)."""

    target: TransferTarget
    via: ControlSource


@dataclass(frozen=True)
class HangUpByCaller:
    """The carrier side hung up: BYE, or CANCEL of a not yet answered inbound INVITE."""


@dataclass(frozen=True)
class HangUpByAgent:
    """The connected agent's softphone sent BYE."""


@dataclass(frozen=True)
class HangUp:
    """``CallControl.Hangup``: end every leg."""

    reason: HangupReason = HangupReason.NORMAL


@dataclass(frozen=True)
class TearDown:
    """The gateway ends the call itself after a failure (dead media, SIP or network error)."""

    cause: Literal[EndCause.FAILED, EndCause.MEDIA_TIMEOUT, EndCause.OTHER]
    sip_code: int | None = None


@dataclass(frozen=True)
class Originate:
    """Record an allowed outbound dial being sent to the carrier."""

    call_id: str
    campaign_id: str
    contact_id: str
    attempt_id: str
    number: str
    list_version: int
    trunk: str
    requested_by: DialRequester
    sip_call_id: str
    caller_id: str | None = None
    agent_id: str | None = None
    # An agent dialling from the softphone: that softphone's leg is the agent leg from the
    # start, so a live answer connects the call at once.
    agent_extension: str | None = None
    agent_leg_sip_call_id: str | None = None


@dataclass(frozen=True)
class RecordDialRefusal:
    """Record a dial refused by the allow-list (or another check): nothing was dialled."""

    refused: DialRefused


@dataclass(frozen=True)
class ResolveDial:
    """The dial phase ended: answered (live), no answer, busy, failed or machine."""

    outcome: DialOutcome
    sip_code: int | None = None
    ring_ms: int | None = None


@dataclass(frozen=True)
class AbandonForCompliance:
    """A live answer waited too long for an agent: play the message (if any) and hang up."""

    waited_ms: int
    message_played: bool = False


Command = (
    OfferCall
    | RecordRejection
    | RingAgent
    | ReportAgentUnavailable
    | BridgeAgent
    | ExpireAgentRing
    | FailAgentLeg
    | Hold
    | Resume
    | Transfer
    | HangUpByCaller
    | HangUpByAgent
    | HangUp
    | TearDown
    | Originate
    | RecordDialRefusal
    | ResolveDial
    | AbandonForCompliance
)

Event = (
    CallOffered
    | CallRejected
    | AgentRinging
    | AgentNoAnswer
    | AgentRejected
    | CallConnected
    | CallHeld
    | CallResumed
    | CallTransferred
    | CallEnded
    | CallOriginated
    | DialRefused
    | DialCompleted
    | ComplianceAbandoned
)


def agent_leg_failure(sip_code: int | None) -> AgentLegFailure:
    """What a final response (or none: transport failure, timeout) on an agent leg means."""
    if sip_code is None or sip_code in (408, 480, 503, 504):
        return AgentLegFailure.UNREACHABLE
    if sip_code in (486, 600):
        return AgentLegFailure.BUSY
    if sip_code == 603:
        return AgentLegFailure.DECLINED
    if sip_code in (404, 410):
        return AgentLegFailure.NOT_REGISTERED
    return AgentLegFailure.OTHER


# -- decide -----------------------------------------------------------------------------


def decide(state: CallState, command: Command) -> list[Event]:
    """The events that record ``command`` on the call; raises ``CallDomainError``."""
    match command:
        case OfferCall() | RecordRejection() | Originate() | RecordDialRefusal():
            return _decide_start(state, command)
        case (
            RingAgent()
            | ReportAgentUnavailable()
            | BridgeAgent()
            | ExpireAgentRing()
            | FailAgentLeg()
        ):
            return _decide_agent_leg(state, command)
        case Hold() | Resume() | Transfer():
            return _decide_control(state, command)
        case ResolveDial() | AbandonForCompliance():
            return _decide_outbound(state, command)
        case HangUpByCaller() | HangUpByAgent() | HangUp() | TearDown():
            return _decide_end(state, command)
    raise TypeError(f"not a call command: {command!r}")  # pragma: no cover


def close_for_restart(state: CallState) -> list[Event]:
    """``call.ended`` (``gateway_restart``) for a call still open in the store, else nothing."""
    if not state.is_open:
        return []
    return [_ended(state, EndCause.GATEWAY_RESTART, EndedBy.GATEWAY)]


def _require(state: CallState, action: str, *phases: Phase, why: str = "") -> str:
    if state.phase not in phases:
        expected = " or ".join(phases)
        raise IllegalCallTransitionError(
            state.call_id, state.phase, action, why or f"it must be {expected}"
        )
    assert state.call_id is not None or state.phase is Phase.NEW
    return state.call_id or ""


def _decide_start(
    state: CallState, command: OfferCall | RecordRejection | Originate | RecordDialRefusal
) -> list[Event]:
    _require(state, f"start the call with {type(command).__name__}", Phase.NEW)
    match command:
        case OfferCall():
            return [
                CallOffered(
                    call_id=command.call_id,
                    ani=command.ani,
                    dnis=command.dnis,
                    trunk=command.trunk,
                    sip_call_id=command.sip_call_id,
                )
            ]
        case RecordRejection():
            return [command.rejected]
        case RecordDialRefusal():
            return [command.refused]
        case Originate():
            return [
                CallOriginated(
                    call_id=command.call_id,
                    campaign_id=command.campaign_id,
                    contact_id=command.contact_id,
                    attempt_id=command.attempt_id,
                    number=command.number,
                    list_version=command.list_version,
                    caller_id=command.caller_id,
                    trunk=command.trunk,
                    requested_by=command.requested_by,
                    agent_id=command.agent_id,
                    sip_call_id=command.sip_call_id,
                    agent_leg_sip_call_id=command.agent_leg_sip_call_id,
                    agent_extension=command.agent_extension,
                )
            ]


def _ringing_leg(state: CallState, action: str, agent_sip_call_id: str) -> tuple[str, AgentLeg]:
    call_id = _require(state, action, Phase.AGENT_RINGING)
    leg = state.agent
    assert leg is not None
    if leg.sip_call_id != agent_sip_call_id:
        raise StaleAgentLegError(
            f"cannot {action}: agent leg {agent_sip_call_id} is not the leg ringing for "
            f"call {call_id} ({leg.sip_call_id}); ACK and BYE it if it answered"
        )
    return call_id, leg


def _decide_agent_leg(
    state: CallState,
    command: RingAgent | ReportAgentUnavailable | BridgeAgent | ExpireAgentRing | FailAgentLeg,
) -> list[Event]:
    match command:
        case RingAgent():
            call_id = _require(state, "ring an agent", Phase.WAITING)
            return [
                AgentRinging(
                    call_id=call_id,
                    agent_id=command.agent_id,
                    extension=command.extension,
                    contact=command.contact,
                    sip_call_id=command.sip_call_id,
                    queue_id=command.queue_id,
                )
            ]
        case ReportAgentUnavailable():
            call_id = _require(state, "report an agent unavailable", Phase.WAITING)
            return [
                AgentRejected(
                    call_id=call_id,
                    agent_id=command.agent_id,
                    extension=command.extension,
                    reason=command.reason,
                )
            ]
        case BridgeAgent():
            call_id, leg = _ringing_leg(state, "bridge the agent", command.agent_sip_call_id)
            return [
                CallConnected(
                    call_id=call_id,
                    agent_id=leg.agent_id,
                    extension=leg.extension,
                    queue_id=leg.queue_id,
                    media=command.media,
                )
            ]
        case ExpireAgentRing():
            call_id, leg = _ringing_leg(state, "time out the agent", command.agent_sip_call_id)
            return [
                AgentNoAnswer(
                    call_id=call_id,
                    agent_id=leg.agent_id,
                    extension=leg.extension,
                    rang_ms=command.rang_ms,
                )
            ]
        case FailAgentLeg():
            call_id, leg = _ringing_leg(state, "fail the agent leg", command.agent_sip_call_id)
            return [
                AgentRejected(
                    call_id=call_id,
                    agent_id=leg.agent_id,
                    extension=leg.extension,
                    reason=command.reason or agent_leg_failure(command.sip_code),
                    sip_code=command.sip_code,
                )
            ]


def _decide_control(state: CallState, command: Hold | Resume | Transfer) -> list[Event]:
    match command:
        case Hold():
            call_id = _require(state, "hold", Phase.CONNECTED)
            assert state.agent is not None
            return [CallHeld(call_id=call_id, agent_id=state.agent.agent_id, via=command.via)]
        case Resume():
            call_id = _require(state, "resume", Phase.HELD)
            assert state.agent is not None
            return [CallResumed(call_id=call_id, agent_id=state.agent.agent_id, via=command.via)]
        case Transfer():
            call_id = _require(state, "transfer", Phase.WAITING, Phase.CONNECTED, Phase.HELD)
            agent_id = state.connected_agent
            if command.via == "softphone" and agent_id is None:
                raise IllegalCallTransitionError(
                    call_id, state.phase, "transfer from a softphone", "no agent is connected"
                )
            transferred = CallTransferred(
                call_id=call_id, agent_id=agent_id, target=command.target, via=command.via
            )
            if command.target.kind != "number":
                return [transferred]
            # The call leaves Plateau: it ends once handed over, with no agent left on it.
            by = EndedBy.AGENT if command.via == "softphone" else EndedBy.API
            after = evolve(state, transferred)
            return [transferred, _ended(after, EndCause.TRANSFERRED_AWAY, by)]


def _decide_outbound(state: CallState, command: ResolveDial | AbandonForCompliance) -> list[Event]:
    match command:
        case ResolveDial():
            call_id = _require(state, "resolve the dial", Phase.DIALLING)
            if state.dial_outcome is not None:
                raise IllegalCallTransitionError(
                    call_id, state.phase, "resolve the dial", f"it was {state.dial_outcome}"
                )
            assert state.campaign_id is not None and state.attempt_id is not None
            if command.outcome is DialOutcome.ANSWERED and command.sip_code is not None:
                raise CallDomainError(
                    f"call {call_id}: an answered dial has no failure code (got {command.sip_code})"
                )
            completed = DialCompleted(
                call_id=call_id,
                outcome=command.outcome,
                campaign_id=state.campaign_id,
                attempt_id=state.attempt_id,
                sip_code=command.sip_code,
                ring_ms=command.ring_ms,
            )
            if command.outcome is DialOutcome.ANSWERED:
                if state.agent is None:
                    return [completed]
                # The agent dialled from the softphone: its leg is bridged as it answers.
                return [
                    completed,
                    CallConnected(
                        call_id=call_id,
                        agent_id=state.agent.agent_id,
                        extension=state.agent.extension,
                        media="direct",
                    ),
                ]
            by = (
                EndedBy.CALLER
                if command.sip_code is not None and command.outcome is not DialOutcome.MACHINE
                else EndedBy.GATEWAY
            )
            cause = _DIAL_END_CAUSE[command.outcome]
            return [completed, _ended(state, cause, by, command.sip_code)]
        case AbandonForCompliance():
            call_id = _require(state, "abandon for compliance", Phase.WAITING, Phase.AGENT_RINGING)
            if state.direction != "outbound" or state.ever_connected:
                raise IllegalCallTransitionError(
                    call_id,
                    state.phase,
                    "abandon for compliance",
                    "only a live outbound answer never connected to an agent is abandoned",
                )
            assert state.campaign_id is not None and state.attempt_id is not None
            return [
                ComplianceAbandoned(
                    call_id=call_id,
                    campaign_id=state.campaign_id,
                    attempt_id=state.attempt_id,
                    waited_ms=command.waited_ms,
                    message_played=command.message_played,
                ),
                _ended(state, EndCause.COMPLIANCE_ABANDON, EndedBy.GATEWAY),
            ]


_DIAL_END_CAUSE = {
    DialOutcome.NO_ANSWER: EndCause.NO_ANSWER,
    DialOutcome.BUSY: EndCause.BUSY,
    DialOutcome.FAILED: EndCause.FAILED,
    DialOutcome.MACHINE: EndCause.MACHINE,
}

_HANGUP_UNANSWERED_CODE = {
    HangupReason.NORMAL: UNANSWERED_HANGUP_CODE,
    HangupReason.NO_AGENT: UNANSWERED_HANGUP_CODE,
    HangupReason.QUEUE_CLOSED: UNANSWERED_HANGUP_CODE,
    HangupReason.UNKNOWN_DESTINATION: UNKNOWN_DESTINATION_CODE,
}


def _decide_end(
    state: CallState, command: HangUpByCaller | HangUpByAgent | HangUp | TearDown
) -> list[Event]:
    # An inbound caller not yet answered is refused with a final response; an answered
    # one (or any outbound customer) gets a BYE, which has no code to record.
    unanswered_inbound = state.direction == "inbound" and not state.customer_answered
    match command:
        case HangUpByCaller():
            _require(
                state,
                "hang up for the caller",
                Phase.WAITING,
                Phase.AGENT_RINGING,
                Phase.CONNECTED,
                Phase.HELD,
            )
            code = CALLER_CANCELLED_CODE if unanswered_inbound else None
            return [_ended(state, EndCause.CALLER_HANGUP, EndedBy.CALLER, code)]
        case HangUpByAgent():
            if state.phase is Phase.DIALLING and state.agent is not None:
                # The agent gave up on its own dial before the customer answered.
                return [_ended(state, EndCause.AGENT_HANGUP, EndedBy.AGENT)]
            _require(state, "hang up for the agent", Phase.CONNECTED, Phase.HELD)
            return [_ended(state, EndCause.AGENT_HANGUP, EndedBy.AGENT)]
        case HangUp():
            _require(state, "hang up", *OPEN_PHASES)
            routing = command.reason is not HangupReason.NORMAL
            cause = (
                EndCause.NO_AGENT
                if routing and state.phase not in TALKING_PHASES
                else EndCause.API_HANGUP
            )
            code = _HANGUP_UNANSWERED_CODE[command.reason] if unanswered_inbound else None
            return [_ended(state, cause, EndedBy.API, code)]
        case TearDown():
            _require(state, "tear down", *OPEN_PHASES)
            return [_ended(state, command.cause, EndedBy.GATEWAY, command.sip_code)]


def _ended(
    state: CallState, cause: EndCause, by: EndedBy, sip_code: int | None = None
) -> CallEnded:
    assert state.call_id is not None
    return CallEnded(
        call_id=state.call_id,
        cause=cause,
        ended_by=by,
        sip_code=sip_code,
        agent_id=state.connected_agent,
    )


# -- evolve -----------------------------------------------------------------------------


def fold(events: Iterable[Event], state: CallState | None = None) -> CallState:
    """The call rebuilt from its events (optionally continuing from ``state``)."""
    current = state or CallState()
    for event in events:
        current = evolve(current, event)
    return current


def evolve(state: CallState, event: Event) -> CallState:
    """The call after ``event``; raises ``IllegalCallTransitionError`` on a corrupt stream."""
    if state.call_id is not None and event.call_id != state.call_id:
        raise CallDomainError(
            f"event {event.event_type} of call {event.call_id} applied to call {state.call_id}"
        )
    action = f"apply {event.event_type}"
    match event:
        case CallOffered() | CallRejected() | CallOriginated() | DialRefused():
            return _evolve_start(state, event, action)
        case AgentRinging() | AgentNoAnswer() | AgentRejected() | CallConnected():
            return _evolve_agent_leg(state, event, action)
        case (
            DialCompleted()
            | CallHeld()
            | CallResumed()
            | CallTransferred()
            | ComplianceAbandoned()
            | CallEnded()
        ):
            return _evolve_progress(state, event, action)
    raise TypeError(f"not a call event: {event!r}")  # pragma: no cover


def _evolve_start(
    state: CallState,
    event: CallOffered | CallRejected | CallOriginated | DialRefused,
    action: str,
) -> CallState:
    match event:
        case CallOffered():
            _require(state, action, Phase.NEW)
            return replace(
                state,
                call_id=event.call_id,
                phase=Phase.WAITING,
                direction="inbound",
                trunk=event.trunk,
                carrier_sip_call_id=event.sip_call_id,
                ani=event.ani,
                dnis=event.dnis,
            )
        case CallRejected():
            _require(state, action, Phase.NEW)
            return replace(
                state,
                call_id=event.call_id,
                phase=Phase.REJECTED,
                direction="inbound",
                trunk=event.trunk,
                carrier_sip_call_id=event.sip_call_id,
                ani=event.ani,
                dnis=event.dnis,
                final_sip_code=event.sip_code,
            )
        case CallOriginated():
            _require(state, action, Phase.NEW)
            return replace(
                state,
                call_id=event.call_id,
                phase=Phase.DIALLING,
                direction="outbound",
                trunk=event.trunk,
                carrier_sip_call_id=event.sip_call_id,
                number=event.number,
                campaign_id=event.campaign_id,
                contact_id=event.contact_id,
                attempt_id=event.attempt_id,
                requested_by=event.requested_by,
                preset_agent_id=event.agent_id,
                agent=_softphone_leg(event),
            )
        case DialRefused():
            _require(state, action, Phase.NEW)
            return replace(
                state,
                call_id=event.call_id,
                phase=Phase.REFUSED,
                direction="outbound",
                number=event.number,
                campaign_id=event.campaign_id,
                contact_id=event.contact_id,
                attempt_id=event.attempt_id,
                requested_by=event.requested_by,
                final_sip_code=event.sip_code,
            )


def _evolve_agent_leg(
    state: CallState,
    event: AgentRinging | AgentNoAnswer | AgentRejected | CallConnected,
    action: str,
) -> CallState:
    match event:
        case AgentRinging():
            _require(state, action, Phase.WAITING)
            leg = AgentLeg(
                event.agent_id, event.extension, event.contact, event.sip_call_id, event.queue_id
            )
            return replace(
                state,
                phase=Phase.AGENT_RINGING,
                agent=leg,
                agent_attempts=state.agent_attempts + 1,
            )
        case AgentNoAnswer():
            _require_ringing_agent(state, action, event.agent_id)
            return replace(state, phase=Phase.WAITING, agent=None)
        case AgentRejected():
            if state.phase is Phase.WAITING:  # never rang: no registered contact
                return replace(state, last_agent_sip_code=event.sip_code)
            _require_ringing_agent(state, action, event.agent_id)
            return replace(
                state, phase=Phase.WAITING, agent=None, last_agent_sip_code=event.sip_code
            )
        case CallConnected():
            softphone_dial = (
                state.phase is Phase.WAITING
                and state.agent is not None
                and state.agent.agent_id == event.agent_id
            )
            if not softphone_dial:
                _require_ringing_agent(state, action, event.agent_id)
            return replace(
                state,
                phase=Phase.CONNECTED,
                media=event.media,
                customer_answered=True,
                ever_connected=True,
            )


def _evolve_progress(
    state: CallState,
    event: DialCompleted
    | CallHeld
    | CallResumed
    | CallTransferred
    | ComplianceAbandoned
    | CallEnded,
    action: str,
) -> CallState:
    match event:
        case DialCompleted():
            _require(state, action, Phase.DIALLING)
            if state.dial_outcome is not None:
                raise IllegalCallTransitionError(
                    state.call_id, state.phase, action, f"the dial was {state.dial_outcome}"
                )
            answered = event.outcome is DialOutcome.ANSWERED
            return replace(
                state,
                phase=Phase.WAITING if answered else Phase.DIALLING,
                dial_outcome=event.outcome,
                customer_answered=answered,
            )
        case CallHeld():
            _require(state, action, Phase.CONNECTED)
            return replace(state, phase=Phase.HELD)
        case CallResumed():
            _require(state, action, Phase.HELD)
            return replace(state, phase=Phase.CONNECTED)
        case CallTransferred():
            _require(state, action, Phase.WAITING, Phase.CONNECTED, Phase.HELD)
            return replace(state, phase=Phase.WAITING, agent=None, transfers=state.transfers + 1)
        case ComplianceAbandoned():
            _require(state, action, Phase.WAITING, Phase.AGENT_RINGING)
            return replace(state, compliance_abandoned=True)
        case CallEnded():
            _require(state, action, *OPEN_PHASES)
            return replace(
                state,
                phase=Phase.ENDED,
                end_cause=event.cause,
                ended_by=event.ended_by,
                final_sip_code=event.sip_code,
            )


def _softphone_leg(event: CallOriginated) -> AgentLeg | None:
    """The agent leg of a dial placed from a softphone (the leg that asked for it)."""
    if event.agent_leg_sip_call_id is None or event.agent_id is None:
        return None
    return AgentLeg(
        event.agent_id, event.agent_extension or "", "", event.agent_leg_sip_call_id, None
    )


def _require_ringing_agent(state: CallState, action: str, agent_id: str) -> None:
    _require(state, action, Phase.AGENT_RINGING)
    assert state.agent is not None
    if state.agent.agent_id != agent_id:
        raise IllegalCallTransitionError(
            state.call_id,
            state.phase,
            action,
            f"agent {state.agent.agent_id} is ringing, not {agent_id}",
        )
