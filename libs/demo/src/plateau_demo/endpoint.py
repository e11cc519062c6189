"""A SIP endpoint over one UDP socket: client transactions that retransmit until answered,
server transactions that answer a retransmitted request with the response already sent, and
2xx responses to INVITE repeated until their ACK (RFC 3261 §17, simplified to what the demo
needs).

Whatever cannot be read, or answers nothing we sent, is logged and dropped: the traffic
goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from plateau_demo.sip import SipMessage, SipParseError, ack_for_failure, parse

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
TIMEOUT = 64 * T1  # timer B/F: no final response in 32 s is a timeout
Address = tuple[str, int]
RequestHandler = Callable[[SipMessage, Address], Awaitable[None]]


@dataclass
class _Client:
    request: SipMessage
    destination: Address
    final: asyncio.Future[SipMessage]
    on_provisional: Callable[[SipMessage], None] | None
    provisional_seen: bool = False
    ack: SipMessage | None = None  # the ACK of a non-2xx final, sent again on its repeats


@dataclass
class _Server:
    last: SipMessage | None = None
    destination: Address | None = None
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


class SipEndpoint(asyncio.DatagramProtocol):
    """One UDP socket's SIP traffic; ``on_request`` gets every new request but ACKs of our
    own non-2xx answers."""

    def __init__(self, name: str, on_request: RequestHandler) -> None:
        self.name = name
        self._on_request = on_request
        self._transport: asyncio.DatagramTransport | None = None
        self._clients: dict[tuple[str, str], _Client] = {}
        self._servers: dict[tuple[str, str, str], _Server] = {}
        self._acks: dict[tuple[str, int], SipMessage] = {}  # 2xx ACKs we sent, by call and CSeq
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0
        self.dropped = 0

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def open(cls, name: str, host: str, port: int, on_request: RequestHandler) -> SipEndpoint:
        loop = asyncio.get_running_loop()
        endpoint = cls(name, on_request)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: endpoint, local_addr=(host, port)
        )
        sockname = transport.get_extra_info("sockname")
        endpoint.host, endpoint.port = sockname[0], int(sockname[1])
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients.values():
            if not client.final.done():
                client.final.cancel()
        if self._transport is not None:
            self._transport.close()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending -------------------------------------------------------------------------

    def send(self, message: SipMessage, destination: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.sendto(message.encode(), destination)

    async def request(
        self,
        message: SipMessage,
        destination: Address,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> SipMessage | None:
        """Send ``message`` (retransmitted as §17.1 says) and return its final response, or
        None after 32 s without one. A non-2xx final to an INVITE is ACKed here."""
        key = (message.branch, message.cseq[1])
        loop = asyncio.get_running_loop()
        client = _Client(message, destination, loop.create_future(), on_provisional)
        self._clients[key] = client
        invite = message.method == "INVITE"
        try:
            self.send(message, destination)
            interval = T1
            deadline = loop.time() + TIMEOUT
            while not client.final.done():
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(client.final), min(interval, left))
                if client.final.done():
                    break
                if invite and client.provisional_seen:
                    continue  # timer A stops at the first provisional; wait for the final
                self.send(message, destination)
                interval = interval * 2 if invite else min(interval * 2, T2)
            return client.final.result()
        finally:
            if client.ack is None:
                self._clients.pop(key, None)
            else:
                # Keep it a while: the final may be repeated until our ACK got through.
                self._spawn(self._forget_later(key))

    async def _forget_later(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(TIMEOUT)
        self._clients.pop(key, None)

    def ack_2xx(self, ack: SipMessage, destination: Address) -> None:
        """Send the ACK of a 2xx and repeat it whenever that 2xx is repeated."""
        number, _ = ack.cseq
        self._acks[(ack.call_id, number)] = ack
        self.send(ack, destination)
        self._spawn(self._forget_ack_later((ack.call_id, number)))

    async def _forget_ack_later(self, key: tuple[str, int]) -> None:
        await asyncio.sleep(TIMEOUT)
        self._acks.pop(key, None)

    def respond(self, req: SipMessage, resp: SipMessage, source: Address) -> None:
        """Answer ``req`` and remember it for retransmissions of ``req``. A 2xx to an
        INVITE is repeated until its ACK arrives (or 32 s pass)."""
        key = self._server_key(req)
        server = self._servers.setdefault(key, _Server())
        server.last, server.destination = resp, source
        self.send(resp, source)
        if resp.status >= 200:
            self._spawn(self._forget_server_later(key))
        if req.method == "INVITE" and 200 <= resp.status < 300:
            self._spawn(self._repeat_until_ack(req, resp, source))

    async def _repeat_until_ack(self, req: SipMessage, resp: SipMessage, source: Address) -> None:
        number, _ = req.cseq
        key = ("2xx", req.call_id, str(number))
        server = self._servers.setdefault(key, _Server())
        interval = T1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        try:
            while not server.confirmed.is_set() and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.confirmed.wait(), interval)
                if not server.confirmed.is_set():
                    self.send(resp, source)
                    interval = min(interval * 2, T2)
        finally:
            self._servers.pop(key, None)

    async def _forget_server_later(self, key: tuple[str, str, str]) -> None:
        await asyncio.sleep(TIMEOUT)
        self._servers.pop(key, None)

    @staticmethod
    def _server_key(req: SipMessage) -> tuple[str, str, str]:
        method = "INVITE" if req.method == "ACK" else req.method
        return (req.branch, req.call_id, method)

    # -- receiving -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not data.strip():
            return  # keep-alive
        try:
            message = parse(data)
        except SipParseError as exc:
            self.dropped += 1
            log.warning("%s: unreadable datagram from %s:%s dropped: %s", self.name, *source, exc)
            return
        try:
            if message.is_request:
                self._request_received(message, source)
            else:
                self._response_received(message, source)
        except SipParseError as exc:
            self.dropped += 1
            log.warning("%s: message from %s:%s dropped: %s", self.name, *source, exc)

    def _response_received(self, message: SipMessage, source: Address) -> None:
        _, method = message.cseq
        client = self._clients.get((message.branch, method))
        if client is None:
            if method == "INVITE" and 200 <= message.status < 300:
                number, _ = message.cseq
                ack = self._acks.get((message.call_id, number))
                if ack is not None:
                    self.send(ack, source)  # our ACK was lost: the 2xx came again
                    return
            log.debug("%s: a response nobody waits for: %s", self.name, message.status)
            return
        if message.status < 200:
            client.provisional_seen = True
            if client.on_provisional is not None and not client.final.done():
                client.on_provisional(message)
            return
        if method == "INVITE" and message.status >= 300:
            if client.ack is None:
                client.ack = ack_for_failure(client.request, message)
            self.send(client.ack, client.destination)
        if not client.final.done():
            client.final.set_result(message)

    def _request_received(self, message: SipMessage, source: Address) -> None:
        if message.method == "ACK":
            number, _ = message.cseq
            confirmed = self._servers.get(("2xx", message.call_id, str(number)))
            if confirmed is not None:
                confirmed.confirmed.set()
            if self._servers.get(self._server_key(message)) is not None:
                return  # the ACK of a non-2xx answer of ours: the transaction is done
        else:
            server = self._servers.get(self._server_key(message))
            if server is not None:
                if server.last is not None and server.destination is not None:
                    self.send(server.last, server.destination)  # a retransmission
                return
            self._servers[self._server_key(message)] = _Server()
        self._spawn(self._handle(message, source))

    async def _handle(self, message: SipMessage, source: Address) -> None:
        try:
            await self._on_request(message, source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: handling %s failed", self.name, message.method)
