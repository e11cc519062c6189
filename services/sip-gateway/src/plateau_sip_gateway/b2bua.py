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
* BYE from either side -> BYE the other, ``call.ended``; ``hangup`` ends every leg.

Media is signalling-only here: SDP passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from plateau_contracts.events.calls import DialRequester, EndCause
from plateau_runtime.eventstore import EventStore
from plateau_sip_gateway.adapters.recorder import Recorder
from plateau_sip_gateway.domain.admission import Admission, AdmissionToken
from plateau_sip_gateway.domain.allowlist import AllowList, Refused
from plateau_sip_gateway.domain.call import (
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
    Phase,
    RecordDialRefusal,
    RecordRejection,
    ReportAgentUnavailable,
    Resume,
    RingAgent,
    StaleAgentLegError,
    TearDown,
    close_for_restart,
    decide,
    evolve,
    fold,
)
from plateau_sip_gateway.domain.registrar import Registrar
from plateau_sip_gateway.domain.trunks import InboundRefused, TrunkDirectory
from plateau_sip_gateway.sip import Headers, SipRequest, SipResponse, SipUri, parse_uri
from plateau_sip_gateway.sip.endpoint import Destination, Endpoint
from plateau_sip_gateway.sip.transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from plateau_sip_gateway.sip.transport import Source

log = structlog.get_logger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"


class CallNotFoundError(LookupError):
    """No open call with that id for that tenant."""


class GatewayNotReadyError(RuntimeError):
    """SIP is not listening yet (the gateway is starting or stopping)."""


