"""The one place where events become reporting facts.

Every event that names a call (from the gateway, the acd's routing and agent streams, or
later the dialer) becomes a ``CallFact``; every agent state change becomes an
``AgentFact``; queue configuration becomes a ``QueueSetting``. The projections only read
facts, so a new event type (say, the acd's "call answered") slots in here and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from plateau_contracts.catalogue import UnknownEventError, parse
from plateau_contracts.envelope import Envelope
from plateau_contracts.events import agents, calls, dialer, routing
from plateau_stats_projector.domain.intervals import to_ms


class CallFactKind(StrEnum):
    """What happened to a call; the value's order in ``KIND_RANK`` breaks timestamp ties."""

    OFFERED = "offered"
    ORIGINATED = "originated"
    DIAL_COMPLETED = "dial_completed"
    QUEUED = "queued"
    RESERVED = "reserved"
    RING_NO_ANSWER = "ring_no_answer"
    REQUEUED = "requeued"
    CONNECTED = "connected"
    HELD = "held"
    RESUMED = "resumed"
    TRANSFERRED = "transferred"
    OVERFLOWED = "overflowed"
    ROUTING_FAILED = "routing_failed"
    ABANDONED = "abandoned"
    COMPLIANCE_ABANDONED = "compliance_abandoned"
    ENDED = "ended"
    WRAP_UP_STARTED = "wrap_up_started"
    WRAP_UP_COMPLETED = "wrap_up_completed"


#: Order of facts recorded at the same millisecond by different services (their clocks
#: differ, their streams are not ordered with one another): the order of the call flow.
KIND_RANK: dict[CallFactKind, int] = {kind: rank for rank, kind in enumerate(CallFactKind)}


@dataclass(frozen=True)
class CallFact:
    """One thing that happened to a call, with what the projections need of it."""

    call_id: str
    kind: CallFactKind
    at_ms: int
    stream: str
    stream_version: int
    queue_id: str | None = None
    agent_id: str | None = None
    campaign_id: str | None = None
    direction: str | None = None
    #: The reason, cause or outcome named by the event (e.g. an end cause).
    detail: str | None = None
    #: A party named by the event: ANI and DNIS, or the number dialled.
    ani: str | None = None
    dnis: str | None = None

    def sort_key(self) -> tuple[int, int, str, int]:
        return (self.at_ms, KIND_RANK[self.kind], self.stream, self.stream_version)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallFact:
        return cls(**{**data, "kind": CallFactKind(data["kind"])})


class AgentState(StrEnum):
    """The states of an agent's timeline."""

    LOGGED_OUT = "logged_out"
    UNAVAILABLE = "unavailable"  # logged in, not ready (after login, after wrap-up)
    AVAILABLE = "available"
    RESERVED = "reserved"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


@dataclass(frozen=True)
class AgentFact:
    """An agent entered a state at an instant."""

    agent_id: str
    state: AgentState
    at_ms: int
    stream_version: int
    pause_code: str | None = None
    call_id: str | None = None
    queue_id: str | None = None
    extension: str | None = None
    skills: tuple[str, ...] | None = None


@dataclass(frozen=True)
class QueueSetting:
    """A queue's configuration as the reports need it."""

    queue_id: str
    name: str
    service_level_threshold_s: int
    service_level_target: float
    required_skills: tuple[str, ...]


@dataclass(frozen=True)
class CampaignFact:
    """A fact about a campaign's life, its contact list or its dialling pace."""

    campaign_id: str
    at_ms: int
    #: The campaign's state after the fact (created, running, paused, stopped), if it says.
    status: str | None = None
    name: str | None = None
    #: A new contact list: its version and the contacts it made dialable.
    list_version: int | None = None
    contacts: int | None = None
    #: A dial: the contact dialled, and the dial level it was paced at.
    contact_id: str | None = None
    dial_level: float | None = None


