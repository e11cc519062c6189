"""SIP transactions (RFC 3261 §17, with the RFC 6026 fix for 2xx to INVITE).

Four explicit state machines: INVITE and non-INVITE, client and server. They do no I/O
of their own: each is given a ``send`` callable (bytes to its peer, already addressed by
the endpoint) and a ``Scheduler``; the endpoint feeds them what arrives
(``receive_response``, ``receive_request``) and what goes wrong (``transport_error``).
So every transition and timer can be checked in virtual time without a socket.

What the TU sees:

* a client transaction delivers each response it passes up (provisional, then one final)
  to ``responses()`` / ``final_response()`` and to ``on_response``. A timeout (Timer B or
  F) or a transport error (§17.1.4) is delivered as a locally built 408 or 503, with
  ``failure`` saying which, so a TU handles "no answer" like any other failure;
* a server transaction is handed to the TU, which answers with ``respond()``. Request
  retransmissions are absorbed (the last response is sent again); the TU hears of a lost
  ACK (Timer H) or a transport error through ``on_failure``.

2xx responses to INVITE are end-to-end (§13.3.1.4, §13.2.2.4): their retransmission and
their ACK belong to the TU (the dialog), not to the transaction. Following RFC 6026 both
INVITE transactions then wait in ``Accepted`` for 64*T1 instead of ending at once, so an
INVITE retransmitted after the 2xx is absorbed instead of starting a second call, and a
retransmitted 2xx still reaches the TU, which answers it with the same ACK.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from enum import Enum

import structlog

from plateau_sip_gateway.sip.headers import Headers
from plateau_sip_gateway.sip.message import SipRequest, SipResponse
from plateau_sip_gateway.sip.timers import Scheduler, TimerHandle, TimerSettings

log = structlog.get_logger(__name__)

TransactionKey = tuple[str, ...]
"""What a message is matched on (§17.1.3, §17.2.3); opaque to everyone but this module."""

_MAX_DELIVERED = 64  # provisional responses kept for ``responses()``; a flood is not kept


class State(Enum):
    """Where a transaction stands (RFC 3261 Figures 5-8, RFC 6026 Figures 3-4)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TransactionFailure(Exception):
    """Why a transaction ended without a response from the peer."""


class TransactionTimeout(TransactionFailure):
    """No response (Timer B or F) or no ACK (Timer H) in time: 64*T1."""

    def __init__(self, timer: str, seconds: float) -> None:
        super().__init__(f"Timer {timer} fired: nothing heard from the peer in {seconds:g} s")
        self.timer = timer


class TransportFailure(TransactionFailure):
    """The transport could not deliver the message (§17.1.4, §17.2.4)."""

    def __init__(self, cause: BaseException | str) -> None:
        super().__init__(f"transport error: {cause}")
        self.cause = cause


@dataclass
class TransactionMetrics:
    """Counters shared by the transactions of one endpoint."""

    retransmissions: int = 0
    """Requests (A, E) and responses (G, retransmitted request answered) sent again."""
    absorbed: int = 0
    """Retransmitted requests, ACKs or responses swallowed by a transaction."""
    timeouts: int = 0
    transport_errors: int = 0


Send = Callable[[bytes], None]


def method_bucket(method: str) -> str:
    """The method a transaction is keyed by: an ACK belongs to its INVITE (§17.2.3)."""
    return "INVITE" if method == "ACK" else method


def client_key(branch: str, method: str) -> TransactionKey:
    """§17.1.3: a response matches by its top Via branch and its CSeq method."""
    return ("c", branch, method)


def server_key(request: SipRequest) -> TransactionKey:
    """§17.2.3: the key of the server transaction ``request`` belongs to.

    With an RFC 3261 branch: branch, sent-by and method (ACK counting as INVITE). Without
    one (an RFC 2543 peer): Request-URI, From tag, Call-ID, CSeq number, the whole top
    Via and method; the To tag is compared separately (``ServerTransaction.matches``)
    because an ACK carries the tag of the response, not of the request.
    """
    via = request.top_via
    bucket = method_bucket(request.method)
    if via.has_rfc3261_branch:
        return ("s", via.branch or "", via.sent_by.lower(), bucket)
    return (
        "s2543",
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(via),
        bucket,
    )


