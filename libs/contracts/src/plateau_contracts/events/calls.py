"""Events of call legs, recorded by the sip-gateway (topic ``plateau.calls``).

A call's stream is ``call-<call id>``; every leg fact of that call lands in it, inbound or
outbound, customer leg or agent leg. A dial the gateway refuses still gets a call id of its
own, so each refusal is one short stream. Softphone registrations are facts of the
extension, in ``extension-<extension>``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plateau_contracts.catalogue import event
from plateau_contracts.events.common import E164, Ident, Millis, Sha256Hex, SipCode, StreamedEvent
from plateau_contracts.topics import Topic

Direction = Literal["inbound", "outbound"]

#: How a hold, resume or transfer was asked for: by the softphone itself (re-INVITE, REFER)
#: or through the ``CallControl`` gRPC API (an agent desktop, an integrator).
ControlSource = Literal["softphone", "api"]


#: Why SIP dialog tags are recorded.
_TAG_WHY = "so that after a restart the gateway can still end the SIP dialog (BYE)."


class RejectReason(StrEnum):
    """Why the gateway refused an inbound call before offering it."""

    NOT_A_TRUNK = "not_a_trunk"  # the source address is on no trunk's allow-list
    OVER_CAPACITY = "over_capacity"  # the trunk is at its concurrent-call limit
    UNKNOWN_DNIS = "unknown_dnis"  # the dialled number maps to no entry point
    MALFORMED = "malformed"  # the INVITE could not be parsed or lacked a mandatory header
    TRUNK_DISABLED = "trunk_disabled"  # the trunk exists but the operator switched it off
    DRAINING = "draining"  # the gateway is shutting down and takes no new calls
    OTHER = "other"  # see ``detail``


class AgentLegFailure(StrEnum):
    """Why ringing an agent's softphone failed before it rang out."""

    BUSY = "busy"  # 486 Busy Here
    DECLINED = "declined"  # 603 Decline: the agent pressed reject
    NOT_REGISTERED = "not_registered"  # no registered contact for the extension
    UNREACHABLE = "unreachable"  # 408/480 or transport failure towards the contact
    OTHER = "other"


class EndCause(StrEnum):
    """Why a call ended."""

    CALLER_HANGUP = "caller_hangup"  # the carrier-side party hung up (the customer)
    AGENT_HANGUP = "agent_hangup"  # the agent's softphone hung up
    API_HANGUP = "api_hangup"  # CallControl.Hangup (acd, dialer or integrator)
    NO_AGENT = "no_agent"  # routing gave up: no agent, unknown entry point, queue closed
    TRANSFERRED_AWAY = "transferred_away"  # a blind transfer handed the call to a number
    NO_ANSWER = "no_answer"  # outbound: the customer did not answer
    BUSY = "busy"  # outbound: the customer's line was busy
    MACHINE = "machine"  # outbound: an answering machine answered and the call was dropped
    COMPLIANCE_ABANDON = "compliance_abandon"  # outbound: live answer, no agent within 2 s
    FAILED = "failed"  # a SIP or network failure set up or kept the call from working
    MEDIA_TIMEOUT = "media_timeout"  # no RTP for too long: a dead leg was torn down
    GATEWAY_RESTART = "gateway_restart"  # the gateway process stopped with the call up
    OTHER = "other"


class EndedBy(StrEnum):
    """Which party ended a call."""

    CALLER = "caller"  # the carrier side: inbound caller or outbound called customer
    AGENT = "agent"
    GATEWAY = "gateway"  # the gateway itself (timeouts, restart, compliance abandon)
    API = "api"  # a CallControl client


class DialRequester(StrEnum):
    """Who asked for an outbound dial."""

    DIALER = "dialer"  # the predictive dialer's pacing loop
    INTEGRATOR = "integrator"  # a CRM or other client of CallControl.Originate
    AGENT_SOFTPHONE = "agent_softphone"  # an agent dialled from the SIP softphone


class DialRefusalReason(StrEnum):
    """Why the gateway refused to dial a number (only injected customer files may be dialled)."""

    NOT_IN_CONTACT_LIST = "not_in_contact_list"  # no allowed contact has this number
    CONTACT_WITHDRAWN = "contact_withdrawn"  # it was allowed once, then withdrawn
    UNKNOWN_CAMPAIGN = "unknown_campaign"
    CAMPAIGN_NOT_RUNNING = "campaign_not_running"  # campaign paused or stopped
    OUTSIDE_CALLING_WINDOW = "outside_calling_window"
    INVALID_NUMBER = "invalid_number"  # not an E.164 number
    UNKNOWN_TENANT = "unknown_tenant"  # no customer file was ever injected for this tenant
    DO_NOT_CALL = "do_not_call"  # on the tenant's do-not-call list, whatever the files say
    OTHER = "other"