@dataclass(frozen=True)
class Facts:
    """What one event means to the projections (each part may be absent)."""

    call: CallFact | None = None
    agent: AgentFact | None = None
    queue: QueueSetting | None = None
    campaign: CampaignFact | None = None


_NOTHING = Facts()


def facts_of(envelope: Envelope) -> Facts:  # noqa: PLR0911, PLR0912 (one case per event)
    """The reporting facts of one event; nothing for events reports do not use."""
    try:
        data = parse(envelope)
    except UnknownEventError:
        # A newer producer's event: nothing to report on until this mapping learns it.
        return _NOTHING
    at = to_ms(envelope.occurred_at)

    def call(call_id: str, kind: CallFactKind, **more: Any) -> CallFact:
        return CallFact(call_id, kind, at, envelope.stream, envelope.stream_version, **more)

    def agent(agent_id: str, state: AgentState, **more: Any) -> AgentFact:
        return AgentFact(agent_id, state, at, envelope.stream_version, **more)

    match data:
        # -- the gateway's call legs
        case calls.CallOffered():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.OFFERED,
                    direction="inbound",
                    ani=data.ani,
                    dnis=data.dnis,
                )
            )
        case calls.CallOriginated():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.ORIGINATED,
                    direction="outbound",
                    campaign_id=data.campaign_id,
                    dnis=data.number,
                    agent_id=data.agent_id,
                )
            )
        case calls.DialCompleted():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.DIAL_COMPLETED,
                    campaign_id=data.campaign_id,
                    detail=data.outcome.value,
                )
            )
        case calls.ComplianceAbandoned():
            return Facts(
                call=call(
                    data.call_id, CallFactKind.COMPLIANCE_ABANDONED, campaign_id=data.campaign_id
                )
            )
        case calls.CallConnected():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.CONNECTED,
                    agent_id=data.agent_id,
                    queue_id=data.queue_id,
                )
            )
        case calls.CallHeld():
            return Facts(call=call(data.call_id, CallFactKind.HELD, agent_id=data.agent_id))
        case calls.CallResumed():
            return Facts(call=call(data.call_id, CallFactKind.RESUMED, agent_id=data.agent_id))
        case calls.CallTransferred():
            target = data.target.queue_id or data.target.agent_id or data.target.number
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.TRANSFERRED,
                    agent_id=data.agent_id,
                    detail=f"{data.target.kind}:{target}",
                )
            )
        case calls.CallEnded():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.ENDED,
                    agent_id=data.agent_id,
                    detail=data.cause.value,
                )
            )
        case calls.AgentNoAnswer():
            return Facts(
                call=call(data.call_id, CallFactKind.RING_NO_ANSWER, agent_id=data.agent_id)
            )
        # -- the acd's routing decisions
        case routing.CallQueued():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.QUEUED,
                    queue_id=data.queue_id,
                    direction=data.direction,
                    campaign_id=data.campaign_id,
                )
            )
        case routing.CallAgentReserved():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.RESERVED,
                    queue_id=data.queue_id,
                    agent_id=data.agent_id,
                )
            )
        case routing.CallRequeued():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.REQUEUED,
                    queue_id=data.queue_id,
                    agent_id=data.agent_id,
                    detail=data.reason.value,
                )
            )
        case routing.CallAbandoned():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.ABANDONED,
                    queue_id=data.queue_id,
                    agent_id=data.agent_id,
                )
            )
        case routing.CallOverflowed():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.OVERFLOWED,
                    queue_id=data.queue_id,
                    detail=data.to_queue_id,
                )
            )
        case routing.RoutingFailed():
            return Facts(
                call=call(
                    data.call_id,
                    CallFactKind.ROUTING_FAILED,
                    queue_id=data.queue_id,
                    detail=data.reason.value,
                )
            )
        case routing.QueueConfigured():
            return Facts(
                queue=QueueSetting(
                    data.queue_id,
                    data.name,
                    data.service_level_threshold_s,
                    data.service_level_target,
                    tuple(data.required_skills),
                )
            )
        # -- the acd's agent states
        case agents.AgentLoggedIn():
            return Facts(
                agent=agent(
                    data.agent_id,
                    AgentState.UNAVAILABLE,
                    extension=data.extension,
                    skills=tuple(s.name for s in data.skills),
                )
            )
        case agents.AgentLoggedOut():
            return Facts(agent=agent(data.agent_id, AgentState.LOGGED_OUT))
        case agents.AgentBecameAvailable():
            return Facts(agent=agent(data.agent_id, AgentState.AVAILABLE))
        case agents.AgentPaused():
            return Facts(agent=agent(data.agent_id, AgentState.PAUSED, pause_code=data.code))
        case agents.AgentNotResponding():
            return Facts(
                agent=agent(
                    data.agent_id,
                    AgentState.PAUSED,
                    pause_code=agents.NOT_RESPONDING,
                    call_id=data.call_id,
                    queue_id=data.queue_id,
                )
            )
        case agents.AgentReserved():
            return Facts(
                agent=agent(
                    data.agent_id,
                    AgentState.RESERVED,
                    call_id=data.call_id,
                    queue_id=data.queue_id,
                )
            )
        case agents.AgentBecameBusy():
            return Facts(
                agent=agent(
                    data.agent_id,
                    AgentState.ON_CALL,
                    call_id=data.call_id,
                    queue_id=data.queue_id,
                )
            )
        case agents.WrapUpStarted():
            return Facts(
                call=call(data.call_id, CallFactKind.WRAP_UP_STARTED, agent_id=data.agent_id),
                agent=agent(
                    data.agent_id,
                    AgentState.WRAP_UP,
                    call_id=data.call_id,
                    queue_id=data.queue_id,
                ),
            )
        case agents.WrapUpCompleted():
            return Facts(
                call=call(data.call_id, CallFactKind.WRAP_UP_COMPLETED, agent_id=data.agent_id),
                # Not ready until the acd says available or paused (which follows at once).
                agent=agent(data.agent_id, AgentState.UNAVAILABLE, call_id=data.call_id),
            )
        # -- the dialer's campaigns
        case dialer.CampaignCreated():
            return Facts(
                campaign=CampaignFact(data.campaign_id, at, status="created", name=data.name)
            )
        case dialer.CampaignStarted() | dialer.CampaignResumed():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="running"))
        case dialer.CampaignPaused():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="paused"))
        case dialer.CampaignStopped():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="stopped"))
        case dialer.ContactListImported():
            return Facts(
                campaign=CampaignFact(
                    data.campaign_id,
                    at,
                    list_version=data.list_version,
                    contacts=data.rows_accepted,
                )
            )
        case dialer.DialAttempted():
            return Facts(
                campaign=CampaignFact(
                    data.campaign_id,
                    at,
                    contact_id=data.contact_id,
                    dial_level=data.dial_level,
                )
            )
        # -- the dialer's campaigns
        case dialer.CampaignCreated():
            return Facts(
                campaign=CampaignFact(data.campaign_id, at, status="created", name=data.name)
            )
        case dialer.CampaignStarted() | dialer.CampaignResumed():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="running"))
        case dialer.CampaignPaused():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="paused"))
        case dialer.CampaignStopped():
            return Facts(campaign=CampaignFact(data.campaign_id, at, status="stopped"))
        case dialer.ContactListImported():
            return Facts(
                campaign=CampaignFact(
                    data.campaign_id,
                    at,
                    list_version=data.list_version,
                    contacts=data.rows_accepted,
                )
            )
        case dialer.DialAttempted():
            return Facts(
                campaign=CampaignFact(
                    data.campaign_id,
                    at,
                    contact_id=data.contact_id,
                    dial_level=data.dial_level,
                )
            )
    return _NOTHING