class _Timers:
    """The named timers of one transaction."""

    __slots__ = ("_handles", "_scheduler")

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._handles: dict[str, TimerHandle] = {}

    def start(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self.cancel(name)

        def fire() -> None:
            self._handles.pop(name, None)
            callback()

        self._handles[name] = self._scheduler.call_later(delay, fire)

    def cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def __contains__(self, name: str) -> bool:
        return name in self._handles


class Transaction(ABC):
    """What client and server transactions share: state, timers, termination."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        key: TransactionKey,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
    ) -> None:
        self.request = request
        self.key = key
        self.reliable = reliable
        self._send = send
        self._settings = timers
        self._scheduler = scheduler
        self._timers = _Timers(scheduler)
        self._metrics = metrics if metrics is not None else TransactionMetrics()
        self._on_terminated = on_terminated
        self.state = self._initial_state()
        self.failure: TransactionFailure | None = None

    @abstractmethod
    def _initial_state(self) -> State: ...

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def branch(self) -> str | None:
        return self.request.top_via.branch

    @property
    def is_terminated(self) -> bool:
        return self.state is State.TERMINATED

    def running_timers(self, *names: str) -> set[str]:
        """Which of the named timers are running (for tests and diagnostics)."""
        return {name for name in names if name in self._timers}

    def transport_error(self, error: BaseException | str) -> None:
        """The transport failed to deliver something this transaction sent."""
        if self.is_terminated:
            return
        self._metrics.transport_errors += 1
        self._fail(TransportFailure(error))

    @abstractmethod
    def _fail(self, failure: TransactionFailure) -> None: ...

    def _terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        self._timers.cancel_all()
        if self._on_terminated is not None:
            self._on_terminated(self)

    def _after(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        """Start a timer; a zero delay (reliable transports) fires it straight away."""
        if delay <= 0:
            callback()
        else:
            self._timers.start(name, delay, callback)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"


# client transactions ----------------------------------------------------------------------


class ClientTransaction(Transaction):
    """A request this endpoint sent, and the responses to it (§17.1)."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
    ) -> None:
        branch = request.top_via.branch
        if not request.top_via.has_rfc3261_branch or branch is None:
            raise ValueError("a client transaction needs a top Via with a z9hG4bK branch")
        super().__init__(
            request,
            send,
            key=client_key(branch, request.method),
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
        )
        self._encoded = request.encode()
        self._delivered: list[SipResponse] = []
        self._waiters: list[asyncio.Future[None]] = []
        self.final: SipResponse | None = None
        self.on_response: Callable[[SipResponse], None] | None = None
        self.retransmissions = 0

    def start(self) -> None:
        """Send the request and start the timers."""
        self._transmit()
        self._start_timers()

    @abstractmethod
    def _start_timers(self) -> None: ...

    @abstractmethod
    def receive_response(self, response: SipResponse) -> None:
        """A response the endpoint matched to this transaction."""

    def _transmit(self) -> None:
        self._send(self._encoded)

    def _retransmit(self) -> None:
        self.retransmissions += 1
        self._metrics.retransmissions += 1
        self._transmit()

    def _deliver(self, response: SipResponse) -> None:
        """Pass a response up to the TU."""
        if response.is_final and self.final is None:
            self.final = response
            self._delivered.append(response)
        elif response.is_provisional and len(self._delivered) < _MAX_DELIVERED:
            self._delivered.append(response)
        if self.on_response is not None:
            try:
                self.on_response(response)
            except Exception:
                log.exception("sip.transaction.tu_callback_failed", method=self.method)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, failure: TransactionFailure) -> None:
        self.failure = failure
        if self.final is None:
            status = 408 if isinstance(failure, TransactionTimeout) else 503
            reason = "Request Timeout" if status == 408 else "Service Unavailable"
            detail = str(failure).replace("\r", " ").replace("\n", " ")
            self._deliver(self.request.create_response(status, f"{reason} ({detail})"))
        self._terminate()

    def _wait(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def final_response(self) -> SipResponse:
        """The final response: the peer's, or a local 408 (timeout) or 503 (transport)."""
        while self.final is None:
            await self._wait()
        return self.final

    async def responses(self) -> AsyncGenerator[SipResponse, None]:
        """Every response passed to the TU, provisional ones first, ending with the final."""
        index = 0
        while True:
            while index < len(self._delivered):
                response = self._delivered[index]
                index += 1
                yield response
                if response.is_final:
                    return
            await self._wait()


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 with RFC 6026: Calling → Proceeding → Completed | Accepted → Terminated."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(
            request,
            send,
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
        )
        self._ack: bytes | None = None
        self._interval = 0.0

    def _initial_state(self) -> State:
        return State.CALLING

    def _start_timers(self) -> None:
        interval = self._settings.timer_a(self.reliable)
        if interval is not None:
            self._interval = interval
            self._timers.start("A", interval, self._timer_a)
        self._timers.start("B", self._settings.timer_b, self._timer_b)

    def _timer_a(self) -> None:
        if self.state is not State.CALLING:
            return
        self._retransmit()
        self._interval = self._settings.next_interval(self._interval, capped=False)
        self._timers.start("A", self._interval, self._timer_a)

    def _timer_b(self) -> None:
        if self.state is State.CALLING:
            self._metrics.timeouts += 1
            self._fail(TransactionTimeout("B", self._settings.timer_b))

    def receive_response(self, response: SipResponse) -> None:
        state = self.state
        status = response.status
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                if state is State.CALLING:
                    self.state = State.PROCEEDING
                    self._timers.cancel("A")
                    self._timers.cancel("B")
                self._deliver(response)
            elif status < 300:
                self._accept(response)
            else:
                self._complete(response)
        elif state is State.COMPLETED:
            if status >= 300:
                self._metrics.absorbed += 1
                self._send_ack()
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                self._deliver(response)  # a 2xx retransmission or fork: the TU ACKs it
            else:
                self._metrics.absorbed += 1

    def _accept(self, response: SipResponse) -> None:
        self.state = State.ACCEPTED
        self._timers.cancel_all()
        self._deliver(response)
        self._timers.start("M", self._settings.timer_m, self._terminate)

    def _complete(self, response: SipResponse) -> None:
        self.state = State.COMPLETED
        self._timers.cancel_all()
        self._ack = create_ack(self.request, response).encode()
        self._send_ack()
        self._deliver(response)
        self._after("D", self._settings.timer_d_for(self.reliable), self._terminate)

    def _send_ack(self) -> None:
        if self._ack is not None:
            self._send(self._ack)

    def create_cancel(self) -> SipRequest:
        """The CANCEL for this INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq
        number, Route and top Via (so the same branch) — send it as its own transaction
        once a provisional response has arrived."""
        request = self.request
        fields: list[tuple[str, str]] = [("Via", request.headers.get_all("Via")[0])]
        for name in ("Route", "From", "To", "Call-ID"):
            fields.extend((name, v) for v in request.headers.get_all(name))
        fields.append(("CSeq", f"{request.cseq.number} CANCEL"))
        fields.append(("Max-Forwards", "70"))
        return SipRequest("CANCEL", request.uri, Headers(fields))