class DialOutcome(StrEnum):
    """How the dial phase of an outbound call ended."""

    ANSWERED = "answered"  # a live person answered
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # carrier or network error (4xx/5xx/6xx other than busy, timeouts)
    MACHINE = "machine"  # answering-machine detection classified the answer as a machine


class TransferTarget(BaseModel):
    """Where a blind transfer sends a call: exactly one of agent, queue or number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["agent", "queue", "number"] = Field(description="What kind of target.")
    agent_id: Ident | None = Field(default=None, description="Target agent when `kind=agent`.")
    queue_id: Ident | None = Field(default=None, description="Target queue when `kind=queue`.")
    number: E164 | None = Field(
        default=None,
        description="Target number when `kind=number`; it must be allowed like any dial.",
    )

    @model_validator(mode="after")
    def _exactly_the_named_target(self) -> TransferTarget:
        given = {
            kind
            for kind, value in (
                ("agent", self.agent_id),
                ("queue", self.queue_id),
                ("number", self.number),
            )
            if value is not None
        }
        if given != {self.kind}:
            raise ValueError(f"a `{self.kind}` transfer target sets `{self.kind}` and nothing else")
        return self


class CallEvent(StreamedEvent):
    """Common shape of call events: they all name the call."""

    topic: ClassVar[str] = Topic.CALLS
    stream_prefix: ClassVar[str] = "call"
    stream_key: ClassVar[str] = "call_id"
    call_id: str = Field(description="Plateau call id (the stream is `call-<call_id>`).")


class AgentLegEvent(CallEvent):
    """Common shape of agent-leg events: the call and the agent being reached."""

    agent_id: Ident = Field(description="Agent the acd chose for the call.", examples=["a-1001"])
    extension: str = Field(
        description="SIP extension the agent is logged in on.", examples=["1001"]
    )


# -- inbound admission ------------------------------------------------------------------


@event
class CallOffered(CallEvent):
    """A carrier offered an inbound call on a trunk and the gateway admitted it."""

    event_type: ClassVar[str] = "call.offered"
    direction: Direction = Field(
        default="inbound", description="Always `inbound` for an offered call."
    )
    ani: str = Field(
        description="Calling number (caller id) as received.", examples=["+242066123456"]
    )
    dnis: str = Field(description="Dialled number (entry point).", examples=["+242053000100"])
    trunk: str = Field(description="Name of the trunk the call arrived on.")
    sip_call_id: str = Field(description="SIP Call-ID of the carrier leg.")
    sip_remote_tag: str | None = Field(
        default=None, description="From-tag the carrier chose for the leg, " + _TAG_WHY
    )
    sip_local_tag: str | None = Field(
        default=None, description="To-tag the gateway chose for the leg, " + _TAG_WHY
    )


@event
class CallRejected(CallEvent):
    """The gateway refused an inbound INVITE with a final error response."""

    event_type: ClassVar[str] = "call.rejected"
    reason: RejectReason = Field(description="Why the call was refused.")
    sip_code: SipCode = Field(description="Final SIP response sent.", examples=[503])
    source: str = Field(
        description="Transport address the INVITE came from (`host:port`).",
        examples=["10.10.0.5:5060"],
    )
    trunk: str | None = Field(
        default=None, description="Trunk the source belongs to; null when `not_a_trunk`."
    )
    ani: str | None = Field(default=None, description="Calling number, when it could be read.")
    dnis: str | None = Field(default=None, description="Dialled number, when it could be read.")
    sip_call_id: str | None = Field(default=None, description="SIP Call-ID, when present.")
    retry_after_s: int | None = Field(
        default=None, ge=0, description="Retry-After sent with a 503 (over capacity)."
    )
    detail: str | None = Field(
        default=None,
        description="Human-readable explanation (e.g. the parse error).",
        examples=["trunk mno at 45/45 calls"],
    )


# -- agent leg --------------------------------------------------------------------------


@event
class AgentRinging(AgentLegEvent):
    """The gateway sent the call to an agent's softphone and it is ringing."""

    event_type: ClassVar[str] = "call.agent_ringing"
    contact: str = Field(
        description="Registered SIP contact the INVITE went to.",
        examples=["sip:1001@192.0.2.10:5062;transport=udp"],
    )
    sip_call_id: str = Field(description="SIP Call-ID of the agent leg.")
    sip_local_tag: str | None = Field(
        default=None, description="From-tag the gateway chose for the agent leg, " + _TAG_WHY
    )
    queue_id: Ident | None = Field(
        default=None, description="Queue the call was routed from, as given by ConnectAgent."
    )


