"""The SIP endpoint: transports plus the transaction table, the object a TU works with.

A TU (the B2BUA, the registrar, the OPTIONS keep-alive) sends requests with
``send_request`` and awaits the ``ClientTransaction``; it receives requests through the
handler given to ``on_request``, each as a new ``ServerTransaction`` it answers with
``respond``. Everything between — matching, retransmission, absorbing duplicates, ACK for
non-2xx, CANCEL matching, 100 Trying, Via ``received``/``rport``, where responses go —
happens here and in ``transaction``.

Messages outside any transaction go through ``send_raw`` (the ACK for a 2xx, a 2xx
retransmission) and arrive through ``on_ack`` and ``on_stray_response``.
``send_2xx`` does the UAS side of §13.3.1.4: it sends a 2xx to INVITE and retransmits
it until the ACK arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from plateau_sip_gateway.sip.errors import SipParseError
from plateau_sip_gateway.sip.message import SipMessage, SipRequest, SipResponse
from plateau_sip_gateway.sip.parser import MAX_MESSAGE_SIZE, parse
from plateau_sip_gateway.sip.timers import LoopScheduler, Scheduler, TimerHandle, TimerSettings
from plateau_sip_gateway.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    Transaction,
    TransactionKey,
    TransactionMetrics,
    client_key,
    server_key,
)
from plateau_sip_gateway.sip.transport import (
    Address,
    Source,
    TcpConnection,
    TcpTransport,
    Transport,
    UdpTransport,
    normalise_host,
)
from plateau_sip_gateway.sip.values import BRANCH_MAGIC_COOKIE, Via

log = structlog.get_logger(__name__)

DEFAULT_PORT = 5060

RequestHandler = Callable[[ServerTransaction], Awaitable[None] | None]
AckHandler = Callable[[SipRequest, Source], Awaitable[None] | None]
ResponseHandler = Callable[[SipResponse, Source], Awaitable[None] | None]


class TransactionLimitError(RuntimeError):
    """The transaction table is full: retry later or raise ``max_transactions``."""


@dataclass(frozen=True)
class Destination:
    """Where to send a request: a transport and an IP address and port (names must be
    resolved first, e.g. with ``Endpoint.resolve``: sending never blocks on DNS)."""

    transport: str
    host: str
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        if self.transport not in ("UDP", "TCP"):
            raise ValueError(f"transport must be UDP or TCP, not {self.transport!r}")
        try:
            ipaddress.ip_address(normalise_host(self.host))
        except ValueError:
            raise ValueError(
                f"destination host must be an IP address, not {self.host!r}: resolve it first"
            ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")

    @property
    def address(self) -> Address:
        return (normalise_host(self.host), self.port)

    @classmethod
    def udp(cls, host: str, port: int = DEFAULT_PORT) -> Destination:
        return cls("UDP", host, port)

    @classmethod
    def tcp(cls, host: str, port: int = DEFAULT_PORT) -> Destination:
        return cls("TCP", host, port)


@dataclass(frozen=True)
class EndpointSettings:
    """Where the endpoint listens and how much it takes on.

    ``udp_port``/``tcp_port``: 0 picks a free port, None disables that transport.
    ``advertised_host``: the host written in Via (and Contact by TUs); defaults to ``host``,
    and must be set when listening on a wildcard address.
    """

    host: str = "127.0.0.1"
    udp_port: int | None = 0
    tcp_port: int | None = 0
    advertised_host: str | None = None
    timers: TimerSettings = field(default_factory=TimerSettings)
    max_transactions: int = 100_000
    max_connections: int = 1024
    max_message_size: int = MAX_MESSAGE_SIZE
    idle_timeout: float = 300.0
    overload_retry_after: int = 5


@dataclass
class EndpointStats:
    """What the endpoint has seen, for metrics and tests."""

    received: int = 0
    keepalives: int = 0
    malformed_answered: int = 0
    malformed_dropped: int = 0
    stray_acks: int = 0
    stray_responses: int = 0
    overload_rejections: int = 0
    handler_errors: int = 0
    transactions: TransactionMetrics = field(default_factory=TransactionMetrics)


class _Flow:
    """The way back to a transaction's peer: transport, address and connection."""

    __slots__ = ("address", "connection", "transaction", "transport")

    def __init__(
        self, transport: Transport, address: Address, connection: TcpConnection | None
    ) -> None:
        self.transport = transport
        self.address = address
        self.connection = connection
        self.transaction: Transaction | None = None

    def send(self, data: bytes) -> None:
        self.transport.send(data, self.address, connection=self.connection, on_error=self.error)

    def error(self, exc: BaseException) -> None:
        if self.transaction is not None:
            self.transaction.transport_error(exc)