def create_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final response to ``invite`` (§17.1.1.3): the INVITE's
    Request-URI, top Via, Route, From, Call-ID and CSeq number, and the response's To."""
    fields: list[tuple[str, str]] = [("Via", invite.headers.get_all("Via")[0])]
    fields.extend(("Route", v) for v in invite.headers.get_all("Route"))
    for name, source in (("From", invite), ("To", response), ("Call-ID", invite)):
        value = source.headers.get(name)
        if value is not None:
            fields.append((name, value))
    fields.append(("CSeq", f"{invite.cseq.number} ACK"))
    fields.append(("Max-Forwards", "70"))
    return SipRequest("ACK", invite.uri, Headers(fields))


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying → Proceeding → Completed → Terminated."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} cannot start a non-INVITE client transaction")
        super().__init__(
            request,
            send,
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
        )
        self._interval = 0.0

    def _initial_state(self) -> State:
        return State.TRYING

    def _start_timers(self) -> None:
        interval = self._settings.timer_e(self.reliable)
        if interval is not None:
            self._interval = interval
            self._timers.start("E", interval, self._timer_e)
        self._timers.start("F", self._settings.timer_f, self._timer_f)

    def _timer_e(self) -> None:
        if self.state is State.TRYING:
            self._retransmit()
            self._interval = self._settings.next_interval(self._interval, capped=True)
        elif self.state is State.PROCEEDING:
            self._retransmit()
            self._interval = self._settings.t2
        else:
            return
        self._timers.start("E", self._interval, self._timer_e)

    def _timer_f(self) -> None:
        if self.state in (State.TRYING, State.PROCEEDING):
            self._metrics.timeouts += 1
            self._fail(TransactionTimeout("F", self._settings.timer_f))

    def receive_response(self, response: SipResponse) -> None:
        if self.state in (State.TRYING, State.PROCEEDING):
            if response.is_provisional:
                self.state = State.PROCEEDING
                self._deliver(response)
            else:
                self.state = State.COMPLETED
                self._timers.cancel_all()
                self._deliver(response)
                self._after("K", self._settings.timer_k(self.reliable), self._terminate)
        else:
            self._metrics.absorbed += 1