@event
class AgentNoAnswer(AgentLegEvent):
    """The agent's softphone rang for the whole ring timeout without answering (RONA)."""

    event_type: ClassVar[str] = "call.agent_no_answer"
    rang_ms: Millis = Field(description="How long the softphone rang.", examples=[15000])
    sip_call_id: str | None = Field(default=None, description="SIP Call-ID of the agent leg.")


@event
class AgentRejected(AgentLegEvent):
    """Ringing the agent failed: busy, declined, not registered or unreachable."""

    event_type: ClassVar[str] = "call.agent_rejected"
    reason: AgentLegFailure = Field(description="Why the agent leg failed.")
    sip_code: SipCode | None = Field(
        default=None, description="Final SIP response from the softphone, if one came."
    )
    sip_call_id: str | None = Field(default=None, description="SIP Call-ID of the agent leg.")


@event
class CallConnected(AgentLegEvent):
    """The agent answered and the customer and the agent are talking."""

    event_type: ClassVar[str] = "call.connected"
    queue_id: Ident | None = Field(
        default=None, description="Queue the call was routed from, as given by ConnectAgent."
    )
    media: Literal["direct", "anchored"] = Field(
        default="direct",
        description="`direct`: RTP flows end to end; `anchored`: through the media relay.",
    )


@event
class CallHeld(CallEvent):
    """The agent put the customer on hold."""

    event_type: ClassVar[str] = "call.held"
    agent_id: Ident = Field(description="Agent holding the call.")
    via: ControlSource = Field(description="Whether the softphone or the API asked for it.")


@event
class CallResumed(CallEvent):
    """The agent took the customer off hold."""

    event_type: ClassVar[str] = "call.resumed"
    agent_id: Ident = Field(description="Agent resuming the call.")
    via: ControlSource = Field(description="Whether the softphone or the API asked for it.")


@event
class CallTransferred(CallEvent):
    """The call was blind-transferred away from its current agent."""

    event_type: ClassVar[str] = "call.transferred"
    agent_id: Ident | None = Field(
        default=None, description="Agent who transferred the call, if one was on it."
    )
    target: TransferTarget = Field(description="Where the call was sent.")
    via: ControlSource = Field(description="Whether the softphone or the API asked for it.")


@event
class CallEnded(CallEvent):
    """The call is over: every leg is torn down."""

    event_type: ClassVar[str] = "call.ended"
    cause: EndCause = Field(description="Why the call ended.")
    ended_by: EndedBy = Field(description="Which party ended it.")
    sip_code: SipCode | None = Field(
        default=None,
        description="SIP status that ended it, when a response ended it (not a BYE).",
        examples=[486],
    )
    agent_id: Ident | None = Field(default=None, description="Agent connected at the end, if any.")


# -- outbound ---------------------------------------------------------------------------


@event
class CallOriginated(CallEvent):
    """The gateway placed an allowed outbound call towards the carrier."""

    event_type: ClassVar[str] = "call.originated"
    direction: Direction = Field(
        default="outbound", description="Always `outbound` for an originated call."
    )
    campaign_id: Ident = Field(description="Campaign the contact belongs to.")
    contact_id: Ident = Field(description="Contact being called (the stream `contact-<id>`).")
    attempt_id: Ident = Field(description="Dialer's id of this dial attempt.")
    number: E164 = Field(description="Number dialled.")
    list_version: int = Field(
        ge=1, description="Contact-list version that allowed the number at dial time."
    )
    caller_id: E164 | None = Field(default=None, description="Number presented to the customer.")
    trunk: str = Field(description="Trunk the call leaves on.")
    requested_by: DialRequester = Field(description="Who asked for the dial.")
    agent_id: Ident | None = Field(
        default=None, description="Agent to connect on answer (preview or manual dial)."
    )
    sip_call_id: str = Field(description="SIP Call-ID of the carrier leg.")
    sip_local_tag: str | None = Field(
        default=None, description="From-tag the gateway chose for the carrier leg, " + _TAG_WHY
    )
    agent_leg_sip_call_id: str | None = Field(
        default=None,
        description="SIP Call-ID of the agent's own leg when an agent dialled from the softphone.",
    )
    agent_extension: str | None = Field(
        default=None,
        description="Extension of the softphone that dialled, when an agent dialled from it.",
        examples=["1001"],
    )


