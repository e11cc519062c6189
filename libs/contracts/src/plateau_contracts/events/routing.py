"""Routing decisions and queue configuration, recorded by the acd (topic ``plateau.routing``).

Every routing fact lands in the stream of the queue it is about,
``queue-<tenant>:<queue_id>``, and the queue's stream id is the Kafka key: so all decisions
of one queue (queued, reserved, requeued at the head, abandoned, overflowed) are read in the
order the acd took them. An overflow is recorded in the queue the call leaves; the target
queue then records its own ``call.queued`` with ``overflowed_from``. A call the acd cannot
place in any queue (its dialled number maps to no entry point) is recorded in
``entrypoint-<tenant>:<dnis>``, next to the mapping facts of that number. Queue ids and
dialled numbers are the tenant's own, so their stream ids carry the tenant (the envelope's):
two tenants with a queue ``q-support`` have two streams.

The names follow the contact-centre flow (``call.queued``, ``call.abandoned``...): they are
facts about a call in a queue, published on the routing topic because the acd owns them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plateau_contracts.catalogue import event
from plateau_contracts.events.common import Ident, Millis, StreamedEvent, TenantId
from plateau_contracts.topics import Topic


class RequeueReason(StrEnum):
    """Why a reserved call went back into its queue."""

    RING_NO_ANSWER = "ring_no_answer"  # the agent let it ring out (RONA)
    AGENT_REJECTED = "agent_rejected"  # the agent declined or was busy
    AGENT_UNREACHABLE = "agent_unreachable"  # not registered or transport failure
    CONNECT_FAILED = "connect_failed"  # CallControl.ConnectAgent returned an error
    AGENT_LOGGED_OUT = "agent_logged_out"  # the agent logged out while reserved
    OTHER = "other"


class OverflowReason(StrEnum):
    """Why a call was moved to another queue."""

    MAX_WAIT_EXCEEDED = "max_wait_exceeded"
    NO_AGENT_LOGGED_IN = "no_agent_logged_in"
    QUEUE_FULL = "queue_full"
    QUEUE_CLOSED = "queue_closed"


class RoutingFailure(StrEnum):
    """Why the acd gave up routing a call (it then asks the gateway to hang up)."""

    UNKNOWN_DNIS = "unknown_dnis"  # the dialled number maps to no entry point
    NO_AGENT_LOGGED_IN = "no_agent_logged_in"  # and no overflow queue configured
    QUEUE_FULL = "queue_full"
    QUEUE_CLOSED = "queue_closed"
    MAX_WAIT_EXCEEDED = "max_wait_exceeded"  # and no overflow queue configured
    OTHER = "other"


class RoutingCandidate(BaseModel):
    """One agent the acd considered for a call, with the score it gave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Ident = Field(description="Agent considered.")
    score: float = Field(description="Score under the queue's strategy; highest wins.")
    idle_ms: Millis = Field(description="How long the agent had been available.")
    skill_level: int | None = Field(
        default=None, ge=0, description="Agent's level in the queue's main skill, if skill-based."
    )
    calls_today: int | None = Field(
        default=None, ge=0, description="Calls the agent took today (tenant-local day), if known."
    )