def stamp_via(request: SipRequest, source: Source) -> SipRequest:
    """The request with its top Via stamped as §18.2.1 and RFC 3581 §4 say: ``received``
    when the sent-by host is not the packet's source address, ``received`` and ``rport``
    both when the sender asked for ``rport``."""
    via = request.top_via
    host, port = source.remote
    if via.has_rport and via.rport is None:
        stamped = via.with_received(host, port)
    elif normalise_host(via.host) != host:
        stamped = via.with_received(host)
    else:
        return request
    return request.without_top_via().with_top_via(stamped)


def response_address(via: Via, reliable: bool) -> Address:
    """Where a response goes when there is no connection to reuse (§18.2.2, RFC 3581)."""
    if via.maddr:
        return (normalise_host(via.maddr), via.port or DEFAULT_PORT)
    host = normalise_host(via.received or via.host)
    if not reliable and via.rport:
        return (host, via.rport)
    return (host, via.port or DEFAULT_PORT)


def _token() -> str:
    return secrets.token_hex(8)


class Endpoint:
    """Transports and transaction table under one roof: the TU's view of SIP."""

    def __init__(
        self,
        transports: Sequence[Transport],
        settings: EndpointSettings | None = None,
        *,
        scheduler: Scheduler | None = None,
        token: Callable[[], str] = _token,
    ) -> None:
        self.settings = settings or EndpointSettings()
        self._transports = {t.name: t for t in transports}
        self._scheduler = scheduler
        self._token = token
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        self._request_handler: RequestHandler | None = None
        self._ack_handler: AckHandler | None = None
        self._stray_handler: ResponseHandler | None = None
        self._ack_waiters: dict[tuple[str, int], _AckWaiter] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.stats = EndpointStats()

    # life cycle ---------------------------------------------------------------------------

    @classmethod
    async def listen(
        cls, settings: EndpointSettings | None = None, *, token: Callable[[], str] = _token
    ) -> Endpoint:
        """An endpoint with the UDP and TCP transports ``settings`` ask for, started."""
        settings = settings or EndpointSettings()
        transports: list[Transport] = []
        if settings.udp_port is not None:
            transports.append(UdpTransport(settings.host, settings.udp_port))
        if settings.tcp_port is not None:
            transports.append(
                TcpTransport(
                    settings.host,
                    settings.tcp_port,
                    max_connections=settings.max_connections,
                    max_message_size=settings.max_message_size,
                    idle_timeout=settings.idle_timeout,
                )
            )
        endpoint = cls(transports, settings, token=token)
        await endpoint.start()
        return endpoint

    async def start(self) -> None:
        if self._scheduler is None:
            self._scheduler = LoopScheduler()
        for transport in self._transports.values():
            await transport.start(self.receive)

    async def close(self) -> None:
        """Stop receiving and sending; pending transactions are dropped with the timers."""
        for transport in self._transports.values():
            await transport.close()
        for tx in [*self._clients.values(), *self._servers.values()]:
            tx._timers.cancel_all()
        self._clients.clear()
        self._servers.clear()
        for waiter in list(self._ack_waiters.values()):
            waiter.finish(None)
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("the endpoint is not started")
        return self._scheduler

    def transport(self, name: str) -> Transport:
        try:
            return self._transports[name.upper()]
        except KeyError:
            raise ValueError(f"this endpoint has no {name} transport") from None

    def local_address(self, transport: str) -> Address:
        return self.transport(transport).local_address

    @property
    def transaction_count(self) -> int:
        return len(self._servers) + len(self._clients)

    @property
    def advertised_host(self) -> str:
        host = self.settings.advertised_host or self.settings.host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    # TU registration ----------------------------------------------------------------------

    def on_request(self, handler: RequestHandler) -> None:
        """Who receives each new server transaction (all methods but ACK)."""
        self._request_handler = handler

    def on_ack(self, handler: AckHandler) -> None:
        """Who receives ACKs outside any transaction: the ACKs for 2xx (§17.2.3)."""
        self._ack_handler = handler

    def on_stray_response(self, handler: ResponseHandler) -> None:
        """Who receives responses no client transaction matches (late 2xx retransmissions,
        §13.2.2.4)."""
        self._stray_handler = handler

    # building -----------------------------------------------------------------------------

    def new_branch(self) -> str:
        return f"{BRANCH_MAGIC_COOKIE}{self._token()}"

    def new_tag(self) -> str:
        return self._token()

    def via(self, transport: str, branch: str | None = None) -> Via:
        """A Via for a request sent from here over ``transport`` (RFC 3581 ``rport`` on)."""
        port = self.local_address(transport)[1]
        return Via.new(transport.upper(), self.advertised_host, port, branch or self.new_branch())

    # sending ------------------------------------------------------------------------------

    def send_request(self, request: SipRequest, destination: Destination) -> ClientTransaction:
        """Start a client transaction for ``request`` towards ``destination``.

        A request without Via gets one (new branch, ``rport``); one with a Via is sent as
        it is (a CANCEL carrying its INVITE's branch). Max-Forwards 70 is added when
        missing. Raises TransactionLimitError when the table is full.
        """
        if request.method == "ACK":
            raise ValueError("an ACK is not a transaction: send it with send_raw")
        transport = self.transport(destination.transport)
        if "Via" not in request.headers:
            request = request.with_top_via(self.via(destination.transport))
        if "Max-Forwards" not in request.headers:
            request = request.with_header("Max-Forwards", "70")
        if self.transaction_count >= self.settings.max_transactions:
            self.stats.overload_rejections += 1
            raise TransactionLimitError(
                f"{self.transaction_count} transactions in progress "
                f"(max_transactions={self.settings.max_transactions})"
            )
        flow = _Flow(transport, destination.address, None)
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(
            request,
            flow.send,
            reliable=transport.reliable,
            timers=self.settings.timers,
            scheduler=self.scheduler,
            metrics=self.stats.transactions,
            on_terminated=self._forget_client,
        )
        flow.transaction = tx
        if tx.key in self._clients:
            raise ValueError(f"a transaction with branch {tx.branch} is already running")
        self._clients[tx.key] = tx
        tx.start()
        return tx

    async def request(
        self, request: SipRequest, destination: Destination
    ) -> tuple[ClientTransaction, SipResponse]:
        """Send ``request`` and wait for its final response (408/503 when none came)."""
        tx = self.send_request(request, destination)
        return tx, await tx.final_response()

    async def cancel(
        self, invite: InviteClientTransaction, destination: Destination
    ) -> SipResponse | None:
        """CANCEL a pending INVITE (§9.1): wait for a provisional response first, then
        send the CANCEL; its final response, or None when the INVITE ended first."""
        async with contextlib.aclosing(invite.responses()) as responses:
            async for response in responses:
                if response.is_final:
                    return None
                break
        if invite.state is not State.PROCEEDING:
            return None
        _, response = await self.request(invite.create_cancel(), destination)
        return response

    def send_response(self, transaction: ServerTransaction, response: SipResponse) -> bool:
        """Send ``response`` through ``transaction`` (False once too late)."""
        return transaction.respond(response)

    def send_raw(self, message: SipMessage, destination: Destination) -> None:
        """Send a message outside any transaction (ACK for 2xx, 2xx retransmission).

        A request without Via gets one, as in ``send_request``."""
        if isinstance(message, SipRequest) and "Via" not in message.headers:
            message = message.with_top_via(self.via(destination.transport))
        self.transport(destination.transport).send(message.encode(), destination.address)

    def send_2xx(
        self, transaction: InviteServerTransaction, response: SipResponse
    ) -> asyncio.Future[SipRequest | None]:
        """Answer an INVITE with a 2xx and retransmit it until its ACK arrives (§13.3.1.4):
        the ACK, or None after 64*T1 without one (the TU should then send BYE)."""
        if not 200 <= response.status < 300:
            raise ValueError("send_2xx is for 2xx responses; use respond for the others")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SipRequest | None] = loop.create_future()
        if not transaction.respond(response):
            future.set_result(None)
            return future
        key = (transaction.request.call_id, transaction.request.cseq.number)
        waiter = _AckWaiter(self, key, transaction, response, future)
        self._ack_waiters[key] = waiter
        waiter.start()
        return future

    # receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes, source: Source) -> None:
        """One message from a transport. Never raises: a bad message is answered or
        dropped, and counted."""
        self.stats.received += 1
        if not data.strip(b"\r\n"):
            self.stats.keepalives += 1  # a CRLF keep-alive over UDP needs no answer
            return
        try:
            message = parse(data)
        except SipParseError as exc:
            self._malformed(exc, source)
            return
        except Exception:
            log.exception("sip.endpoint.parser_failed", remote=source.remote)
            self.stats.malformed_dropped += 1
            return
        try:
            if isinstance(message, SipRequest):
                self._receive_request(message, source)
            else:
                self._receive_response(message, source)
        except SipParseError as exc:
            self.stats.malformed_dropped += 1
            log.info("sip.endpoint.bad_message", remote=source.remote, reason=exc.reason)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("sip.endpoint.receive_failed", remote=source.remote)

    def _malformed(self, exc: SipParseError, source: Source) -> None:
        if not exc.can_respond:
            self.stats.malformed_dropped += 1
            log.debug("sip.endpoint.dropped", remote=source.remote, reason=exc.reason)
            return
        self.stats.malformed_answered += 1
        log.info("sip.endpoint.rejected", remote=source.remote, reason=exc.reason)
        response = exc.create_response(to_tag=self.new_tag())
        transport = self._transports.get(source.transport)
        if transport is not None:
            # The packet's source, not the Via: the Via is what may be broken.
            transport.send(response.encode(), source.remote, connection=source.connection)

    def _receive_request(self, request: SipRequest, source: Source) -> None:
        request = stamp_via(request, source)
        key = server_key(request)
        tx = self._servers.get(key)
        if tx is not None and tx.matches(request):
            tx.receive_request(request)
            return
        if request.method == "ACK":
            self._stray_ack(request, source)
            return
        transport = self._transports[source.transport]
        if self.transaction_count >= self.settings.max_transactions:
            self._overloaded(request, source, transport)
            return
        flow = _Flow(
            transport, response_address(request.top_via, transport.reliable), source.connection
        )
        options: dict[str, Any] = {
            "reliable": transport.reliable,
            "timers": self.settings.timers,
            "scheduler": self.scheduler,
            "metrics": self.stats.transactions,
            "on_terminated": self._forget_server,
            "to_tag": request.to.tag or self.new_tag(),
        }
        server: ServerTransaction
        if request.method == "INVITE":
            server = InviteServerTransaction(request, flow.send, **options)
        else:
            server = NonInviteServerTransaction(request, flow.send, **options)
        flow.transaction = server
        self._servers[key] = server
        if isinstance(server, InviteServerTransaction):
            server.start()
        if request.method == "CANCEL":
            assert isinstance(server, NonInviteServerTransaction)
            self._cancel(server, key)
            return
        self._dispatch(server)

    def _overloaded(self, request: SipRequest, source: Source, transport: Transport) -> None:
        self.stats.overload_rejections += 1
        response = request.create_response(
            503,
            to_tag=self.new_tag(),
            headers=(("Retry-After", str(self.settings.overload_retry_after)),),
        )
        address = response_address(request.top_via, transport.reliable)
        transport.send(response.encode(), address, connection=source.connection)

    def _cancel(self, cancel: NonInviteServerTransaction, key: TransactionKey) -> None:
        """§9.2: a CANCEL has its own transaction, matched to the INVITE's."""
        invite = self._servers.get((*key[:-1], "INVITE"))
        if not isinstance(invite, InviteServerTransaction) or not invite.matches(cancel.request):
            cancel.respond(cancel.create_response(481))
            return
        sent = invite.last_response
        cancel.to_tag = sent.to.tag if sent is not None and sent.to.tag else invite.to_tag
        if invite.on_cancel is not None:
            try:
                invite.on_cancel(cancel)
            except Exception:
                self.stats.handler_errors += 1
                log.exception("sip.endpoint.cancel_handler_failed")
                cancel.respond(cancel.create_response(500))
            return
        cancel.respond(cancel.create_response(200))
        if not invite.final_sent:
            invite.respond(invite.create_response(487))

    def _dispatch(self, tx: ServerTransaction) -> None:
        handler = self._request_handler
        if handler is None:
            tx.respond(tx.create_response(503, "No Service Here Yet"))
            return
        try:
            result = handler(tx)
        except Exception as exc:
            self._handler_failed(tx, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._handler_done(t, tx))

    def _handler_done(self, task: asyncio.Future[Any], tx: ServerTransaction) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._handler_failed(tx, error)

    def _handler_failed(self, tx: ServerTransaction, error: BaseException) -> None:
        self.stats.handler_errors += 1
        log.error("sip.endpoint.handler_failed", method=tx.method, exc_info=error)
        if not tx.final_sent and not tx.is_terminated:
            tx.respond(tx.create_response(500))

    def _stray_ack(self, ack: SipRequest, source: Source) -> None:
        waiter = self._ack_waiters.get((ack.call_id, ack.cseq.number))
        if waiter is not None:
            waiter.finish(ack)
            return
        if self._ack_handler is None:
            self.stats.stray_acks += 1
            return
        self._run(self._ack_handler(ack, source))

    def _receive_response(self, response: SipResponse, source: Source) -> None:
        vias = response.vias
        branch = vias[0].branch if vias else None
        tx = self._clients.get(client_key(branch, response.cseq.method)) if branch else None
        if tx is not None and len(vias) == 1:
            tx.receive_response(response)
            return
        # §8.1.3.3: a response with several Vias was meant for someone else.
        if self._stray_handler is None or len(vias) != 1:
            self.stats.stray_responses += 1
            return
        self._run(self._stray_handler(response, source))

    def _run(self, result: Awaitable[None] | None) -> None:
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _forget_client(self, tx: Transaction) -> None:
        if self._clients.get(tx.key) is tx:
            del self._clients[tx.key]

    def _forget_server(self, tx: Transaction) -> None:
        if self._servers.get(tx.key) is tx:
            del self._servers[tx.key]