@event
class DialRefused(CallEvent):
    """The gateway refused to dial a number and dialled nothing."""

    event_type: ClassVar[str] = "call.dial_refused"
    number: str = Field(
        description="Number as requested (not necessarily valid E.164).",
        examples=["+242069999999"],
    )
    requested_by: DialRequester = Field(description="Who asked for the dial.")
    requester: str = Field(
        description=(
            "Identity of the requester: the softphone's extension, the integrator's client id, "
            "or `dialer`."
        ),
        examples=["1001"],
    )
    reason: DialRefusalReason = Field(description="Why the dial was refused.")
    campaign_id: Ident | None = Field(default=None, description="Campaign named, if any.")
    contact_id: Ident | None = Field(default=None, description="Contact named, if any.")
    attempt_id: Ident | None = Field(default=None, description="Dial attempt named, if any.")
    sip_code: SipCode | None = Field(
        default=None, description="SIP response sent to a softphone (e.g. 403); null for gRPC."
    )
    detail: str | None = Field(default=None, description="Human-readable explanation.")


@event
class DialCompleted(CallEvent):
    """The dial phase of an originated call finished with an outcome."""

    event_type: ClassVar[str] = "call.dial_completed"
    outcome: DialOutcome = Field(description="How the dial ended.")
    campaign_id: Ident = Field(description="Campaign the call was placed for.")
    attempt_id: Ident = Field(description="Dialer's id of the dial attempt.")
    sip_code: SipCode | None = Field(
        default=None, description="Final SIP response for unsuccessful outcomes.", examples=[486]
    )
    ring_ms: Millis | None = Field(
        default=None, description="Time from the first provisional response to the outcome."
    )


@event
class ComplianceAbandoned(CallEvent):
    """A live answer got no agent within the compliance limit and the gateway dropped it."""

    event_type: ClassVar[str] = "call.compliance_abandoned"
    campaign_id: Ident = Field(description="Campaign it counts against.")
    attempt_id: Ident = Field(description="Dialer's id of the dial attempt.")
    waited_ms: Millis = Field(description="Time from answer to drop.", examples=[2000])
    message_played: bool = Field(
        description="Whether the compliance message was played (needs the media relay)."
    )


# -- media ------------------------------------------------------------------------------


@event
class MediaAnchored(CallEvent):
    """The call's media now flows through the media relay."""

    event_type: ClassVar[str] = "call.media_anchored"
    relay: Literal["rtpengine"] = Field(default="rtpengine", description="Media relay used.")
    codec: str = Field(description="Negotiated audio codec.", examples=["PCMA"])


@event
class RecordingStarted(CallEvent):
    """The media relay started recording the call."""

    event_type: ClassVar[str] = "call.recording_started"
    recording_id: Ident = Field(description="Id of the recording.")


@event
class RecordingStopped(CallEvent):
    """A call recording finished and was stored."""

    event_type: ClassVar[str] = "call.recording_stopped"
    recording_id: Ident = Field(description="Id of the recording.")
    duration_ms: Millis = Field(description="Length of the recording.")
    sha256: Sha256Hex | None = Field(
        default=None, description="Digest of the stored file, for tamper evidence."
    )


# -- registrations ----------------------------------------------------------------------


class ExtensionEvent(StreamedEvent):
    """Common shape of softphone registration facts: they name the extension."""

    topic: ClassVar[str] = Topic.CALLS
    stream_prefix: ClassVar[str] = "extension"
    stream_key: ClassVar[str] = "extension"
    extension: str = Field(description="SIP extension (user part).", examples=["1001"])


@event
class ExtensionRegistered(ExtensionEvent):
    """A softphone registered (or refreshed) its contact for an extension."""

    event_type: ClassVar[str] = "extension.registered"
    contact: str = Field(
        description="Registered contact URI.", examples=["sip:1001@192.0.2.10:5062"]
    )
    expires_s: int = Field(ge=0, description="Registration lifetime granted, in seconds.")
    user_agent: str | None = Field(default=None, description="The softphone's User-Agent.")


@event
class ExtensionUnregistered(ExtensionEvent):
    """An extension no longer has a registered contact: calls to it cannot ring."""

    event_type: ClassVar[str] = "extension.unregistered"
    reason: Literal["unregistered", "expired", "gateway_restart"] = Field(
        description="Explicit de-registration, lapsed lifetime, or registrar restart."
    )