class SkillMinimum(BaseModel):
    """The lowest level of a skill a queue accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Skill name.", examples=["french"])
    min_level: int = Field(ge=1, le=10, description="Lowest level accepted.", examples=[3])


class QueueEvent(StreamedEvent):
    """Common shape of routing events: they name the queue whose stream they belong to."""

    topic: ClassVar[str] = Topic.ROUTING
    stream_prefix: ClassVar[str] = "queue"
    stream_key: ClassVar[str] = "queue_id"
    tenant_scoped: ClassVar[bool] = True
    queue_id: Ident = Field(
        description="Queue (the stream is `queue-<tenant>:<queue_id>`, tenant of the envelope).",
        examples=["q-support"],
    )


class QueuedCallEvent(QueueEvent):
    """Common shape of routing facts about one call in one queue."""

    call_id: str = Field(description="Plateau call id (stream `call-<call_id>` at the gateway).")


@event
class CallQueued(QueuedCallEvent):
    """A call entered a queue to wait for an agent."""

    event_type: ClassVar[str] = "call.queued"
    direction: Literal["inbound", "outbound"] = Field(
        description="`outbound` for a live answer of a campaign call."
    )
    priority: int = Field(
        ge=0,
        le=100,
        description="Higher is served first; outbound live answers get 100.",
        examples=[0],
    )
    ani: str | None = Field(default=None, description="Caller's number, for screen pop.")
    dnis: str | None = Field(default=None, description="Entry point dialled (inbound).")
    campaign_id: Ident | None = Field(default=None, description="Campaign (outbound).")
    required_skills: tuple[str, ...] = Field(
        default=(), description="Skills an agent needs to take the call."
    )
    overflowed_from: Ident | None = Field(
        default=None, description="Queue the call overflowed from, if it did."
    )


@event
class CallAgentReserved(QueuedCallEvent):
    """The acd chose an agent for a waiting call and set the agent aside for it."""

    event_type: ClassVar[str] = "call.agent_reserved"
    agent_id: Ident = Field(description="The winner.")
    extension: str = Field(description="Extension the agent is logged in on.")
    waited_ms: Millis = Field(description="Time the call had waited in this queue.")
    strategy: str = Field(
        description="Routing strategy of the queue.", examples=["longest_idle", "skills_weighted"]
    )
    candidates: tuple[RoutingCandidate, ...] = Field(
        description="Every agent considered, best first; the winner is the first."
    )
    decision: str = Field(
        description="Why the winner won, in words.",
        examples=["highest score 0.92: skill 5, idle 340 s"],
    )


@event
class CallRequeued(QueuedCallEvent):
    """A reserved call went back to the queue because the agent could not take it."""

    event_type: ClassVar[str] = "call.requeued"
    agent_id: Ident = Field(description="Agent that was reserved.")
    reason: RequeueReason = Field(description="Why the reservation failed.")
    at_head: bool = Field(
        default=True, description="Whether the call went back at the head of the queue."
    )


@event
class CallAnswered(QueuedCallEvent):
    """The call left its queue answered: the agent picked up (service level and ASA)."""

    event_type: ClassVar[str] = "call.answered"
    agent_id: Ident = Field(description="Agent who answered.")
    waited_ms: Millis = Field(description="Time in this queue until the answer (ASA).")
    within_service_level: bool = Field(
        description="Whether it was answered within the queue's service-level threshold."
    )


@event
class CallAbandoned(QueuedCallEvent):
    """The caller hung up while waiting in the queue (or while an agent was being rung)."""

    event_type: ClassVar[str] = "call.abandoned"
    waited_ms: Millis = Field(description="Time in this queue before hanging up.")
    agent_id: Ident | None = Field(
        default=None, description="Agent being rung at the time, if any."
    )


@event
class CallDequeued(QueuedCallEvent):
    """An outbound live answer left its queue with no agent: the gateway gave it up."""

    # A compliance abandon counts against the campaign, not as the queue's abandon: the
    # platform, not the customer, ended the wait.

    event_type: ClassVar[str] = "call.dequeued"
    waited_ms: Millis = Field(description="Time in this queue before leaving it.")
    campaign_id: Ident | None = Field(default=None, description="Campaign of the dial.")
    cause: str = Field(
        description="The gateway's fact that ended the wait: `compliance_abandon`, or the "
        "`call.ended` cause.",
        examples=["compliance_abandon"],
    )
    agent_id: Ident | None = Field(
        default=None, description="Agent being rung at the time, if any."
    )


@event
class CallOverflowed(QueuedCallEvent):
    """A call left this queue for another (the overflow target)."""

    event_type: ClassVar[str] = "call.overflowed"
    to_queue_id: Ident = Field(description="Queue the call moves to.")
    reason: OverflowReason = Field(description="Why it overflowed.")
    waited_ms: Millis = Field(description="Time spent in this queue.")


@event
class RoutingFailed(StreamedEvent):
    """The acd gave up routing a call; it hangs up an inbound one."""

    # An outbound live answer is left to the gateway's 2-s rule (compliance abandon).

    event_type: ClassVar[str] = "call.routing_failed"
    topic: ClassVar[str] = Topic.ROUTING
    stream_prefix: ClassVar[str] = "queue"
    stream_key: ClassVar[str] = "queue_id"
    tenant_scoped: ClassVar[bool] = True

    call_id: str = Field(description="Plateau call id.")
    reason: RoutingFailure = Field(description="Why routing failed.")
    queue_id: Ident | None = Field(
        default=None, description="Queue it was in; null when no queue matched."
    )
    dnis: str | None = Field(default=None, description="Dialled number (inbound).")
    detail: str | None = Field(default=None, description="Human-readable explanation.")
    campaign_id: Ident | None = Field(
        default=None,
        description="Campaign of an outbound live answer; the acd does not hang such a call "
        "up, the gateway abandons it after 2 s and counts it against the campaign.",
    )

    @model_validator(mode="after")
    def _names_its_stream(self) -> RoutingFailed:
        if self.queue_id is None and self.dnis is None and self.campaign_id is None:
            raise ValueError(
                "a routing failure names its queue_id, or the dnis (or campaign_id of an "
                "outbound answer) when no queue matched"
            )
        return self

    def stream_id(self, tenant: str | None = None) -> str:
        """The queue's stream, or the entry point's when no queue matched, or for an
        outbound answer of a campaign the acd does not know, ``outbound-<campaign_id>``."""
        if self.queue_id is not None:
            return self._named("queue", self.queue_id, tenant)
        if self.dnis is None and self.campaign_id is not None:
            return self._named("outbound", self.campaign_id, tenant)
        return self._named("entrypoint", str(self.dnis), tenant)

    @classmethod
    def stream_pattern(cls) -> str:
        """Stream naming rule of routing failures."""
        return (
            f"{cls._pattern('queue', 'queue_id')} or {cls._pattern('entrypoint', 'dnis')} "
            f"or {cls._pattern('outbound', 'campaign_id')}"
        )


# -- configuration ----------------------------------------------------------------------


@event
class QueueConfigured(QueueEvent):
    """A queue was created or its configuration replaced as a whole."""

    event_type: ClassVar[str] = "queue.configured"
    name: str = Field(description="Display name.", examples=["Customer service"])
    strategy: str = Field(description="Routing strategy.", examples=["longest_idle"])
    required_skills: tuple[str, ...] = Field(
        default=(), description="Skills an agent needs to take this queue's calls."
    )
    ring_timeout_s: int = Field(
        ge=1, description="Seconds an agent may ring before RONA.", examples=[15]
    )
    wrap_up_s: int | None = Field(
        default=None, ge=0, description="Wrap-up timer; null: until the agent completes it."
    )
    max_wait_s: int | None = Field(
        default=None, ge=1, description="Longest wait before overflow or failure; null: none."
    )
    overflow_queue_id: Ident | None = Field(
        default=None, description="Where calls go past `max_wait_s`."
    )
    service_level_threshold_s: int = Field(
        ge=1, description="Answer-within threshold of the service level.", examples=[20]
    )
    service_level_target: float = Field(
        ge=0, le=1, description="Target share answered within the threshold.", examples=[0.8]
    )
    skill_levels: tuple[SkillMinimum, ...] | None = Field(
        default=None,
        description="Minimum level of required skills; a skill not listed (or null): level 1.",
    )
    priority: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Priority across queues sharing agents (higher first); null: 0.",
    )
    final_action: Literal["hang_up"] | None = Field(
        default=None,
        description="What happens past `max_wait_s` without an overflow queue; null: hang up.",
    )


@event
class EntryPointMapped(StreamedEvent):
    """A dialled number (entry point) was mapped to the queue its calls go to."""

    event_type: ClassVar[str] = "entry_point.mapped"
    topic: ClassVar[str] = Topic.ROUTING
    stream_prefix: ClassVar[str] = "entrypoint"
    stream_key: ClassVar[str] = "dnis"
    tenant_scoped: ClassVar[bool] = True

    dnis: str = Field(description="Dialled number.", examples=["+242053000100"])
    queue_id: Ident = Field(description="Queue its calls are routed to.")
    name: str | None = Field(default=None, description="Display name of the entry point.")


@event
class EntryPointUnmapped(StreamedEvent):
    """A dialled number no longer leads to a queue; its calls fail routing as unknown."""

    event_type: ClassVar[str] = "entry_point.unmapped"
    topic: ClassVar[str] = Topic.ROUTING
    stream_prefix: ClassVar[str] = "entrypoint"
    stream_key: ClassVar[str] = "dnis"
    tenant_scoped: ClassVar[bool] = True

    dnis: str = Field(description="Dialled number.", examples=["+242053000100"])


@event
class TenantConfigured(StreamedEvent):
    """A configuration file was applied to a tenant: its name, time zone and pause codes.

    Recorded last in each application, after the queue, entry-point and agent facts it
    brought, so ``config_version`` names a complete configuration.
    """

    event_type: ClassVar[str] = "tenant.configured"
    topic: ClassVar[str] = Topic.ROUTING
    stream_prefix: ClassVar[str] = "tenant"
    stream_key: ClassVar[str] = "tenant_id"

    tenant_id: TenantId = Field(
        description="Tenant, the envelope's (the stream is `tenant-<tenant_id>`).",
        examples=["mno"],
    )
    name: str = Field(description="Display name.", examples=["MNO customer service"])
    time_zone: str = Field(description="IANA time zone.", examples=["Africa/Brazzaville"])
    pause_codes: tuple[str, ...] = Field(description="Pause codes agents may choose.")
    config_version: int = Field(ge=1, description="1 for the first application, then +1 each.")
    config_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Digest of the applied tenant section."
    )
    source: str | None = Field(default=None, description="Name of the file applied.")
