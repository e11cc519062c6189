"""The endpoint's UDP and TCP transports over real loopback sockets: retransmission and
timeouts against a silent peer, malformed datagrams, TCP framing and keep-alives."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from plateau_sip_gateway.sip import (
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse,
    parse_uri,
)
from plateau_sip_gateway.sip.endpoint import Destination, Endpoint, EndpointSettings
from plateau_sip_gateway.sip.timers import TimerSettings
from plateau_sip_gateway.sip.transaction import ServerTransaction, TransactionTimeout
from plateau_sip_gateway.sip.transport import TcpTransport

pytestmark = pytest.mark.integration

FAST = TimerSettings(t1=0.05, t2=0.4, t4=0.5, timer_d=0.5)


def options(port: int, branch: str, transport: str = "UDP", call: str = "c1") -> bytes:
    return (
        f"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p1\r\n"
        "To: <sip:gw@127.0.0.1>\r\n"
        f"Call-ID: {call}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint.listen(EndpointSettings(host="127.0.0.1", timers=FAST))

    def answer(tx: ServerTransaction) -> None:
        tx.respond(tx.create_response(200))

    ep.on_request(answer)
    try:
        yield ep
    finally:
        await ep.close()


class Collector(asyncio.DatagramProtocol):
    """A raw UDP peer that records every datagram and never answers."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.datagrams.append(data)
        self.arrived.set()

    async def next(self, timeout: float = 2.0) -> bytes:
        async with asyncio.timeout(timeout):
            while not self.datagrams:
                self.arrived.clear()
                await self.arrived.wait()
        return self.datagrams.pop(0)


