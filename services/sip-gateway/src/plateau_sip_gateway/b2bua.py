"""The B2BUA: SIP requests and responses in, call commands to the domain, SIP effects out.

Each call has a carrier leg (the gateway is its UAS) and at most one agent leg at a time
(the gateway is its UAC). Every SIP fact is turned into a ``domain.call`` command;
``decide`` says what to record, the recorder appends it (in order, per call), and this
module sends what the decision implies on the other leg:

* trunk INVITE -> classify, admit -> ``call.offered``, 180 Ringing (ringback while queued);
  refusals -> final 403/404/503 and ``call.rejected``;
* ``connect_agent`` -> INVITE with the caller's SDP to the agent's registered contact,
  ``call.agent_ringing``; 200 -> ACK it, 200 to the caller with the agent's SDP,
  ``call.connected``; 486/603/480... -> ``call.agent_rejected``; ring timeout -> CANCEL,
  ``call.agent_no_answer``; both leave the caller waiting with ringback;
* caller CANCEL -> CANCEL the ringing agent, 487, ``call.ended``;
* BYE from either side -> BYE the other, ``call.ended``; ``hangup`` ends every leg;
* ``originate`` (an allowed number only) -> INVITE without SDP to the tenant's trunk,
  ``call.originated``; the customer's 200 carries the SDP offer and its ACK waits for an
  agent's answer (RFC 3725 flow I), so the customer is never answered with media that
  goes nowhere; ``call.dial_completed``; no agent connected within 2 s -> the answer is
  ACKed with every stream refused, BYE, ``call.compliance_abandoned``;
* an agent's softphone dialling an allowed number -> the same INVITE to the trunk, with the
  softphone's SDP; provisional and final responses are relayed back to it;
* ``hold``/``resume`` -> re-INVITE of the customer (every stream inactive, then the agent's
  SDP again); ``transfer`` -> to an agent or a queue the gateway releases the agent leg and
  the call waits again (the new agent's SDP reaches the customer in a re-INVITE); to a
  number the customer's leg is REFERred to the carrier (RFC 3515) and leaves Plateau. A
  softphone's own REFER takes the same path.

Media goes through :class:`~plateau_sip_gateway.media.calls.CallMedia`. Signalling-only, SDP
passes through. With rtpengine, a queued caller whose entry point plays a greeting or music
gets a 183 with early media; the agent's INVITE and the customer's 200 (or held ACK) carry
anchored SDP; calls are recorded per entry point; an outbound abandon hears the compliance
message before the BYE; the media is released when the call ends. Either way the
customer-facing ``o=`` line is re-stamped so the customer sees one session however many
agents it meets (``sdp.Origin``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Set
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from plateau_contracts.events.calls import (
    CallEnded,
    CallOffered,
    CallOriginated,
    DialOutcome,
    DialRequester,
    EndCause,
    TransferTarget,
)
from plateau_runtime.eventstore import EventStore
from plateau_sip_gateway.adapters.recorder import Recorder
from plateau_sip_gateway.domain.admission import Admission, AdmissionToken
from plateau_sip_gateway.domain.allowlist import Allowed, AllowList, Refused
from plateau_sip_gateway.domain.call import (
    TALKING_PHASES,
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
    close_for_restart,
    decide,
    evolve,
    fold,
)
from plateau_sip_gateway.domain.peers import SharedBindings
from plateau_sip_gateway.domain.registrar import Registrar
from plateau_sip_gateway.domain.trunks import InboundRefused, TrunkDirectory
from plateau_sip_gateway.media import MediaError, SignallingOnlyMedia
from plateau_sip_gateway.media.calls import CallMedia
from plateau_sip_gateway.sdp import Origin, is_hold, rejecting_answer, with_direction
from plateau_sip_gateway.settings import OutboundProxy
from plateau_sip_gateway.sip import Headers, SipRequest, SipResponse, SipUri, parse_uri
from plateau_sip_gateway.sip.endpoint import Destination, Endpoint
from plateau_sip_gateway.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from plateau_sip_gateway.sip.transport import Source, is_ip_literal

log = structlog.get_logger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, NOTIFY"
COMPLIANCE_WINDOW_S = 2.0
"""A live outbound answer must reach an agent within this, or it is abandoned (DESIGN §4)."""
DIAL_RING_TIMEOUT_S = 30.0
IN_DIALOG_TIMEOUT_S = 40.0  # longer than Timer B/F: the transaction always ends first


# A call's stream opens with one of these and, once over, holds the closing event.
_CALL_OPENERS = (CallOffered.event_type, CallOriginated.event_type)
_CALL_CLOSERS = (CallEnded.event_type,)


class CallNotFoundError(LookupError):
    """No open call with that id for that tenant."""


class GatewayNotReadyError(RuntimeError):
    """SIP is not listening yet (the gateway is starting or stopping)."""


class NoOutboundTrunkError(RuntimeError):
    """The tenant has no enabled trunk with an outbound address to dial on."""


class TrunkFullError(RuntimeError):
    """The trunk has no free slot for another call (admission control)."""


class SessionChangeError(RuntimeError):
    """The customer refused a re-INVITE or REFER, or another one is under way."""


@dataclass
class Dialog:
    """One side of a call as a SIP dialog: what in-dialog requests need."""

    sip_call_id: str
    local: str  # our name-addr (no tag)
    local_tag: str
    remote: str  # the peer's name-addr (no tag)
    remote_tag: str | None
    target: str  # the peer's Contact URI
    destination: Destination
    routes: tuple[str, ...] = ()
    cseq: int = 1
    # Where the peer's own requests come from, when not from ``destination`` (an agent
    # reached through the edge proxy: its requests arrive relayed, from its own address).
    peer_host: str | None = None

    @property
    def from_host(self) -> str:
        """The host the peer's in-dialog requests come from (their real source)."""
        return self.peer_host or self.destination.host

    def request(self, method: str) -> SipRequest:
        """A new in-dialog request (BYE...) with the next CSeq."""
        self.cseq += 1
        return self._build(method, self.cseq)

    def ack(self, cseq: int) -> SipRequest:
        """The ACK of a 2xx to the INVITE with ``cseq``."""
        return self._build("ACK", cseq)

    def _build(self, method: str, cseq: int) -> SipRequest:
        remote = f"{self.remote};tag={self.remote_tag}" if self.remote_tag else self.remote
        fields = [
            ("From", f"{self.local};tag={self.local_tag}"),
            ("To", remote),
            ("Call-ID", self.sip_call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        fields.extend(("Route", route) for route in self.routes)
        return SipRequest(method, parse_uri(self.target), Headers(fields))


@dataclass
class Call:
    """A call in progress: its recorded state and its live SIP legs.

    ``caller`` is the customer's leg whatever the direction: the caller of an inbound call,
    the called party of an outbound one. Exactly one of ``invite`` (inbound: the gateway
    is the customer leg's UAS) and ``dial`` (outbound: its UAC) is set.
    """

    tenant: str
    state: CallState
    caller: Dialog
    token: AdmissionToken | None
    invite: InviteServerTransaction | None = None
    dial: InviteClientTransaction | None = None
    version: int = 0
    agent_tx: InviteClientTransaction | None = None
    agent: Dialog | None = None
    ring_task: asyncio.Task[None] | None = None  # the agent's or the dialled customer's
    compliance_task: asyncio.Task[None] | None = None  # outbound: 2 s to connect an agent
    ring_started: float = 0.0
    legs: set[str] = field(default_factory=set)  # agent legs' SIP Call-IDs
    reinviting: bool = False  # a re-INVITE is being relayed (another one gets 491)
    customer_sdp: tuple[bytes, str | None] = (b"", None)  # the customer's latest SDP
    agent_sdp: tuple[bytes, str | None] = (b"", None)  # the connected agent's latest SDP
    origin: Origin = field(default_factory=Origin)  # the customer-facing o= line
    # Outbound, RFC 3725 flow I: the customer's 2xx whose ACK (carrying the agent's SDP
    # answer) waits until an agent answers; then the ACK that was sent, for retransmissions.
    unacked: SipResponse | None = None
    customer_ack: SipRequest | None = None
    answered_at: float = 0.0
    dial_given_up: bool = False  # the ring timeout CANCELled the dial
    softphone: InviteServerTransaction | None = None  # an agent's own dial: its INVITE
    entry_point: str | None = None  # inbound: the trunk's entry point, whose media plays

    @property
    def call_id(self) -> str:
        assert self.state.call_id is not None
        return self.state.call_id


def _destination(source: Source) -> Destination:
    """Where requests back to a request's sender go: the edge proxy it came through, if
    any (its Record-Route brings them back there), else the sender itself."""
    host, port = source.relay or source.remote
    return Destination(source.transport, host, port)


def _uri_destination(uri: object, default_transport: str) -> Destination | None:
    """Where to send for a SIP URI whose host is an IP literal (over its ``transport``
    parameter, else ``default_transport``); None for any other URI."""
    if not isinstance(uri, SipUri) or not is_ip_literal(uri.host):
        return None
    transport = (uri.params.get("transport") or default_transport).upper()
    return Destination(
        transport if transport in ("UDP", "TCP") else "UDP",
        uri.host.strip("[]"),
        uri.port or 5060,
    )


def _hop(uri_text: str) -> Destination | None:
    """The address of a Path hop ``<sip:10.0.0.5:5080;lr>``, None unless an IP literal."""
    try:
        uri = parse_uri(uri_text.strip().lstrip("<").split(">")[0])
    except ValueError:
        return None
    return _uri_destination(uri, "UDP")


def with_auto_answer(invite: SipRequest, host: str) -> SipRequest:
    """``invite`` asking the phone to answer at once: RFC 7462's alert URN, and the
    Call-Info ``answer-after=0`` the common softphones and desk phones honour."""
    return invite.with_header("Alert-Info", "<urn:alert:service:auto-answer>").with_header(
        "Call-Info", f"<sip:{host}>;answer-after=0"
    )


def _dial_outcome(status: int) -> DialOutcome:
    """What the carrier's final error to a dial means for the campaign."""
    if status in (486, 600):
        return DialOutcome.BUSY
    if status in (408, 480, 487):
        return DialOutcome.NO_ANSWER
    return DialOutcome.FAILED


def _sdp(message: SipRequest | SipResponse) -> tuple[bytes, str | None]:
    content_type = message.headers.get("Content-Type")
    return message.body, content_type


class B2bua:
    """The application layer of the gateway's calls (one event loop owns it)."""

    def __init__(
        self,
        *,
        trunks: TrunkDirectory,
        admission: Admission,
        registrar: Registrar | SharedBindings,
        allowlist: AllowList,
        recorder: Recorder,
        ring_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        new_call_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        unknown_source_tenant: str = "demo",
        media: CallMedia | None = None,
        on_open: Callable[[str, str], asyncio.Future[None]] | None = None,
        outbound_proxy: OutboundProxy | None = None,
    ) -> None:
        self.trunks = trunks
        self.admission = admission
        self.registrar = registrar
        self.allowlist = allowlist
        self.recorder = recorder
        self.ring_timeout_s = ring_timeout_s
        self._clock = clock
        self._new_call_id = new_call_id
        self.unknown_source_tenant = unknown_source_tenant
        # Several replicas: told ``(tenant, call_id)`` of each call this one opens; the
        # call's facts are recorded once what it returns is done (the owner is recorded).
        self.on_open = on_open
        # The edge proxy requests outside a dialog leave through, and its Route (lr).
        self.outbound_proxy = outbound_proxy
        # The gateway attaches the real one at start, once it knows whether rtpengine answers.
        self.media = media or CallMedia(SignallingOnlyMedia("media not started yet"))
        self._endpoint: Endpoint | None = None
        self._calls: dict[str, Call] = {}
        self._by_sip_call_id: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Which agent the acd last connected on each extension: how a softphone's own dial
        # or REFER names its agent (the gateway knows extensions, the acd knows agents).
        self._agent_on_extension: dict[str, str] = {}

    # -- life cycle --------------------------------------------------------------------

    def attach(self, endpoint: Endpoint | None) -> None:
        """The endpoint SIP goes through (None while not listening)."""
        self._endpoint = endpoint

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise GatewayNotReadyError("SIP is not listening yet; retry in a moment")
        return self._endpoint

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    async def close_open_calls(
        self,
        store: EventStore,
        held_elsewhere: Callable[[list[str]], Awaitable[Set[str]]] | None = None,
    ) -> int:
        """Close every call the store still shows open (``gateway_restart``); how many.

        Only the streams that started and never ended are read, so a restart does not
        replay the whole history (the gateway's migration indexes events by type). The
        calls ``held_elsewhere`` picks among them (other replicas') are left alone."""
        from plateau_contracts.catalogue import parse

        open_streams = await store.unfinished_streams(_CALL_OPENERS, _CALL_CLOSERS)
        others: Set[str] = frozenset()
        if held_elsewhere is not None and open_streams:
            others = await held_elsewhere([s.removeprefix("call-") for s, _ in open_streams])
        closed = 0
        for stream, tenant in open_streams:
            if stream.removeprefix("call-") in others:
                continue
            stored = await store.read_stream(stream)
            try:
                state = fold(parse(e.envelope) for e in stored)  # type: ignore[misc]
                ending = close_for_restart(state)
            except CallDomainError:
                log.exception("sip_gateway.corrupt_call_stream", stream=stream)
                continue
            if ending:
                await self.recorder.append(tenant, ending, expected_version=len(stored))
                closed += 1
        if closed:
            log.warning("sip_gateway.closed_for_restart", calls=closed)
        return closed

    async def stop(self) -> None:
        """Cancel timers; calls in progress are closed at the next start."""
        for call in list(self._calls.values()):
            for timer in (call.ring_task, call.compliance_task):
                if timer is not None:
                    timer.cancel()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_gateway.call_task_failed", exc_info=task.exception())

    # -- recording ---------------------------------------------------------------------

    def _apply(
        self, call: Call, command: Command, after: asyncio.Future[None] | None = None
    ) -> list[Event]:
        """Decide ``command`` on ``call``, record the events (once ``after`` is done),
        update the call."""
        events = decide(call.state, command)
        for event in events:
            call.state = evolve(call.state, event)
        self.recorder.record(call.tenant, events, expected_version=call.version, after=after)
        call.version += len(events)
        if call.state.phase is Phase.ENDED:
            self._forget(call)
        return events

    def _forget(self, call: Call) -> None:
        self._calls.pop(call.call_id, None)
        for sip_call_id in (call.caller.sip_call_id, *call.legs):
            self._by_sip_call_id.pop(sip_call_id, None)
        if call.token is not None:
            self.admission.release(call.token)
            call.token = None
        for task in (call.ring_task, call.compliance_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        # The call and its timers refer to each other: let go now rather than at the next
        # garbage collection (a busy gateway keeps its heap small this way).
        call.ring_task = call.compliance_task = None
        if self.media.available:
            self._spawn(self.media.release(call.call_id))

    def _record_alone(self, tenant: str, command: RecordRejection | RecordDialRefusal) -> None:
        events = decide(CallState(), command)
        self.recorder.record(tenant, events, expected_version=0)

    # -- inbound -----------------------------------------------------------------------

    def inbound(self, tx: InviteServerTransaction, source: Source) -> None:
        """A new INVITE from a carrier's address (or not: then 403)."""
        request = tx.request
        host = source.remote[0]
        dnis = request.uri.user if isinstance(request.uri, SipUri) else None
        from_uri = request.from_.uri
        ani = (from_uri.user if isinstance(from_uri, SipUri) else None) or "anonymous"
        decision = self.trunks.classify(host, dnis)
        if isinstance(decision, InboundRefused):
            self._refuse(tx, decision, source, ani, dnis)
            return
        admitted = self.admission.admit(decision.trunk.name)
        if isinstance(admitted, InboundRefused):
            refused = InboundRefused(
                admitted.reason,
                admitted.sip_code,
                admitted.detail,
                trunk=admitted.trunk,
                tenant=decision.tenant,
                retry_after_s=admitted.retry_after_s,
            )
            self._refuse(tx, refused, source, ani, decision.dnis)
            return
        contact = request.contacts[0].uri if request.contacts else request.from_.uri
        local = f"<{request.to.uri}>"
        caller = Dialog(
            sip_call_id=request.call_id,
            local=local,
            local_tag=tx.to_tag or self.endpoint.new_tag(),
            remote=f"<{from_uri}>",
            remote_tag=request.from_.tag,
            target=str(contact),
            destination=_destination(source),
            routes=tuple(str(r) for r in request.record_routes),
            cseq=0,
        )
        call = Call(
            decision.tenant,
            CallState(),
            caller,
            admitted,
            invite=tx,
            customer_sdp=_sdp(request),
            entry_point=decision.entry_point,
        )
        call_id = self._new_call_id()
        self._apply(
            call,
            OfferCall(
                call_id=call_id,
                trunk=decision.trunk.name,
                ani=ani,
                dnis=decision.dnis,
                sip_call_id=request.call_id,
            ),
            after=self.on_open(decision.tenant, call_id) if self.on_open is not None else None,
        )
        self._calls[call.call_id] = call
        self._by_sip_call_id[request.call_id] = call
        tx.on_cancel = lambda cancel: self._caller_cancelled(call, cancel)
        tx.respond(tx.create_response(180))
        if self.media.available and self.media.queue(call.entry_point).plays:
            self._spawn(self._early_media(call))

    async def _early_media(self, call: Call) -> None:
        """The queue answers with early media: a 183 whose SDP plays greeting then music."""
        offer, _ = call.customer_sdp
        if not offer:
            return  # an INVITE without an offer: ringback only
        answer = await self.media.hold_in_queue(call.call_id, call.entry_point, offer.decode())
        invite = call.invite
        if answer is None or invite is None or invite.final_sent:
            return  # ringback, or the call was answered or ended meanwhile
        if call.state.phase is Phase.ENDED:
            return  # _forget releases the media
        # Stamped like every SDP the customer gets; the 200 repeats it (same body, same o=).
        body, content_type = self._to_customer(call, (answer.encode(), "application/sdp"))
        invite.respond(invite.create_response(183).with_body(body, content_type))

    def _refuse(
        self,
        tx: InviteServerTransaction,
        refused: InboundRefused,
        source: Source,
        ani: str | None,
        dnis: str | None,
    ) -> None:
        headers: tuple[tuple[str, str], ...] = ()
        if refused.retry_after_s is not None:
            headers = (("Retry-After", str(refused.retry_after_s)),)
        tx.respond(tx.create_response(refused.sip_code, headers=headers))
        host, port = source.remote
        event = refused.to_event(
            self._new_call_id(),
            source=f"{host}:{port}",
            ani=ani,
            dnis=dnis,
            sip_call_id=tx.request.call_id,
        )
        if refused.retry_after_s is not None:
            event = event.model_copy(update={"retry_after_s": refused.retry_after_s})
        # A refusal from an unknown address belongs to no tenant's trunk: it is recorded
        # under the gateway's own tenant so operators see scans and misrouted carriers.
        self._record_alone(refused.tenant or self.unknown_source_tenant, RecordRejection(event))
        log.info("sip_gateway.call_rejected", reason=refused.reason, code=refused.sip_code)

    def _caller_cancelled(self, call: Call, cancel: NonInviteServerTransaction) -> None:
        cancel.respond(cancel.create_response(200))
        assert call.invite is not None
        if call.invite.final_sent or call.state.phase is Phase.ENDED:
            return
        call.invite.respond(call.invite.create_response(487))
        self._cancel_agent(call)
        self._apply(call, HangUpByCaller())

    # -- agent leg ---------------------------------------------------------------------

    def find(self, tenant: str, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None or call.tenant != tenant:
            raise CallNotFoundError(f"no call {call_id} in progress for tenant {tenant}")
        return call

    def connect_agent(
        self,
        tenant: str,
        call_id: str,
        *,
        agent_id: str,
        extension: str,
        queue_id: str | None = None,
        ring_timeout_s: float | None = None,
    ) -> str:
        """Ring the agent's registered contact; the agent leg's SIP Call-ID ('' if none)."""
        endpoint = self.endpoint
        call = self.find(tenant, call_id)
        if call.state.phase is not Phase.WAITING:
            # Let the domain word the refusal (FAILED_PRECONDITION with the phase).
            decide(call.state, RingAgent(agent_id, extension, "", ""))
        bindings = self.registrar.lookup(extension, self._clock())
        if not bindings:
            self._apply(call, ReportAgentUnavailable(agent_id, extension))
            return ""
        binding = max(bindings, key=lambda b: (b.q or 0.0, b.updated_at))
        contact = parse_uri(binding.contact)
        routes: tuple[str, ...] = ()
        peer_host = binding.source[0] if binding.source is not None else None
        path_hop = _hop(binding.path[0]) if binding.path else None
        direct = _uri_destination(contact, binding.transport)
        if path_hop is not None:
            # Registered through the edge (RFC 3327): the INVITE goes to the first Path hop
            # with the Path as its Route set, so it reaches the phone's NAT binding.
            destination, routes = path_hop, binding.path
        elif self.outbound_proxy is not None:
            destination, routes = self.outbound_proxy.next_hop, (self.outbound_proxy.route,)
            if peer_host is None and isinstance(contact, SipUri):
                peer_host = contact.host.strip("[]")
        elif direct is not None:
            destination = direct
        elif binding.source is not None:
            destination = Destination(binding.transport, *binding.source)
        else:
            self._apply(call, ReportAgentUnavailable(agent_id, extension))
            return ""
        sip_call_id = f"{uuid.uuid4().hex}@plateau"
        host = endpoint.advertised_host
        port = endpoint.local_address(destination.transport)[1]
        ani = call.state.ani or "anonymous"
        dialog = Dialog(
            sip_call_id=sip_call_id,
            local=f"<sip:{ani}@{host}>",
            local_tag=endpoint.new_tag(),
            remote=f"<sip:{extension}@{host}>",
            remote_tag=None,
            target=binding.contact,
            destination=destination,
            routes=routes,
            peer_host=peer_host if routes else None,
        )
        invite = dialog._build("INVITE", 1).with_header("Contact", f"<sip:gw@{host}:{port}>")
        if call.state.direction == "outbound":
            # A customer who answered a dialled call must hear an agent within the
            # compliance window (2 s): the agent's phone is asked to answer at once, as
            # dialler agents' phones are.
            invite = with_auto_answer(invite, host)
        body, content_type = call.customer_sdp
        self._apply(
            call, RingAgent(agent_id, extension, binding.contact, sip_call_id, queue_id or None)
        )
        self._agent_on_extension[extension] = agent_id
        call.agent = dialog
        call.legs.add(sip_call_id)
        self._by_sip_call_id[sip_call_id] = call
        call.ring_started = time.monotonic()
        timeout = ring_timeout_s or self.ring_timeout_s
        call.ring_task = asyncio.create_task(self._ring_timer(call, sip_call_id, timeout))
        if body and self.media.available:
            # The agent is offered rtpengine's SDP, which takes a round trip to get.
            self._spawn(self._invite_agent_anchored(call, invite, dialog, body))
        else:
            if body:
                invite = invite.with_body(body, content_type or "application/sdp")
            self._invite_agent(call, invite, dialog)
        return sip_call_id

    async def _invite_agent_anchored(
        self, call: Call, invite: SipRequest, dialog: Dialog, customer_offer: bytes
    ) -> None:
        offer = await self.media.offer_to_agent(call.call_id, customer_offer.decode())
        if not self._ringing(call, dialog.sip_call_id):
            # CANCEL, hang-up or ring timeout while rtpengine answered: never sent. A call
            # that ended meanwhile must not keep what the offer just anchored.
            if call.state.phase is Phase.ENDED:
                await self.media.release(call.call_id)
            return
        self._invite_agent(call, invite.with_body(offer.encode(), "application/sdp"), dialog)

    def _invite_agent(self, call: Call, invite: SipRequest, dialog: Dialog) -> None:
        tx = self.endpoint.send_request(invite, dialog.destination)
        assert isinstance(tx, InviteClientTransaction)
        tx.on_response = self._reack(dialog)
        call.agent_tx = tx
        self._spawn(self._follow_agent(call, tx, dialog))

    def _ringing(self, call: Call, sip_call_id: str) -> bool:
        leg = call.state.agent
        return (
            call.state.phase is Phase.AGENT_RINGING
            and leg is not None
            and leg.sip_call_id == sip_call_id
        )

    async def _ring_timer(self, call: Call, sip_call_id: str, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if not self._ringing(call, sip_call_id):
            return
        rang_ms = int((time.monotonic() - call.ring_started) * 1000)
        self._cancel_agent(call)
        self._apply(call, ExpireAgentRing(sip_call_id, rang_ms))

    def _cancel_agent(self, call: Call) -> None:
        """CANCEL the ringing agent leg (in the background: it waits for a 1xx first)."""
        tx, dialog = call.agent_tx, call.agent
        if tx is None or dialog is None or call.state.phase is not Phase.AGENT_RINGING:
            return
        if call.ring_task is not None and call.ring_task is not asyncio.current_task():
            call.ring_task.cancel()
        call.agent_tx = None
        self._spawn(self._send_cancel(tx, dialog.destination))

    async def _send_cancel(self, tx: InviteClientTransaction, destination: Destination) -> None:
        async with asyncio.timeout(40):
            await self.endpoint.cancel(tx, destination)

    async def _follow_agent(self, call: Call, tx: InviteClientTransaction, dialog: Dialog) -> None:
        """Act on the agent leg's responses until its final one (and 2xx retransmissions)."""
        async with contextlib.aclosing(tx.responses()) as responses:
            async for response in responses:
                if response.is_final:
                    self._agent_final(call, tx, dialog, response)

    def _agent_final(
        self,
        call: Call,
        tx: InviteClientTransaction,
        dialog: Dialog,
        response: SipResponse,
    ) -> None:
        if 200 <= response.status < 300:
            dialog.remote_tag = response.to.tag
            if response.contacts:
                dialog.target = str(response.contacts[0].uri)
            dialog.routes = tuple(str(r) for r in reversed(response.record_routes))
            self.endpoint.send_raw(dialog.ack(1), dialog.destination)
            if not self._ringing(call, dialog.sip_call_id):
                # Answered after the gateway gave up on it (CANCEL crossed the 200).
                self._spawn(self._bye(dialog))
                return
            if call.ring_task is not None:
                call.ring_task.cancel()
            try:
                self._apply(call, BridgeAgent(dialog.sip_call_id))
            except StaleAgentLegError:
                self._spawn(self._bye(dialog))
                return
            if self.media.available:
                self._spawn(self._bridge_customer_anchored(call, response))
                return
            call.agent_sdp = _sdp(response)
            self._bridge_customer(call)
            return
        if not self._ringing(call, dialog.sip_call_id):
            return  # the 487 to our own CANCEL, or a leg already given up
        if call.ring_task is not None:
            call.ring_task.cancel()
        call.agent_tx = None
        self._apply(call, FailAgentLeg(dialog.sip_call_id, response.status))

    async def _bridge_customer_anchored(self, call: Call, agent_answer: SipResponse) -> None:
        """Bridge with rtpengine's SDP for the customer, then record if the entry point does.

        ``agent_sdp`` holds what the customer is given for the agent side (rtpengine's), so
        hold, resume and transfers re-offer the anchored address, never the agent's own.
        """
        body, _ = _sdp(agent_answer)
        try:
            answer = await self.media.agent_answered(call.call_id, body.decode())
        except MediaError:
            log.exception("sip_gateway.media_failed_at_answer", call_id=call.call_id)
            if call.state.phase is Phase.ENDED:
                return
            self._apply(call, TearDown(EndCause.FAILED, sip_code=503))
            self._release_customer(call, call.state.customer_answered, 503)
            if call.agent is not None:
                self._spawn(self._bye(call.agent))
            return
        if call.state.phase is Phase.ENDED:
            return
        call.agent_sdp = (answer.encode(), "application/sdp")
        self._bridge_customer(call)
        try:
            await self.media.record(call.call_id, call.entry_point)
        except MediaError:
            # The call goes on unrecorded; the log says which call missed its recording.
            log.exception("sip_gateway.recording_failed", call_id=call.call_id)

    def _reack(self, dialog: Dialog) -> Callable[[SipResponse], None]:
        """A response callback that ACKs retransmitted 2xx (our ACK was lost, §13.2.2.4)."""

        def on_response(response: SipResponse) -> None:
            if 200 <= response.status < 300 and dialog.remote_tag == response.to.tag:
                self.endpoint.send_raw(dialog.ack(response.cseq.number), dialog.destination)

        return on_response

    def _contact(self, dialog: Dialog) -> str:
        endpoint = self.endpoint
        port = endpoint.local_address(dialog.destination.transport)[1]
        return f"<sip:gw@{endpoint.advertised_host}:{port}>"

    def _to_customer(self, call: Call, sdp: tuple[bytes, str | None]) -> tuple[bytes, str]:
        """SDP for the customer's leg, under the one origin the customer knows."""
        body, content_type = sdp
        return (call.origin.stamp(body) if body else b""), content_type or "application/sdp"

    def _bridge_customer(self, call: Call) -> None:
        """Give the customer the connected agent's SDP: the 200 to an inbound caller, the
        held ACK of an outbound answer, or a re-INVITE once the customer has talked to
        someone else (a transfer)."""
        body, content_type = self._to_customer(call, call.agent_sdp)
        if call.invite is not None and not call.invite.final_sent:
            ok = call.invite.create_response(
                200, headers=(("Contact", self._contact(call.caller)),)
            )
            ok = ok.with_header("Allow", ALLOW)
            if body:
                ok = ok.with_body(body, content_type)
            acked = self.endpoint.send_2xx(call.invite, ok)
            acked.add_done_callback(lambda done: self._caller_acked(call, done))
        elif call.unacked is not None:
            self._ack_customer(call, body, content_type)
        else:
            self._spawn(self._reoffer_quietly(call, body, content_type))

    def _ack_customer(self, call: Call, body: bytes, content_type: str) -> None:
        """ACK the customer's held 2xx with ``body`` as the answer to its offer."""
        response, call.unacked = call.unacked, None
        assert response is not None
        ack = call.caller.ack(response.cseq.number)
        if body:
            ack = ack.with_body(body, content_type)
        call.customer_ack = ack
        self.endpoint.send_raw(ack, call.caller.destination)

    async def _reoffer_quietly(self, call: Call, body: bytes, content_type: str) -> None:
        await self._reoffer_customer(call, body, content_type)

    async def _reoffer_customer(self, call: Call, body: bytes, content_type: str) -> bool:
        """Re-INVITE the customer with ``body``; whether it accepted (its SDP is kept)."""
        if call.reinviting:
            log.warning("sip_gateway.reinvite_collision", call_id=call.call_id)
            return False
        call.reinviting = True
        request = call.caller.request("INVITE").with_header("Contact", self._contact(call.caller))
        if body:
            request = request.with_body(body, content_type)
        try:
            async with asyncio.timeout(IN_DIALOG_TIMEOUT_S):
                _, response = await self.endpoint.request(request, call.caller.destination)
        finally:
            call.reinviting = False
        if not 200 <= response.status < 300:
            log.warning(
                "sip_gateway.customer_refused_reinvite",
                call_id=call.call_id,
                status=response.status,
            )
            return False
        self.endpoint.send_raw(call.caller.ack(request.cseq.number), call.caller.destination)
        if response.body:
            call.customer_sdp = _sdp(response)
        return True

    def _caller_acked(self, call: Call, done: asyncio.Future[SipRequest | None]) -> None:
        """§13.3.1.4: no ACK for our 2xx within 64*T1 -> the call is torn down (BYE both)."""
        if done.cancelled() or done.result() is not None:
            return
        if call.state.phase not in (Phase.CONNECTED, Phase.HELD) or self._endpoint is None:
            return
        log.warning("sip_gateway.no_ack_from_caller", call_id=call.call_id)
        self._apply(call, TearDown(EndCause.FAILED, sip_code=408))
        self._spawn(self._bye(call.caller))
        if call.agent is not None:
            self._spawn(self._bye(call.agent))

    async def _bye(self, dialog: Dialog) -> None:
        async with asyncio.timeout(40):
            await self.endpoint.request(dialog.request("BYE"), dialog.destination)

    # -- outbound ----------------------------------------------------------------------

    def dial_for_softphone(
        self,
        tx: InviteServerTransaction,
        tenant: str,
        allowed: Allowed,
        *,
        extension: str,
        source: Source,
    ) -> str:
        """An agent's softphone dialled an allowed number: INVITE the customer with the
        softphone's SDP and relay the answers back to it; the call id."""
        request = tx.request
        agent = Dialog(
            sip_call_id=request.call_id,
            local=f"<{request.to.uri}>",
            local_tag=tx.to_tag or self.endpoint.new_tag(),
            remote=f"<{request.from_.uri}>",
            remote_tag=request.from_.tag,
            target=str(request.contacts[0].uri if request.contacts else request.from_.uri),
            destination=_destination(source),
            routes=tuple(str(r) for r in request.record_routes),
            cseq=0,
            # Relayed by the edge: the phone's later requests come relayed from it too.
            peer_host=source.remote[0] if source.relay is not None else None,
        )
        return self.originate(
            tenant,
            allowed,
            attempt_id=f"softphone-{request.call_id}"[:64],
            requested_by=DialRequester.AGENT_SOFTPHONE,
            agent_id=self._agent_on_extension.get(extension, extension),
            softphone=(tx, agent, extension),
        )

    def originate(
        self,
        tenant: str,
        allowed: Allowed,
        *,
        attempt_id: str,
        requested_by: DialRequester,
        ring_timeout_s: float | None = None,
        agent_id: str | None = None,
        softphone: tuple[InviteServerTransaction, Dialog, str] | None = None,
        call_id: str | None = None,
    ) -> str:
        """Dial a number the allow-list allowed (``CallControl.Originate``, or a softphone's
        own dial with its INVITE, leg and extension as ``softphone``); the call id.

        Without a softphone the INVITE carries no SDP: the customer's 2xx brings the offer,
        and its ACK waits for the answer of the agent the acd or the dialer connects (RFC
        3725 flow I). No agent within ``COMPLIANCE_WINDOW_S`` of the answer: the call is
        abandoned. ``call_id`` is the id to give the call when its owner is already
        recorded (a claimed attempt); None: a new id, reported to ``on_open``.
        """
        endpoint = self.endpoint
        trunk = self.trunks.outbound_for(tenant)
        if trunk is None:
            raise NoOutboundTrunkError(
                f"tenant {tenant} has no enabled trunk with an outbound address"
            )
        token = self.admission.admit(trunk.name)
        if isinstance(token, InboundRefused):
            raise TrunkFullError(f"{token.detail}; retry in {token.retry_after_s} s")
        target = trunk.outbound[0]
        destination = Destination(target.transport.upper(), target.host, target.port)
        request_uri = f"sip:{allowed.number}@{target.host}:{target.port}"
        routes: tuple[str, ...] = ()
        if self.outbound_proxy is not None:
            # Leave from the edge's address, the one the carrier knows.
            destination, routes, request_uri = self.outbound_proxy.toward(
                request_uri, target.transport
            )
        dialog = Dialog(
            sip_call_id=f"{uuid.uuid4().hex}@plateau",
            local=f"<sip:plateau@{endpoint.advertised_host}>",
            local_tag=endpoint.new_tag(),
            remote=f"<sip:{allowed.number}@{target.host}>",
            remote_tag=None,
            target=request_uri,
            destination=destination,
            routes=routes,
        )
        invite = dialog._build("INVITE", 1).with_header("Contact", self._contact(dialog))
        if softphone is not None:
            body, content_type = _sdp(softphone[0].request)
            if body:
                invite = invite.with_body(body, content_type or "application/sdp")
        call = Call(tenant, CallState(), dialog, token)
        opened: asyncio.Future[None] | None = None
        if call_id is None:
            call_id = self._new_call_id()
            opened = self.on_open(tenant, call_id) if self.on_open is not None else None
        self._apply(
            call,
            Originate(
                call_id=call_id,
                campaign_id=allowed.campaign_id,
                contact_id=allowed.contact_id,
                attempt_id=attempt_id,
                number=allowed.number,
                list_version=allowed.list_version,
                trunk=trunk.name,
                requested_by=requested_by,
                sip_call_id=dialog.sip_call_id,
                agent_id=agent_id,
                agent_extension=softphone[2] if softphone else None,
                agent_leg_sip_call_id=softphone[0].request.call_id if softphone else None,
            ),
            after=opened,
        )
        self._calls[call.call_id] = call
        self._by_sip_call_id[dialog.sip_call_id] = call
        if softphone is not None:
            call.softphone, call.agent = softphone[0], softphone[1]
            self._by_sip_call_id[softphone[0].request.call_id] = call
            call.legs.add(softphone[0].request.call_id)
            softphone[0].on_cancel = lambda cancel: self._softphone_cancelled(call, cancel)
        tx = endpoint.send_request(invite, destination)
        assert isinstance(tx, InviteClientTransaction)
        tx.on_response = self._reack_customer(call)
        call.dial = tx
        call.ring_started = time.monotonic()
        timeout = ring_timeout_s or DIAL_RING_TIMEOUT_S
        call.ring_task = asyncio.create_task(self._dial_timer(call, timeout))
        self._spawn(self._follow_dial(call, tx))
        log.info("sip_gateway.dialling", call_id=call.call_id, trunk=trunk.name)
        return call.call_id

    def _reack_customer(self, call: Call) -> Callable[[SipResponse], None]:
        """ACK the customer's retransmitted 2xx once its ACK is known (ours was lost)."""

        def on_response(response: SipResponse) -> None:
            if 200 <= response.status < 300 and call.customer_ack is not None:
                self.endpoint.send_raw(call.customer_ack, call.caller.destination)

        return on_response

    def _ring_ms(self, call: Call) -> int:
        return int((time.monotonic() - call.ring_started) * 1000)

    async def _dial_timer(self, call: Call, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if call.state.phase is Phase.DIALLING and call.dial is not None:
            call.dial_given_up = True
            self._cancel_dial(call)

    def _cancel_dial(self, call: Call) -> None:
        tx = call.dial
        if tx is not None and tx.final is None:
            self._spawn(self._send_cancel(tx, call.caller.destination))

    async def _follow_dial(self, call: Call, tx: InviteClientTransaction) -> None:
        async with contextlib.aclosing(tx.responses()) as responses:
            async for response in responses:
                if response.is_final:
                    self._dial_final(call, response)
                elif call.softphone is not None and response.status > 100:
                    self._relay_progress(call, response)

    def _relay_progress(self, call: Call, response: SipResponse) -> None:
        """Ringing or early media from the customer's network, passed to the softphone."""
        assert call.softphone is not None
        progress = call.softphone.create_response(response.status, response.reason)
        body, content_type = _sdp(response)
        if body:
            progress = progress.with_body(body, content_type or "application/sdp")
        call.softphone.respond(progress)

    def _dial_final(self, call: Call, response: SipResponse) -> None:
        dialog = call.caller
        status = response.status
        if 200 <= status < 300:
            dialog.remote_tag = response.to.tag
            if response.contacts:
                dialog.target = str(response.contacts[0].uri)
            dialog.routes = tuple(str(r) for r in reversed(response.record_routes))
            call.customer_sdp = _sdp(response)
            call.unacked = response
            if call.state.phase is not Phase.DIALLING:
                # Answered as the gateway gave up on it (hang-up, timeout crossing the 2xx).
                self._release_customer(call, answered=True, code=None)
                return
            self._answered(call)
            return
        if call.state.phase is not Phase.DIALLING:
            return  # the 487 to a CANCEL after the call was hung up
        if call.dial_given_up:
            outcome, code = DialOutcome.NO_ANSWER, None
        else:
            outcome, code = _dial_outcome(status), status
        if call.softphone is not None and not call.softphone.final_sent:
            relayed = status if status < 500 or status in (503, 600, 603) else 503
            call.softphone.respond(call.softphone.create_response(relayed))
        self._apply(call, ResolveDial(outcome, sip_code=code, ring_ms=self._ring_ms(call)))

    def _answered(self, call: Call) -> None:
        """A live answer: a softphone's dial is bridged now; any other waits for an agent."""
        if call.ring_task is not None:
            call.ring_task.cancel()
        ring_ms = self._ring_ms(call)
        call.answered_at = time.monotonic()
        if call.softphone is not None:
            # The customer's SDP answers the softphone's offer: ACK as is, 200 the agent.
            self._ack_customer(call, b"", "")
            body, content_type = call.customer_sdp
            ok = call.softphone.create_response(
                200, headers=(("Contact", self._contact(call.caller)),)
            )
            ok = ok.with_header("Allow", ALLOW)
            if body:
                ok = ok.with_body(body, content_type or "application/sdp")
            self.endpoint.send_2xx(call.softphone, ok)
            self._apply(call, ResolveDial(DialOutcome.ANSWERED, ring_ms=ring_ms))
            return
        self._apply(call, ResolveDial(DialOutcome.ANSWERED, ring_ms=ring_ms))
        call.compliance_task = asyncio.create_task(self._compliance_timer(call))

    async def _compliance_timer(self, call: Call) -> None:
        await asyncio.sleep(COMPLIANCE_WINDOW_S)
        if call.state.phase not in (Phase.WAITING, Phase.AGENT_RINGING):
            return
        if call.state.ever_connected:
            return
        waited_ms = int((time.monotonic() - call.answered_at) * 1000)
        self._cancel_agent(call)
        offer, content_type = call.customer_sdp
        if call.unacked is None:
            self._apply(call, AbandonForCompliance(waited_ms, message_played=False))
            self._spawn(self._bye(call.caller))
            return

        def ack(answer: str | None) -> None:
            if call.unacked is None:
                return  # the customer hung up meanwhile
            if answer is None:
                self._ack_customer(
                    call, rejecting_answer(offer) if offer else b"", content_type or ""
                )
            else:
                self._ack_customer(call, *self._to_customer(call, (answer.encode(), None)))

        # Started before the abandon is recorded: ending the call releases its media, and
        # the message's task must own that release until the message has been heard.
        message = self.media.abandon_with_message(call.call_id, offer.decode(), ack)
        played = self.media.plays_compliance_message and bool(offer)
        self._apply(call, AbandonForCompliance(waited_ms, message_played=played))
        self._spawn(self._bye_after(message, call.caller))

    async def _bye_after(self, message: asyncio.Task[bool], dialog: Dialog) -> None:
        """BYE once the compliance message has been heard (at once when none plays)."""
        await message
        await self._bye(dialog)

    def _softphone_cancelled(self, call: Call, cancel: NonInviteServerTransaction) -> None:
        """The agent gave up on its own dial before the customer answered."""
        cancel.respond(cancel.create_response(200))
        softphone = call.softphone
        if softphone is None or softphone.final_sent or call.state.phase is not Phase.DIALLING:
            return
        softphone.respond(softphone.create_response(487))
        self._cancel_dial(call)
        self._apply(call, HangUpByAgent())

    # -- in-dialog requests ------------------------------------------------------------

    def _leg_of(self, call: Call, sip_call_id: str) -> str | None:
        """``customer``, ``agent`` (the current agent leg) or None (a leg the call left)."""
        if sip_call_id == call.caller.sip_call_id:
            return "customer"
        if call.agent is not None and sip_call_id == call.agent.sip_call_id:
            return "agent"
        return None

    def _in_dialog(self, tx: ServerTransaction, source: Source) -> tuple[Call, str | None] | None:
        """The call of an in-dialog request and its leg, or None once answered (481 for
        an unknown dialog; 403 when it comes from outside the leg's peer: the customer's
        trunk networks, or the address the agent's leg is sent to)."""
        call = self._by_sip_call_id.get(tx.request.call_id)
        if call is None:
            tx.respond(tx.create_response(481))
            return None
        leg = self._leg_of(call, tx.request.call_id)
        host = source.remote[0]
        if leg == "customer":
            trunk = self.trunks.trunk_for_source(host)
            trusted = trunk is not None and trunk.name == call.state.trunk
        elif leg == "agent":
            assert call.agent is not None
            trusted = host == call.agent.from_host
        else:
            trusted = True  # a leg the call has left: answered, and nothing changes
        if not trusted:
            log.warning(
                "sip_gateway.in_dialog_from_stranger",
                method=tx.request.method,
                call_id=call.call_id,
                source=host,
            )
            tx.respond(tx.create_response(403))
            return None
        return call, leg

    def bye(self, tx: ServerTransaction, source: Source) -> None:
        """A BYE from the customer, the current agent, or an agent the call has left."""
        found = self._in_dialog(tx, source)
        if found is None:
            return
        call, leg = found
        sip_call_id = tx.request.call_id
        tx.respond(tx.create_response(200))
        phase = call.state.phase
        if leg is None:
            # An agent the call was transferred away from, hanging up its old leg.
            self._by_sip_call_id.pop(sip_call_id, None)
            call.legs.discard(sip_call_id)
            return
        if leg == "agent":
            if phase in TALKING_PHASES:
                self._apply(call, HangUpByAgent())
                self._spawn(self._bye(call.caller))
            return
        if phase in TALKING_PHASES:
            self._apply(call, HangUpByCaller())
            if call.agent is not None:
                self._spawn(self._bye(call.agent))
            return
        if phase in (Phase.WAITING, Phase.AGENT_RINGING):
            # The customer has gone before an agent was connected: BYE before our 2xx was
            # ACKed, after a transfer, or an outbound answer still waiting for an agent.
            self._cancel_agent(call)
            call.unacked = None
            with contextlib.suppress(CallDomainError):
                self._apply(call, HangUpByCaller())

    def reinvite(self, tx: InviteServerTransaction, source: Source) -> None:
        """A re-INVITE (hold, resume, session refresh) from either side: relayed to the
        other leg, its answer relayed back; an agent's hold or resume is recorded."""
        found = self._in_dialog(tx, source)
        if found is None:
            return
        call, leg = found
        if leg is None:
            tx.respond(tx.create_response(481))  # a leg the call has left
            return
        phase = call.state.phase
        if phase not in TALKING_PHASES or call.agent is None or call.reinviting:
            tx.respond(tx.create_response(491))  # a session change is already under way
            return
        call.reinviting = True
        self._spawn(self._relay_reinvite(call, tx, from_agent=leg == "agent"))

    async def _relay_reinvite(
        self, call: Call, tx: InviteServerTransaction, from_agent: bool
    ) -> None:
        assert call.agent is not None
        other = call.caller if from_agent else call.agent
        endpoint = self.endpoint
        request = other.request("INVITE").with_header("Contact", self._contact(other))
        sent = _sdp(tx.request)
        try:
            # Anchored media: each side is offered and answered rtpengine's SDP (signalling
            # only: the other side's own); agent_sdp keeps what the customer was given.
            offer = await self._relay_sdp(call, from_agent, sent, self.media.relay_offer)
            body, content_type = self._to_customer(call, offer) if from_agent else offer
            if body:
                request = request.with_body(body, content_type or "application/sdp")
            async with asyncio.timeout(IN_DIALOG_TIMEOUT_S):
                _, response = await endpoint.request(request, other.destination)
        finally:
            call.reinviting = False
        if not 200 <= response.status < 300:
            tx.respond(tx.create_response(response.status, response.reason))
            return
        endpoint.send_raw(other.ack(request.cseq.number), other.destination)
        received = _sdp(response)
        answer = await self._relay_sdp(call, from_agent, received, self.media.relay_answer)
        if from_agent:
            call.agent_sdp, call.customer_sdp = offer, received
            answer_body, answer_type = answer
        else:
            call.customer_sdp, call.agent_sdp = sent, answer
            answer_body, answer_type = self._to_customer(call, answer)
        ok = tx.create_response(200, headers=(("Contact", self._contact(other)),))
        if answer_body:
            ok = ok.with_body(answer_body, answer_type or "application/sdp")
        endpoint.send_2xx(tx, ok)
        if from_agent and call.state.phase is not Phase.ENDED:
            holding = is_hold(sent[0])
            if holding and call.state.phase is Phase.CONNECTED:
                self._apply(call, Hold(via="softphone"))
            elif not holding and call.state.phase is Phase.HELD:
                self._apply(call, Resume(via="softphone"))

    async def _relay_sdp(
        self,
        call: Call,
        from_agent: bool,
        sdp: tuple[bytes, str | None],
        relay: Callable[[str, bool, str], Coroutine[Any, Any, str]],
    ) -> tuple[bytes, str | None]:
        body, content_type = sdp
        if not body:
            return sdp
        return (await relay(call.call_id, from_agent, body.decode())).encode(), content_type

    def refer(self, tx: ServerTransaction, source: Source) -> None:
        """A softphone's blind transfer (REFER from the connected agent, RFC 3515).

        Refer-To names an entry point (-> its queue), an extension the acd has connected an
        agent on (-> that agent) or a number (-> allow-list, then the carrier). Accepted
        with 202 and a final NOTIFY; the agent's leg is then released by the gateway.
        """
        found = self._in_dialog(tx, source)
        if found is None:
            return
        call, leg = found
        if leg != "agent":
            tx.respond(tx.create_response(403, "Only the Connected Agent May Transfer"))
            return
        refer_to = tx.request.headers.get("Refer-To") or tx.request.headers.get("r")
        try:
            uri = parse_uri(refer_to.strip().lstrip("<").split(">")[0]) if refer_to else None
        except ValueError:
            uri = None
        user = uri.user if isinstance(uri, SipUri) else None
        if not user:
            tx.respond(tx.create_response(400, "Missing or Malformed Refer-To"))
            return
        assert call.agent is not None
        target = self._refer_target(call, user)
        if isinstance(target, Refused):
            requester = call.state.agent.extension if call.state.agent else "softphone"
            self.refuse_dial(
                call.tenant,
                target,
                requested_by=DialRequester.AGENT_SOFTPHONE,
                requester=requester or "softphone",
                sip_code=403,
            )
            tx.respond(tx.create_response(403, "Number Not Allowed"))
            return
        try:
            decide(call.state, Transfer(target, via="softphone"))
        except CallDomainError as exc:
            tx.respond(tx.create_response(403, str(exc)[:80]))
            return
        tx.respond(tx.create_response(202))
        agent = call.agent
        self._spawn(self._notify_refer_done(agent))
        extension = user if target.kind == "agent" else None
        self._spawn(self._transfer(call, target, via="softphone", extension=extension))

    def _refer_target(self, call: Call, user: str) -> TransferTarget | Refused:
        trunk = self.trunks.get(call.state.trunk or "")
        if trunk is not None:
            entry_point = self.trunks.entry_point(trunk, user)
            if entry_point is not None:
                return TransferTarget(kind="queue", queue_id=entry_point)
        agent_id = self._agent_on_extension.get(user)
        if agent_id is not None and self.registrar.lookup(user, self._clock()):
            return TransferTarget(kind="agent", agent_id=agent_id)
        decision = self.allowlist.check(call.tenant, None, user)
        if isinstance(decision, Refused):
            return decision
        return TransferTarget(kind="number", number=decision.number)

    async def _notify_refer_done(self, agent: Dialog) -> None:
        """The implicit subscription's last NOTIFY: the transfer was accepted (RFC 3515)."""
        notify = agent.request("NOTIFY").with_header("Event", "refer")
        notify = notify.with_header("Subscription-State", "terminated;reason=noresource")
        notify = notify.with_header("Contact", self._contact(agent))
        notify = notify.with_body(b"SIP/2.0 200 OK\r\n", "message/sipfrag;version=2.0")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IN_DIALOG_TIMEOUT_S):
                await self.endpoint.request(notify, agent.destination)

    def notify(self, tx: ServerTransaction) -> None:
        """NOTIFY of a REFER the gateway sent to the carrier: acknowledged, nothing more
        (the call has left Plateau once the carrier accepted the REFER)."""
        known = tx.request.call_id in self._by_sip_call_id
        tx.respond(tx.create_response(200 if known else 481))

    # -- API ---------------------------------------------------------------------------

    def hangup(self, tenant: str, call_id: str, reason: HangupReason) -> None:
        """End every leg of a call (``CallControl.Hangup``)."""
        call = self.find(tenant, call_id)
        phase = call.state.phase
        if phase is Phase.AGENT_RINGING:
            self._cancel_agent(call)
        if phase is Phase.DIALLING:
            self._cancel_dial(call)
        answered = call.state.customer_answered
        events = self._apply(call, HangUp(reason))
        code = events[-1].sip_code if events else None  # type: ignore[union-attr]
        self._release_customer(call, answered, code)
        if phase in TALKING_PHASES and call.agent is not None:
            self._spawn(self._bye(call.agent))
        if call.softphone is not None and not call.softphone.final_sent:
            call.softphone.respond(call.softphone.create_response(487))

    def _release_customer(self, call: Call, answered: bool, code: int | None) -> None:
        """Take the customer's leg down, however far it got."""
        if call.invite is not None and not call.invite.final_sent:
            call.invite.respond(call.invite.create_response(code or 480))
        elif call.unacked is not None:
            offer, content_type = call.customer_sdp
            self._ack_customer(call, rejecting_answer(offer) if offer else b"", content_type or "")
            self._spawn(self._bye(call.caller))
        elif answered:
            self._spawn(self._bye(call.caller))

    def hold(self, tenant: str, call_id: str) -> None:
        """Put the customer on hold (``CallControl.Hold``): a re-INVITE with every stream
        inactive; ``call.held`` once the customer accepted it."""
        self._change_hold(tenant, call_id, Hold(via="api"))

    def resume(self, tenant: str, call_id: str) -> None:
        """Take the customer off hold (``CallControl.Resume``): the agent's SDP again."""
        self._change_hold(tenant, call_id, Resume(via="api"))

    def _change_hold(self, tenant: str, call_id: str, command: Hold | Resume) -> None:
        call = self.find(tenant, call_id)
        decide(call.state, command)  # FAILED_PRECONDITION unless connected (held)
        if call.reinviting:
            raise SessionChangeError("a session change is under way; retry in a moment")
        body, content_type = call.agent_sdp
        if isinstance(command, Hold) and body:
            body = with_direction(body, "inactive")
        self._spawn(self._reoffer_for(call, body, content_type, command))

    async def _reoffer_for(
        self, call: Call, body: bytes, content_type: str | None, command: Hold | Resume
    ) -> None:
        stamped, stamped_type = self._to_customer(call, (body, content_type))
        if await self._reoffer_customer(call, stamped, stamped_type):
            with contextlib.suppress(CallDomainError):  # the call ended meanwhile
                self._apply(call, command)

    async def transfer(
        self,
        tenant: str,
        call_id: str,
        target: TransferTarget,
        *,
        extension: str | None = None,
    ) -> None:
        """Blind-transfer a call (``CallControl.Transfer``); a number (already allowed by
        the caller's allow-list check) is handed to the carrier with REFER."""
        call = self.find(tenant, call_id)
        decide(call.state, Transfer(target, via="api"))  # FAILED_PRECONDITION if not now
        if target.kind == "agent" and not extension:
            raise ValueError("a transfer to an agent needs the agent's extension")
        await self._transfer(call, target, via="api", extension=extension)

    async def _transfer(
        self,
        call: Call,
        target: TransferTarget,
        *,
        via: Literal["api", "softphone"],
        extension: str | None = None,
    ) -> None:
        if target.kind == "number":
            await self._refer_customer(call, target, via)
            return
        talking = call.state.phase in TALKING_PHASES
        old_agent = call.agent if talking else None
        self._apply(call, Transfer(target, via=via))
        if old_agent is not None:
            self._spawn(self._bye(old_agent))
        if target.kind == "agent":
            assert target.agent_id is not None
            assert extension, "an agent target always comes with its extension"
            self.connect_agent(
                call.tenant, call.call_id, agent_id=target.agent_id, extension=extension
            )
        elif talking and call.agent_sdp[0]:
            # Waiting for the acd again: nothing flows until the next agent answers.
            body, content_type = call.agent_sdp
            inactive = self._to_customer(call, (with_direction(body, "inactive"), content_type))
            await self._reoffer_customer(call, *inactive)

    async def _refer_customer(
        self, call: Call, target: TransferTarget, via: Literal["api", "softphone"]
    ) -> None:
        """Hand the customer to the carrier for a number (RFC 3515): on 2xx the call has
        left Plateau and both legs are released."""
        trunk = self.trunks.get(call.state.trunk or "")
        host = trunk.outbound[0].host if trunk is not None and trunk.outbound else None
        host = host or call.caller.destination.host
        refer = call.caller.request("REFER").with_header(
            "Refer-To", f"<sip:{target.number}@{host}>"
        )
        refer = refer.with_header("Referred-By", self._contact(call.caller))
        refer = refer.with_header("Contact", self._contact(call.caller))
        async with asyncio.timeout(IN_DIALOG_TIMEOUT_S):
            _, response = await self.endpoint.request(refer, call.caller.destination)
        if not 200 <= response.status < 300:
            raise SessionChangeError(
                f"the carrier refused the transfer to {target.number}: "
                f"{response.status} {response.reason}"
            )
        if call.state.phase is Phase.ENDED:
            return
        agent = call.agent if call.state.phase in TALKING_PHASES else None
        self._apply(call, Transfer(target, via=via))
        self._spawn(self._bye(call.caller))
        if agent is not None:
            self._spawn(self._bye(agent))

    def refuse_dial(
        self,
        tenant: str,
        refused: Refused,
        *,
        requested_by: DialRequester,
        requester: str,
        campaign_id: str | None = None,
        contact_id: str | None = None,
        attempt_id: str | None = None,
        sip_code: int | None = None,
    ) -> str:
        """Record a refused dial; its call id."""
        call_id = self._new_call_id()
        event = refused.to_event(
            call_id,
            requested_by=requested_by,
            requester=requester,
            campaign_id=campaign_id,
            contact_id=contact_id,
            attempt_id=attempt_id,
            sip_code=sip_code,
        )
        self._record_alone(tenant, RecordDialRefusal(event))
        return call_id