class DialNotAllowedError(PermissionError):
    """A dial the allow-list refused; ``reason`` is the recorded refusal reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    """A call in progress: its recorded state and its live SIP legs."""

    tenant: str
    state: CallState
    invite: InviteServerTransaction
    caller: Dialog
    token: AdmissionToken | None
    version: int = 0
    agent_tx: InviteClientTransaction | None = None
    agent: Dialog | None = None
    ring_task: asyncio.Task[None] | None = None
    ring_started: float = 0.0
    legs: set[str] = field(default_factory=set)  # agent legs' SIP Call-IDs
    reinviting: bool = False  # a re-INVITE is being relayed (another one gets 491)

    @property
    def call_id(self) -> str:
        assert self.state.call_id is not None
        return self.state.call_id


def _destination(source: Source) -> Destination:
    host, port = source.remote
    return Destination(source.transport, host, port)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_hold(sdp: bytes) -> bool:
    """Whether an offer puts the other side on hold (RFC 3264 §8.4, or RFC 2543's 0.0.0.0)."""
    lines = [line.strip() for line in sdp.decode(errors="replace").splitlines()]
    return any(line in ("a=sendonly", "a=inactive") for line in lines) or any(
        line.startswith("c=IN IP4 0.0.0.0") for line in lines
    )


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
        registrar: Registrar,
        allowlist: AllowList,
        recorder: Recorder,
        ring_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        new_call_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        unknown_source_tenant: str = "demo",
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
        self._endpoint: Endpoint | None = None
        self._calls: dict[str, Call] = {}
        self._by_sip_call_id: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def close_open_calls(self, store: EventStore) -> int:
        """Close every call the store still shows open (``gateway_restart``); how many."""
        from plateau_contracts.catalogue import parse

        streams: dict[str, tuple[str, list[Event], int]] = {}
        async for stored in store.iterate():
            envelope = stored.envelope
            if not envelope.stream.startswith("call-"):
                continue
            tenant, events, _ = streams.get(envelope.stream, (envelope.tenant, [], 0))
            events.append(parse(envelope))  # type: ignore[arg-type]
            streams[envelope.stream] = (tenant, events, envelope.stream_version)
        closed = 0
        for stream, (tenant, events, version) in streams.items():
            try:
                ending = close_for_restart(fold(events))
            except CallDomainError:
                log.exception("sip_gateway.corrupt_call_stream", stream=stream)
                continue
            if ending:
                await self.recorder.append(tenant, ending, expected_version=version)
                closed += 1
        if closed:
            log.warning("sip_gateway.closed_for_restart", calls=closed)
        return closed

    async def stop(self) -> None:
        """Cancel timers; calls in progress are closed at the next start."""
        for call in list(self._calls.values()):
            if call.ring_task is not None:
                call.ring_task.cancel()
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

    def _apply(self, call: Call, command: Command) -> list[Event]:
        """Decide ``command`` on ``call``, record the events, update the call."""
        events = decide(call.state, command)
        for event in events:
            call.state = evolve(call.state, event)
        self.recorder.record(call.tenant, events, expected_version=call.version)
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
        if call.ring_task is not None and call.ring_task is not asyncio.current_task():
            call.ring_task.cancel()

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
        call = Call(decision.tenant, CallState(), tx, caller, admitted)
        self._apply(
            call,
            OfferCall(
                call_id=self._new_call_id(),
                trunk=decision.trunk.name,
                ani=ani,
                dnis=decision.dnis,
                sip_call_id=request.call_id,
            ),
        )
        self._calls[call.call_id] = call
        self._by_sip_call_id[request.call_id] = call
        tx.on_cancel = lambda cancel: self._caller_cancelled(call, cancel)
        tx.respond(tx.create_response(180))

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
        if isinstance(contact, SipUri) and _ip_literal(contact.host):
            transport = (contact.params.get("transport") or binding.transport).upper()
            destination = Destination(
                transport if transport in ("UDP", "TCP") else "UDP",
                contact.host.strip("[]"),
                contact.port or 5060,
            )
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
        )
        invite = dialog._build("INVITE", 1).with_header("Contact", f"<sip:gw@{host}:{port}>")
        body, content_type = _sdp(call.invite.request)
        if body:
            invite = invite.with_body(body, content_type or "application/sdp")
        self._apply(
            call, RingAgent(agent_id, extension, binding.contact, sip_call_id, queue_id or None)
        )
        tx = endpoint.send_request(invite, destination)
        assert isinstance(tx, InviteClientTransaction)
        call.agent_tx, call.agent = tx, dialog
        call.legs.add(sip_call_id)
        self._by_sip_call_id[sip_call_id] = call
        call.ring_started = time.monotonic()
        timeout = ring_timeout_s or self.ring_timeout_s
        call.ring_task = asyncio.create_task(self._ring_timer(call, sip_call_id, timeout))
        self._spawn(self._follow_agent(call, tx, dialog))
        return sip_call_id

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
            self._answer_caller(call, response)
            return
        if not self._ringing(call, dialog.sip_call_id):
            return  # the 487 to our own CANCEL, or a leg already given up
        if call.ring_task is not None:
            call.ring_task.cancel()
        call.agent_tx = None
        self._apply(call, FailAgentLeg(dialog.sip_call_id, response.status))

    def _answer_caller(self, call: Call, agent_answer: SipResponse) -> None:
        endpoint = self.endpoint
        host = endpoint.advertised_host
        port = endpoint.local_address(call.caller.destination.transport)[1]
        body, content_type = _sdp(agent_answer)
        ok = call.invite.create_response(200, headers=(("Contact", f"<sip:gw@{host}:{port}>"),))
        ok = ok.with_header("Allow", ALLOW)
        if body:
            ok = ok.with_body(body, content_type or "application/sdp")
        acked = endpoint.send_2xx(call.invite, ok)
        acked.add_done_callback(lambda done: self._caller_acked(call, done))

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

    # -- in-dialog requests ------------------------------------------------------------

    def bye(self, tx: ServerTransaction) -> None:
        """A BYE from the caller or the connected agent."""
        call = self._by_sip_call_id.get(tx.request.call_id)
        if call is None:
            tx.respond(tx.create_response(481))
            return
        tx.respond(tx.create_response(200))
        from_agent = tx.request.call_id != call.caller.sip_call_id
        if call.state.phase not in (Phase.CONNECTED, Phase.HELD):
            if not from_agent:
                # A BYE before our 2xx was ACKed, or while waiting: the caller has gone.
                self._cancel_agent(call)
                with contextlib.suppress(CallDomainError):
                    self._apply(call, HangUpByCaller())
            return
        if from_agent:
            self._apply(call, HangUpByAgent())
            self._spawn(self._bye(call.caller))
        else:
            self._apply(call, HangUpByCaller())
            if call.agent is not None:
                self._spawn(self._bye(call.agent))

    def reinvite(self, tx: InviteServerTransaction) -> None:
        """A re-INVITE (hold, resume, session refresh) from either side: relayed to the
        other leg, its answer relayed back; an agent's hold or resume is recorded."""
        call = self._by_sip_call_id.get(tx.request.call_id)
        if call is None:
            tx.respond(tx.create_response(481))
            return
        phase = call.state.phase
        if phase not in (Phase.CONNECTED, Phase.HELD) or call.agent is None or call.reinviting:
            tx.respond(tx.create_response(491))  # a session change is already under way
            return
        from_agent = tx.request.call_id != call.caller.sip_call_id
        call.reinviting = True
        self._spawn(self._relay_reinvite(call, tx, from_agent))

    async def _relay_reinvite(
        self, call: Call, tx: InviteServerTransaction, from_agent: bool
    ) -> None:
        assert call.agent is not None
        other = call.caller if from_agent else call.agent
        endpoint = self.endpoint
        host = endpoint.advertised_host
        port = endpoint.local_address(other.destination.transport)[1]
        request = other.request("INVITE").with_header("Contact", f"<sip:gw@{host}:{port}>")
        body, content_type = _sdp(tx.request)
        if body:
            request = request.with_body(body, content_type or "application/sdp")
        try:
            async with asyncio.timeout(40):
                _, response = await endpoint.request(request, other.destination)
        finally:
            call.reinviting = False
        if not 200 <= response.status < 300:
            tx.respond(tx.create_response(response.status, response.reason))
            return
        endpoint.send_raw(other.ack(request.cseq.number), other.destination)
        answer, answer_type = _sdp(response)
        ok = tx.create_response(200, headers=(("Contact", f"<sip:gw@{host}:{port}>"),))
        if answer:
            ok = ok.with_body(answer, answer_type or "application/sdp")
        endpoint.send_2xx(tx, ok)
        if from_agent and call.state.phase is not Phase.ENDED:
            holding = _is_hold(body)
            if holding and call.state.phase is Phase.CONNECTED:
                self._apply(call, Hold(via="softphone"))
            elif not holding and call.state.phase is Phase.HELD:
                self._apply(call, Resume(via="softphone"))

    # -- API ---------------------------------------------------------------------------

    def hangup(self, tenant: str, call_id: str, reason: HangupReason) -> None:
        """End every leg of a call (``CallControl.Hangup``)."""
        call = self.find(tenant, call_id)
        phase = call.state.phase
        if phase is Phase.AGENT_RINGING:
            self._cancel_agent(call)
        events = self._apply(call, HangUp(reason))
        code = events[-1].sip_code if events else None  # type: ignore[union-attr]
        if phase in (Phase.CONNECTED, Phase.HELD):
            self._spawn(self._bye(call.caller))
            if call.agent is not None:
                self._spawn(self._bye(call.agent))
        elif not call.invite.final_sent:
            call.invite.respond(call.invite.create_response(code or 480))

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