@pytest.fixture
async def silent_peer() -> AsyncIterator[tuple[Collector, asyncio.DatagramTransport, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Collector, local_addr=("127.0.0.1", 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    try:
        yield protocol, transport, port
    finally:
        transport.close()


def request(method: str, port: int) -> SipRequest:
    target = f"sip:peer@127.0.0.1:{port}"
    return SipRequest(
        method,
        parse_uri(target),
        Headers(
            [
                ("From", "<sip:gw@127.0.0.1>;tag=g1"),
                ("To", f"<{target}>"),
                ("Call-ID", f"{method.lower()}-retransmit@127.0.0.1"),
                ("CSeq", f"1 {method}"),
            ]
        ),
    )


async def test_requests_to_a_silent_peer_are_retransmitted_then_time_out(
    endpoint: Endpoint, silent_peer: tuple[Collector, asyncio.DatagramTransport, int]
) -> None:
    collector, _, port = silent_peer
    started = time.monotonic()
    destination = Destination.udp("127.0.0.1", port)
    invite = endpoint.send_request(request("INVITE", port), destination)
    options_tx = endpoint.send_request(request("OPTIONS", port), destination)
    async with asyncio.timeout(10):
        invite_final = await invite.final_response()
        options_final = await options_tx.final_response()
    elapsed = time.monotonic() - started
    assert invite_final.status == options_final.status == 408
    assert isinstance(invite.failure, TransactionTimeout) and invite.failure.timer == "B"
    assert isinstance(options_tx.failure, TransactionTimeout) and options_tx.failure.timer == "F"
    assert 3.1 < elapsed < 6  # 64*T1 = 3.2 s
    methods = [parse(d) for d in collector.datagrams]
    invites = [m for m in methods if isinstance(m, SipRequest) and m.method == "INVITE"]
    optionses = [m for m in methods if isinstance(m, SipRequest) and m.method == "OPTIONS"]
    # A: 0, .05, .15, .35, .75, 1.55, 3.15 — E: doubling to T2=0.4, then every 0.4 s
    assert len(invites) in (6, 7), len(invites)
    assert len(optionses) in (10, 11), len(optionses)
    assert len({m.top_via.branch for m in invites}) == 1
    assert endpoint.transaction_count == 0


async def test_a_malformed_datagram_gets_400_and_the_endpoint_keeps_serving(
    endpoint: Endpoint, silent_peer: tuple[Collector, asyncio.DatagramTransport, int]
) -> None:
    collector, sock, port = silent_peer
    gateway = endpoint.local_address("UDP")
    bad = options(port, "z9hG4bKbad1").replace(b"Max-Forwards: 70", b"Max-Forwards: many")
    sock.sendto(bad, gateway)
    rejected = parse(await collector.next())
    assert isinstance(rejected, SipResponse) and rejected.status == 400
    sock.sendto(b"\x16\x03\x01 definitely not SIP", gateway)
    sock.sendto(options(port, "z9hG4bKbad2").replace(b"CSeq: 1", b"CSeq: one"), gateway)
    sock.sendto(b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n", gateway)
    sock.sendto(options(port, "z9hG4bKgood1"), gateway)
    answered = parse(await collector.next())
    assert isinstance(answered, SipResponse) and answered.status == 200
    assert answered.top_via.rport == port and answered.top_via.received == "127.0.0.1"
    assert endpoint.stats.malformed_answered == 1
    assert endpoint.stats.malformed_dropped == 3


async def read_messages(
    reader: asyncio.StreamReader, framer: StreamFramer, count: int
) -> list[bytes]:
    messages: list[bytes] = []
    async with asyncio.timeout(3):
        while len(messages) < count:
            data = await reader.read(65536)
            if not data:
                break
            messages += framer.feed(data)
    return messages


async def test_tcp_pipelined_and_split_messages_are_framed_and_answered_in_place(
    endpoint: Endpoint,
) -> None:
    host, port = endpoint.local_address("TCP")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        local_port = writer.get_extra_info("sockname")[1]
        batch = b"".join(options(local_port, f"z9hG4bKpipe{n}", "TCP", f"c{n}") for n in range(3))
        writer.write(batch)  # three messages in one segment
        last = options(local_port, "z9hG4bKsplit", "TCP", "split")
        writer.write(last[:17])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(last[17:])
        await writer.drain()
        pongs: list[int] = []
        framer = StreamFramer(on_ping=lambda: pongs.append(1))
        messages = await read_messages(reader, framer, 4)
        responses = [parse(m) for m in messages]
        assert [r.status for r in responses if isinstance(r, SipResponse)] == [200] * 4
        call_ids = [r.call_id.split("@")[0] for r in responses]
        assert call_ids == ["c0", "c1", "c2", "split"]
        # RFC 5626 keep-alive: a double CRLF is answered with a single CRLF
        writer.write(b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(2):
            assert await reader.readexactly(2) == b"\r\n"
    finally:
        writer.close()
    tcp = endpoint.transport("TCP")
    assert isinstance(tcp, TcpTransport) and tcp.stats.pings_answered == 1


async def test_tcp_oversized_message_closes_the_connection(endpoint: Endpoint) -> None:
    host, port = endpoint.local_address("TCP")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = options(port, "z9hG4bKhuge", "TCP").replace(
            b"Content-Length: 0", b"Content-Length: 10000000"
        )
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # closed by the gateway
    finally:
        writer.close()
    # and it still serves a fresh connection
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(options(port, "z9hG4bKafter", "TCP"))
        framer = StreamFramer()
        (reply,) = await read_messages(reader, framer, 1)
        response = parse(reply)
        assert isinstance(response, SipResponse) and response.status == 200
    finally:
        writer.close()


async def test_tcp_connection_refused_reaches_the_tu_as_503(endpoint: Endpoint) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound, never listening
        tx = endpoint.send_request(
            request("OPTIONS", closed_port), Destination.tcp("127.0.0.1", closed_port)
        )
        async with asyncio.timeout(5):
            final = await tx.final_response()
    assert final.status == 503
    assert endpoint.transaction_count == 0


async def test_tcp_connection_limit_refuses_extra_connections() -> None:
    ep = await Endpoint.listen(EndpointSettings(host="127.0.0.1", max_connections=1))
    ep.on_request(lambda tx: tx.respond(tx.create_response(200)) and None)
    host, port = ep.local_address("TCP")
    try:
        _, first = await asyncio.open_connection(host, port)
        reader, second = await asyncio.open_connection(host, port)
        async with asyncio.timeout(2):
            assert await reader.read() == b""
        first.close()
        second.close()
        tcp = ep.transport("TCP")
        assert isinstance(tcp, TcpTransport) and tcp.stats.connections_refused == 1
    finally:
        await ep.close()
