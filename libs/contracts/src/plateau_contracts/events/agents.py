"""Agent state facts, recorded by the acd (topic ``plateau.agents``).

An agent's stream is ``agent-<tenant>:<agent_id>`` (agent ids are the tenant's own; the
tenant is the envelope's). Each event names the state the agent enters,
so a reader can rebuild the agent's timeline from the stream alone:

``logged_in`` → *unavailable*; ``became_available`` → *available* (also ends a pause or
wrap-up); ``paused`` and ``not_responding`` → *paused*; ``reserved`` → *reserved*;
``became_busy`` → *on call*; ``wrap_up_started`` → *wrap-up*; ``wrap_up_completed`` leaves
wrap-up (a ``became_available`` or ``paused`` follows); ``logged_out`` → *logged out*.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from plateau_contracts.catalogue import event
from plateau_contracts.events.common import Ident, StreamedEvent
from plateau_contracts.topics import Topic

#: Pause code the acd uses when it pauses an agent after a ring-no-answer.
NOT_RESPONDING = "not_responding"


class Skill(BaseModel):
    """A skill an agent has, with a level used by skill-based routing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Skill name.", examples=["french"])
    level: int = Field(default=1, ge=1, le=10, description="1 (novice) to 10 (expert).")


class AgentEvent(StreamedEvent):
    """Common shape of agent events: they name the agent."""

    topic: ClassVar[str] = Topic.AGENTS
    stream_prefix: ClassVar[str] = "agent"
    stream_key: ClassVar[str] = "agent_id"
    tenant_scoped: ClassVar[bool] = True
    agent_id: Ident = Field(
        description="Agent (the stream is `agent-<tenant>:<agent_id>`, tenant of the envelope).",
        examples=["a-1001"],
    )


@event
class AgentConfigured(AgentEvent):
    """An agent was declared by configuration: name, usual extension and skills."""

    event_type: ClassVar[str] = "agent.configured"
    name: str = Field(description="Display name.", examples=["Aline M."])
    extension: str = Field(description="Default SIP extension.", examples=["1001"])
    skills: tuple[Skill, ...] = Field(default=(), description="Skills, used when a login has none.")


@event
class AgentRemoved(AgentEvent):
    """An agent was removed from the configuration and may no longer log in."""

    event_type: ClassVar[str] = "agent.removed"


@event
class AgentLoggedIn(AgentEvent):
    """An agent logged in on an extension; not yet available for calls."""

    event_type: ClassVar[str] = "agent.logged_in"
    extension: str = Field(description="SIP extension the agent takes calls on.", examples=["1001"])
    skills: tuple[Skill, ...] = Field(default=(), description="Skills for this session.")


@event
class AgentLoggedOut(AgentEvent):
    """An agent logged out and takes no more calls."""

    event_type: ClassVar[str] = "agent.logged_out"
    reason: Literal["requested", "supervisor", "extension_unregistered", "session_expired"] = Field(
        description="Who or what ended the session."
    )


@event
class AgentBecameAvailable(AgentEvent):
    """An agent is ready for the next call (after login, a pause or wrap-up)."""

    event_type: ClassVar[str] = "agent.became_available"


@event
class AgentPaused(AgentEvent):
    """An agent stepped away from taking calls, with a pause code."""

    event_type: ClassVar[str] = "agent.paused"
    code: str = Field(
        min_length=1,
        description="Tenant-defined pause code (reported per code).",
        examples=["break", "lunch", "training"],
    )
    paused_by: Literal["agent", "supervisor"] = Field(description="Who asked for the pause.")


@event
class AgentPauseRequested(AgentEvent):
    """An agent asked for a pause while holding a call; it starts when the call's wrap-up ends."""

    event_type: ClassVar[str] = "agent.pause_requested"
    code: str = Field(
        min_length=1, description="Tenant-defined pause code to take.", examples=["lunch"]
    )
    paused_by: Literal["agent", "supervisor"] = Field(description="Who asked for the pause.")


@event
class AgentNotResponding(AgentEvent):
    """An agent let an offered call ring out and was paused as ``not_responding``."""

    event_type: ClassVar[str] = "agent.not_responding"
    call_id: str = Field(description="The call that rang out.")
    queue_id: Ident | None = Field(default=None, description="Queue the call came from.")
    ring_timeout_s: int = Field(ge=1, description="Ring timeout that expired.", examples=[15])
    reason: Literal["ring_no_answer", "rejected", "unreachable"] | None = Field(
        default=None,
        description="What the softphone did: rang out, refused (busy, declined) or could not "
        "be reached; null in events recorded before this field existed.",
    )


@event
class AgentReserved(AgentEvent):
    """An agent was set aside for one call and is offered no other."""

    event_type: ClassVar[str] = "agent.reserved"
    call_id: str = Field(description="Call the agent is reserved for.")
    queue_id: Ident | None = Field(default=None, description="Queue the call came from.")


@event
class AgentBecameBusy(AgentEvent):
    """An agent is talking on a call."""

    event_type: ClassVar[str] = "agent.became_busy"
    call_id: str = Field(description="Call the agent is on.")
    queue_id: Ident | None = Field(default=None, description="Queue the call came from.")
    direction: Literal["inbound", "outbound"] = Field(description="Direction of the call.")


@event
class WrapUpStarted(AgentEvent):
    """A call ended and the agent is doing its after-call work."""

    event_type: ClassVar[str] = "agent.wrap_up_started"
    call_id: str = Field(description="Call being wrapped up.")
    queue_id: Ident | None = Field(default=None, description="Queue the call came from.")
    timeout_s: int | None = Field(
        default=None, ge=0, description="Wrap-up timer; null: until the agent completes it."
    )


@event
class WrapUpCompleted(AgentEvent):
    """An agent finished after-call work, by request or when the wrap-up timer ran out."""

    event_type: ClassVar[str] = "agent.wrap_up_completed"
    call_id: str = Field(description="Call that was wrapped up.")
    disposition: str | None = Field(
        default=None,
        description="Tenant-defined outcome code; null when the timer completed it.",
        examples=["resolved", "callback_requested"],
    )
    completed_by: Literal["agent", "timer"] = Field(description="What ended the wrap-up.")