# server transactions ----------------------------------------------------------------------


class ServerTransaction(Transaction):
    """A request this endpoint received, which the TU answers with ``respond`` (§17.2)."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
        to_tag: str | None = None,
    ) -> None:
        super().__init__(
            request,
            send,
            key=server_key(request),
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
        )
        self.to_tag = to_tag
        """The To tag this UAS answers with, unless the request already had one."""
        self.last_response: SipResponse | None = None
        self._last_encoded: bytes | None = None
        self.on_failure: Callable[[TransactionFailure], None] | None = None
        self.retransmissions = 0

    @property
    def final_sent(self) -> bool:
        """Whether a final response has gone out (later ones are refused)."""
        return self.last_response is not None and self.last_response.is_final

    def matches(self, request: SipRequest) -> bool:
        """The To-tag check of RFC 2543 matching (§17.2.3), the rest being in the key."""
        if self.key[0] != "s2543":
            return True
        tag = request.to.tag
        if request.method == "ACK" and self.last_response is not None:
            return tag == self.last_response.to.tag
        return tag == self.request.to.tag

    def create_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """A response to this transaction's request, carrying its To tag (none on 100)."""
        return self.request.create_response(
            status,
            reason,
            to_tag=None if status == 100 else self.to_tag,
            headers=headers,
            body=body,
        )

    @abstractmethod
    def receive_request(self, request: SipRequest) -> None:
        """A retransmission of the request (or, for INVITE, an ACK) matched here."""

    @abstractmethod
    def respond(self, response: SipResponse) -> bool:
        """Send ``response`` from the TU; False (and nothing sent) once it is too late."""

    def _transmit(self, response: SipResponse) -> None:
        self.last_response = response
        self._last_encoded = response.encode()
        self._send(self._last_encoded)

    def _resend_last(self) -> None:
        if self._last_encoded is not None:
            self.retransmissions += 1
            self._metrics.retransmissions += 1
            self._send(self._last_encoded)

    def _fail(self, failure: TransactionFailure) -> None:
        self.failure = failure
        self._terminate()
        if self.on_failure is not None:
            try:
                self.on_failure(failure)
            except Exception:
                log.exception("sip.transaction.tu_callback_failed", method=self.method)


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 with RFC 6026: Proceeding → Completed → Confirmed, or Accepted; then
    Terminated. Sends ``100 Trying`` itself (``TimerSettings.trying_delay``)."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
        to_tag: str | None = None,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(
            request,
            send,
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
            to_tag=to_tag,
        )
        self._interval = 0.0
        self.on_cancel: Callable[[NonInviteServerTransaction], None] | None = None
        """How the TU takes a CANCEL of this INVITE (§9.2). Unset, the endpoint answers
        200 to the CANCEL and 487 to the INVITE if it has no final response yet. Cleared
        once a final response is sent: a CANCEL then has no effect (§9.2), and the TU's
        callback (which holds its call) is not kept for the 32 s the transaction lingers."""
        self.on_ack: Callable[[SipRequest], None] | None = None
        """An ACK matched while ``Accepted`` (a 2xx ACK from a peer reusing the branch)."""

    def _initial_state(self) -> State:
        return State.PROCEEDING

    def start(self) -> None:
        """Start the transaction: ``100 Trying`` now or after ``trying_delay``."""
        delay = self._settings.trying_delay
        if delay <= 0:
            self._send_trying()
        else:
            self._timers.start("Trying", delay, self._send_trying)

    def _send_trying(self) -> None:
        if self.state is State.PROCEEDING and self.last_response is None:
            self._transmit(self.create_response(100))

    def receive_request(self, request: SipRequest) -> None:
        state = self.state
        if request.method == "INVITE":
            self._metrics.absorbed += 1
            if state is State.PROCEEDING:
                if self.last_response is None:
                    self._timers.cancel("Trying")
                    self._send_trying()
                else:
                    self._resend_last()
            elif state is State.COMPLETED:
                self._resend_last()
        elif request.method == "ACK":
            if state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._timers.cancel_all()
                self._after("I", self._settings.timer_i(self.reliable), self._terminate)
            elif state is State.ACCEPTED and self.on_ack is not None:
                self.on_ack(request)
            else:
                self._metrics.absorbed += 1

    def respond(self, response: SipResponse) -> bool:
        state = self.state
        if state is State.PROCEEDING:
            self._timers.cancel("Trying")
            self._transmit(response)
            if response.status >= 200:
                self.on_cancel = None
            if 200 <= response.status < 300:
                self.state = State.ACCEPTED
                self._timers.start("L", self._settings.timer_l, self._terminate)
            elif response.status >= 300:
                self.state = State.COMPLETED
                interval = self._settings.timer_g(self.reliable)
                if interval is not None:
                    self._interval = interval
                    self._timers.start("G", interval, self._timer_g)
                self._timers.start("H", self._settings.timer_h, self._timer_h)
            return True
        if state is State.ACCEPTED and 200 <= response.status < 300:
            self._transmit(response)  # the TU retransmitting its 2xx (§13.3.1.4)
            return True
        return False

    def _timer_g(self) -> None:
        if self.state is State.COMPLETED:
            self._resend_last()
            self._interval = self._settings.next_interval(self._interval, capped=True)
            self._timers.start("G", self._interval, self._timer_g)

    def _timer_h(self) -> None:
        if self.state is State.COMPLETED:
            self._metrics.timeouts += 1
            self._fail(TransactionTimeout("H", self._settings.timer_h))


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying → Proceeding → Completed → Terminated."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        *,
        reliable: bool,
        timers: TimerSettings,
        scheduler: Scheduler,
        metrics: TransactionMetrics | None = None,
        on_terminated: Callable[[Transaction], None] | None = None,
        to_tag: str | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} cannot start a non-INVITE server transaction")
        super().__init__(
            request,
            send,
            reliable=reliable,
            timers=timers,
            scheduler=scheduler,
            metrics=metrics,
            on_terminated=on_terminated,
            to_tag=to_tag,
        )

    def _initial_state(self) -> State:
        return State.TRYING

    def receive_request(self, request: SipRequest) -> None:
        self._metrics.absorbed += 1
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend_last()

    def respond(self, response: SipResponse) -> bool:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return False
        self._transmit(response)
        if response.is_provisional:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._after("J", self._settings.timer_j(self.reliable), self._terminate)
        return True
