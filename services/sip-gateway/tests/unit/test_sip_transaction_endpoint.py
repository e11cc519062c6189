"""The endpoint's matching and dispatch, over a fake transport and in virtual time."""

from __future__ import annotations

import asyncio

import pytest

from plateau_sip_gateway.sip import SipRequest, SipResponse, Via, parse, parse_via
from plateau_sip_gateway.sip.endpoint import (
    Destination,
    Endpoint,
    EndpointSettings,
    TransactionLimitError,
    response_address,
    stamp_via,
)
from plateau_sip_gateway.sip.timers import VirtualScheduler
from plateau_sip_gateway.sip.transaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
)
from plateau_sip_gateway.sip.transport import (
    Address,
    ErrorCallback,
    MessageSink,
    Source,
    TcpConnection,
)

pytestmark = pytest.mark.unit

PEER: Address = ("192.0.2.9", 5070)


class FakeTransport:
    """The Transport port, recording what is sent instead of touching a socket."""

    def __init__(self, name: str = "UDP", reliable: bool = False) -> None:
        self.name = name
        self.reliable = reliable
        self.local_address: Address = ("127.0.0.1", 5060)
        self.sink: MessageSink | None = None
        self.sent: list[tuple[bytes, Address]] = []
        self.fail_with: BaseException | None = None

    async def start(self, sink: MessageSink) -> None:
        self.sink = sink

    def send(
        self,
        data: bytes,
        address: Address,
        *,
        connection: TcpConnection | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if self.fail_with is not None and on_error is not None:
            asyncio.get_running_loop().call_soon(on_error, self.fail_with)
            return
        self.sent.append((data, address))

    async def close(self) -> None:
        pass

    def deliver(self, data: bytes | str, remote: Address = PEER) -> None:
        assert self.sink is not None
        raw = data.encode() if isinstance(data, str) else data
        self.sink(raw, Source(self.name, remote, self.local_address))

    def responses(self) -> list[SipResponse]:
        return [m for m in (parse(d) for d, _ in self.sent) if isinstance(m, SipResponse)]

    def requests(self) -> list[SipRequest]:
        return [m for m in (parse(d) for d, _ in self.sent) if isinstance(m, SipRequest)]


def message(
    method: str = "INVITE",
    branch: str = "z9hG4bKpeer1",
    via_host: str = "192.0.2.9:5070",
    cseq_method: str | None = None,
    to_tag: str = "",
    rport: bool = False,
) -> str:
    to = "<sip:svc@gw.example>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:svc@gw.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch}{';rport' if rport else ''}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@carrier.example>;tag=c1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-9@carrier.example\r\n"
        f"CSeq: 7 {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )


async def endpoint(
    transport: FakeTransport | None = None, **settings: int
) -> tuple[Endpoint, FakeTransport, VirtualScheduler]:
    transport = transport or FakeTransport()
    scheduler = VirtualScheduler()
    ep = Endpoint([transport], EndpointSettings(**settings), scheduler=scheduler)
    await ep.start()
    return ep, transport, scheduler


async def test_a_retransmitted_invite_reaches_the_tu_once_and_gets_the_last_response() -> None:
    ep, udp, _ = await endpoint()
    seen: list[ServerTransaction] = []
    ep.on_request(seen.append)
    udp.deliver(message())
    udp.deliver(message())
    assert len(seen) == 1 and isinstance(seen[0], InviteServerTransaction)
    assert [r.status for r in udp.responses()] == [100, 100]
    assert ep.stats.transactions.absorbed == 1


async def test_responses_go_where_via_says() -> None:
    ep, udp, _ = await endpoint()
    ep.on_request(lambda tx: None)
    udp.deliver(message("OPTIONS", via_host="10.1.1.1:5080"), remote=("192.0.2.9", 40000))
    udp.deliver(message("OPTIONS", branch="z9hG4bKb2", rport=True), remote=("192.0.2.9", 40001))
    udp.deliver(message("OPTIONS", branch="z9hG4bKb3"))
    tx1, tx2, tx3 = list(ep._servers.values())
    for tx in (tx1, tx2, tx3):
        tx.respond(tx.create_response(200))
    addresses = [address for _, address in udp.sent]
    # received (sent-by differs): sent-by port; rport: the source port; else sent-by
    assert addresses == [("192.0.2.9", 5080), ("192.0.2.9", 40001), ("192.0.2.9", 5070)]
    vias = [r.top_via for r in udp.responses()]
    assert vias[0].received == "192.0.2.9" and vias[0].rport is None
    assert vias[1].received == "192.0.2.9" and vias[1].rport == 40001
    assert vias[2].received is None


def test_via_stamping_and_response_addressing_rules() -> None:
    request = parse(message(via_host="[2001:db8::1]:5062").encode())
    assert isinstance(request, SipRequest)
    source = Source("UDP", ("2001:db8::1", 5062), ("::1", 5060))
    assert stamp_via(request, source) is request  # same address, brackets aside
    named = parse(message(via_host="pbx.example").encode())
    assert isinstance(named, SipRequest)
    stamped = stamp_via(named, Source("UDP", ("192.0.2.4", 5060), ("127.0.0.1", 5060)))
    assert stamped.top_via.received == "192.0.2.4"
    assert response_address(stamped.top_via, reliable=False) == ("192.0.2.4", 5060)
    via = parse_via("SIP/2.0/UDP h.example;branch=z9hG4bKx;received=192.0.2.4;rport=9999")
    assert response_address(via, reliable=False) == ("192.0.2.4", 9999)
    assert response_address(via, reliable=True) == ("192.0.2.4", 5060)
    maddr = parse_via("SIP/2.0/UDP h.example:5062;branch=z9hG4bKx;maddr=239.255.255.1")
    assert response_address(maddr, reliable=False) == ("239.255.255.1", 5062)


async def test_cancel_answers_200_and_487_by_default_and_leaves_no_transaction() -> None:
    ep, udp, scheduler = await endpoint()
    invites: list[ServerTransaction] = []
    ep.on_request(invites.append)
    udp.deliver(message())
    invite = invites[0]
    invite.respond(invite.create_response(180))
    udp.deliver(message("CANCEL"))
    assert len(invites) == 1  # the CANCEL is not a new request for the TU
    statuses = [(r.status, r.cseq.method) for r in udp.responses()]
    assert statuses == [(100, "INVITE"), (180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    to_tags = {r.to.tag for r in udp.responses()[1:]}
    assert len(to_tags) == 1  # the CANCEL's 200 carries the INVITE's To tag (§9.2)
    udp.deliver(message("ACK", cseq_method="ACK", to_tag=to_tags.pop() or ""))
    assert invite.state is State.CONFIRMED
    scheduler.run_until_idle()
    assert ep.transaction_count == 0 and scheduler.pending == 0


async def test_cancel_goes_to_the_tu_when_it_asks_for_it() -> None:
    ep, udp, _ = await endpoint()
    cancels: list[NonInviteServerTransaction] = []

    def take(tx: ServerTransaction) -> None:
        assert isinstance(tx, InviteServerTransaction)
        tx.on_cancel = cancels.append

    ep.on_request(take)
    udp.deliver(message())
    udp.deliver(message("CANCEL"))
    assert len(cancels) == 1 and cancels[0].method == "CANCEL"
    assert [r.status for r in udp.responses()] == [100]  # the TU decides


async def test_cancel_without_its_invite_gets_481() -> None:
    _, udp, _ = await endpoint()
    udp.deliver(message("CANCEL", branch="z9hG4bKunknown"))
    assert [r.status for r in udp.responses()] == [481]


async def test_an_ack_for_a_2xx_goes_to_the_tu_and_send_2xx_retransmits_until_it() -> None:
    ep, udp, scheduler = await endpoint()
    invites: list[ServerTransaction] = []
    ep.on_request(invites.append)
    udp.deliver(message())
    invite = invites[0]
    assert isinstance(invite, InviteServerTransaction)
    acked = ep.send_2xx(invite, invite.create_response(200))
    scheduler.advance(1.6)  # 2xx at 0, 0.5, 1.5
    assert [r.status for r in udp.responses()] == [100, 200, 200, 200]
    udp.deliver(message("ACK", branch="z9hG4bKnewack", cseq_method="ACK", to_tag="x"))
    ack = await asyncio.wait_for(acked, 1)
    assert ack is not None and ack.method == "ACK"
    scheduler.advance(10)
    assert len(udp.responses()) == 4
    strays: list[SipRequest] = []
    ep.on_ack(lambda a, s: strays.append(a))
    udp.deliver(message("ACK", branch="z9hG4bKother", cseq_method="ACK", to_tag="x"))
    assert len(strays) == 1
    scheduler.run_until_idle()
    assert ep.transaction_count == 0


async def test_send_2xx_gives_up_after_64_t1_without_ack() -> None:
    ep, udp, scheduler = await endpoint()
    invites: list[ServerTransaction] = []
    ep.on_request(invites.append)
    udp.deliver(message())
    invite = invites[0]
    assert isinstance(invite, InviteServerTransaction)
    acked = ep.send_2xx(invite, invite.create_response(200))
    scheduler.advance(32)
    assert await asyncio.wait_for(acked, 1) is None
    assert ep.transaction_count == 0 and scheduler.pending == 0


async def test_client_transactions_match_responses_and_leave_the_table() -> None:
    ep, udp, scheduler = await endpoint()
    request = parse(message("OPTIONS").encode())
    assert isinstance(request, SipRequest)
    bare = request.without_header("Via").without_header("Max-Forwards")
    tx = ep.send_request(bare, Destination.udp("192.0.2.9", 5070))
    sent = udp.requests()[0]
    assert sent.top_via.has_rfc3261_branch and sent.top_via.has_rport
    assert sent.top_via.sent_by == "127.0.0.1:5060" and sent.max_forwards == 70
    assert ep.transaction_count == 1
    # a response for someone else's branch is a stray
    udp.deliver(
        sent.create_response(200)
        .without_top_via()
        .with_top_via("SIP/2.0/UDP x;branch=z9hG4bKno")
        .encode()
    )
    assert ep.stats.stray_responses == 1 and tx.final is None
    udp.deliver(sent.create_response(200, to_tag="t").encode())
    final = await asyncio.wait_for(tx.final_response(), 1)
    assert final.status == 200
    scheduler.advance(5)
    assert ep.transaction_count == 0


async def test_a_transport_error_reaches_the_tu_as_503() -> None:
    transport = FakeTransport()
    transport.fail_with = ConnectionRefusedError("refused")
    ep, _, scheduler = await endpoint(transport)
    request = parse(message("OPTIONS").encode())
    assert isinstance(request, SipRequest)
    tx = ep.send_request(request.without_header("Via"), Destination.udp("192.0.2.9"))
    final = await asyncio.wait_for(tx.final_response(), 1)
    assert final.status == 503 and "refused" in final.reason
    assert ep.transaction_count == 0 and scheduler.pending == 0


async def test_a_malformed_request_gets_400_and_garbage_is_dropped() -> None:
    ep, udp, _ = await endpoint()
    bad = message("OPTIONS").replace("Max-Forwards: 70", "Max-Forwards: many")
    udp.deliver(bad, remote=("192.0.2.77", 4444))
    udp.deliver(b"\x00\xffnot sip at all")
    udp.deliver(b"\r\n\r\n")
    assert [(r.status, a) for r, (_, a) in zip(udp.responses(), udp.sent, strict=True)] == [
        (400, ("192.0.2.77", 4444))
    ]
    assert ep.stats.malformed_answered == 1 and ep.stats.malformed_dropped == 1
    assert ep.stats.keepalives == 1 and ep.transaction_count == 0


async def test_a_full_table_answers_503_with_retry_after() -> None:
    ep, udp, _ = await endpoint(max_transactions=1)
    ep.on_request(lambda tx: None)
    udp.deliver(message("OPTIONS"))
    udp.deliver(message("OPTIONS", branch="z9hG4bKsecond"))
    (busy,) = udp.responses()
    assert busy.status == 503 and busy.headers.get("Retry-After") == "5"
    request = parse(message("OPTIONS").encode())
    assert isinstance(request, SipRequest)
    with pytest.raises(TransactionLimitError):
        ep.send_request(request.without_header("Via"), Destination.udp("192.0.2.9"))


async def test_a_failing_handler_answers_500_and_the_endpoint_goes_on() -> None:
    ep, udp, _ = await endpoint()

    async def broken(tx: ServerTransaction) -> None:
        raise RuntimeError("bug in the TU")

    ep.on_request(broken)
    udp.deliver(message("OPTIONS"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert [r.status for r in udp.responses()] == [500]
    assert ep.stats.handler_errors == 1


def test_destinations_must_be_ip_addresses() -> None:
    with pytest.raises(ValueError, match="resolve"):
        Destination.udp("sip.example.com")
    assert Destination.tcp("[::1]", 5061).address == ("::1", 5061)
    assert str(Via.new("UDP", "h", 1, "z9hG4bKa")) == "SIP/2.0/UDP h:1;branch=z9hG4bKa;rport"