class _AckWaiter:
    """Retransmits a 2xx at T1, 2*T1 ... T2 until the ACK comes or 64*T1 pass."""

    def __init__(
        self,
        endpoint: Endpoint,
        key: tuple[str, int],
        transaction: InviteServerTransaction,
        response: SipResponse,
        future: asyncio.Future[SipRequest | None],
    ) -> None:
        self._endpoint = endpoint
        self._key = key
        self._transaction = transaction
        self._response = response
        self._future = future
        self._interval = endpoint.settings.timers.t1
        self._handle: TimerHandle | None = None
        self._deadline: TimerHandle | None = None

    def start(self) -> None:
        scheduler = self._endpoint.scheduler
        timers = self._endpoint.settings.timers
        if not self._transaction.reliable:
            self._handle = scheduler.call_later(self._interval, self._retransmit)
        self._deadline = scheduler.call_later(timers.transaction_timeout, lambda: self.finish(None))

    def _retransmit(self) -> None:
        if self._future.done():
            return
        self._endpoint.stats.transactions.retransmissions += 1
        self._transaction.respond(self._response)
        self._interval = min(self._interval * 2, self._endpoint.settings.timers.t2)
        self._handle = self._endpoint.scheduler.call_later(self._interval, self._retransmit)

    def finish(self, ack: SipRequest | None) -> None:
        for handle in (self._handle, self._deadline):
            if handle is not None:
                handle.cancel()
        if self._endpoint._ack_waiters.get(self._key) is self:
            del self._endpoint._ack_waiters[self._key]
        if not self._future.done():
            self._future.set_result(ack)
