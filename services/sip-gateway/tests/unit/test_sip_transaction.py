"""The four RFC 3261 §17 transaction state machines, run in virtual time (no sockets)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from plateau_sip_gateway.sip import SipRequest, SipResponse, parse
from plateau_sip_gateway.sip.timers import TimerSettings, VirtualScheduler
from plateau_sip_gateway.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    Transaction,
    TransactionTimeout,
    TransportFailure,
    server_key,
)

pytestmark = pytest.mark.unit

BRANCH = "z9hG4bKclient1"


def request(method: str = "INVITE", branch: str = BRANCH, to_tag: str = "") -> SipRequest:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:proxy.example.com;lr>\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse(text.encode())
    assert isinstance(message, SipRequest)
    return message


def response(req: SipRequest, status: int, tag: str | None = "b1") -> SipResponse:
    return req.create_response(status, to_tag=None if status == 100 else tag)


class Wire:
    """What a transaction sent, and when (virtual seconds)."""

    def __init__(self, scheduler: VirtualScheduler) -> None:
        self.scheduler = scheduler
        self.sent: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        self.sent.append((self.scheduler.now(), data))

    def times(self) -> list[float]:
        return [round(t, 3) for t, _ in self.sent]

    def messages(self) -> list[SipRequest | SipResponse]:
        return [parse(data) for _, data in self.sent]


class Harness:
    def __init__(self, reliable: bool = False, timers: TimerSettings | None = None) -> None:
        self.scheduler = VirtualScheduler()
        self.wire = Wire(self.scheduler)
        self.reliable = reliable
        self.timers = timers or TimerSettings()
        self.terminated: list[Transaction] = []
        self.delivered: list[SipResponse] = []

    def client(self, req: SipRequest) -> ClientTransaction:
        cls = InviteClientTransaction if req.method == "INVITE" else NonInviteClientTransaction
        tx = cls(
            req,
            self.wire,
            reliable=self.reliable,
            timers=self.timers,
            scheduler=self.scheduler,
            on_terminated=self.terminated.append,
        )
        tx.on_response = self.delivered.append
        tx.start()
        return tx

    def invite_server(self, req: SipRequest) -> InviteServerTransaction:
        tx = InviteServerTransaction(
            req,
            self.wire,
            reliable=self.reliable,
            timers=self.timers,
            scheduler=self.scheduler,
            on_terminated=self.terminated.append,
            to_tag="b1",
        )
        tx.start()
        return tx

    def server(self, req: SipRequest) -> NonInviteServerTransaction:
        return NonInviteServerTransaction(
            req,
            self.wire,
            reliable=self.reliable,
            timers=self.timers,
            scheduler=self.scheduler,
            on_terminated=self.terminated.append,
            to_tag="b1",
        )


# timers --------------------------------------------------------------------------------


def test_timer_values_follow_rfc3261_table_4() -> None:
    t = TimerSettings()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert t.timer_a(False) == 0.5 and t.timer_a(True) is None
    assert t.timer_b == t.timer_f == t.timer_h == t.timer_l == t.timer_m == 32.0
    assert t.timer_d_for(False) == 32.0 and t.timer_d_for(True) == 0.0
    assert t.timer_k(False) == 5.0 and t.timer_k(True) == 0.0
    assert t.timer_i(False) == 5.0 and t.timer_i(True) == 0.0
    assert t.timer_j(False) == 32.0 and t.timer_j(True) == 0.0
    assert t.next_interval(2.0, capped=False) == 4.0
    assert t.next_interval(4.0, capped=True) == 4.0
    small = TimerSettings(t1=0.05)
    assert small.timer_b == pytest.approx(3.2)


@pytest.mark.parametrize(
    "kwargs", [{"t1": 0}, {"t1": 5, "t2": 4}, {"t4": 0}, {"trying_delay": 0.3}]
)
def test_timer_settings_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TimerSettings(**kwargs)


# INVITE client -------------------------------------------------------------------------


def test_invite_client_over_udp_retransmits_doubling_until_timer_b() -> None:
    h = Harness()
    tx = h.client(request())
    assert tx.state is State.CALLING
    h.scheduler.advance(31.9)
    assert h.wire.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is State.CALLING and not h.delivered
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED
    assert isinstance(tx.failure, TransactionTimeout) and tx.failure.timer == "B"
    assert [r.status for r in h.delivered] == [408]
    assert h.terminated == [tx]
    assert h.scheduler.pending == 0


def test_invite_client_over_tcp_never_retransmits_but_still_times_out() -> None:
    h = Harness(reliable=True)
    tx = h.client(request())
    h.scheduler.advance(40)
    assert h.wire.times() == [0.0]
    assert tx.state is State.TERMINATED and h.delivered[0].status == 408


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    h = Harness()
    req = request()
    tx = h.client(req)
    h.scheduler.advance(0.6)
    tx.receive_response(response(req, 180))
    assert tx.state is State.PROCEEDING
    h.scheduler.advance(100)
    assert h.wire.times() == [0.0, 0.5]
    assert tx.state is State.PROCEEDING  # the TU CANCELs an INVITE that rings forever
    assert [r.status for r in h.delivered] == [180]


def test_invite_client_acks_a_failure_itself_with_the_same_branch() -> None:
    h = Harness()
    req = request()
    tx = h.client(req)
    tx.receive_response(response(req, 100))
    tx.receive_response(response(req, 486))
    assert tx.state is State.COMPLETED
    ack = h.wire.messages()[-1]
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.top_via.branch == BRANCH and len(ack.vias) == 1
    assert ack.to.tag == "b1" and ack.from_.tag == "a1"
    assert str(ack.uri) == str(req.uri) and ack.cseq.number == 1 and ack.cseq.method == "ACK"
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    # a retransmitted 486 is ACKed again but not passed up again
    tx.receive_response(response(req, 486))
    assert [m.method for m in h.wire.messages() if isinstance(m, SipRequest)][-2:] == [
        "ACK",
        "ACK",
    ]
    assert [r.status for r in h.delivered] == [100, 486]
    h.scheduler.advance(31.9)
    assert tx.state is State.COMPLETED
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED and h.terminated == [tx]


def test_invite_client_timer_d_is_zero_over_tcp() -> None:
    h = Harness(reliable=True)
    req = request()
    tx = h.client(req)
    tx.receive_response(response(req, 603))
    assert tx.state is State.TERMINATED and h.terminated == [tx]
    assert h.scheduler.pending == 0


def test_invite_client_leaves_the_2xx_ack_to_the_tu_and_passes_retransmissions() -> None:
    h = Harness()
    req = request()
    tx = h.client(req)
    tx.receive_response(response(req, 200))
    assert tx.state is State.ACCEPTED
    tx.receive_response(response(req, 200))
    assert [r.status for r in h.delivered] == [200, 200]
    assert tx.final is not None and tx.final.status == 200
    assert h.wire.times() == [0.0]  # no ACK from the transaction
    h.scheduler.advance(32)
    assert tx.state is State.TERMINATED


def test_invite_client_transport_error_is_a_503_for_the_tu() -> None:
    h = Harness()
    req = request()
    tx = h.client(req)
    tx.transport_error(ConnectionRefusedError("refused"))
    assert tx.state is State.TERMINATED
    assert isinstance(tx.failure, TransportFailure)
    assert [r.status for r in h.delivered] == [503]
    assert h.scheduler.pending == 0


def test_cancel_copies_the_invite_branch_and_cseq_number() -> None:
    h = Harness()
    tx = h.client(request())
    assert isinstance(tx, InviteClientTransaction)
    cancel = tx.create_cancel()
    assert cancel.method == "CANCEL" and cancel.top_via.branch == BRANCH
    assert cancel.cseq.number == 1 and cancel.cseq.method == "CANCEL"
    assert cancel.to.tag is None and cancel.call_id == "call-1@192.0.2.1"


# non-INVITE client -----------------------------------------------------------------------


def test_non_invite_client_timer_e_doubles_up_to_t2_until_timer_f() -> None:
    h = Harness()
    tx = h.client(request("OPTIONS"))
    h.scheduler.advance(31.9)
    assert h.wire.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    h.scheduler.advance(0.1)
    assert isinstance(tx.failure, TransactionTimeout) and tx.failure.timer == "F"
    assert [r.status for r in h.delivered] == [408]
    assert tx.state is State.TERMINATED and h.scheduler.pending == 0


def test_non_invite_client_in_proceeding_retransmits_every_t2() -> None:
    h = Harness()
    req = request("BYE")
    tx = h.client(req)
    h.scheduler.advance(0.2)
    tx.receive_response(response(req, 100))
    assert tx.state is State.PROCEEDING
    h.scheduler.advance(12)
    # the Timer E already running fires once more, then every T2 (RFC 3261 §17.1.2.2)
    assert h.wire.times() == [0.0, 0.5, 4.5, 8.5]


def test_non_invite_client_completes_and_waits_timer_k() -> None:
    h = Harness()
    req = request("OPTIONS")
    tx = h.client(req)
    tx.receive_response(response(req, 200))
    assert tx.state is State.COMPLETED
    tx.receive_response(response(req, 200))  # absorbed
    assert [r.status for r in h.delivered] == [200]
    h.scheduler.advance(4.9)
    assert tx.state is State.COMPLETED
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED and h.wire.times() == [0.0]


def test_non_invite_client_timer_k_is_zero_over_tcp() -> None:
    h = Harness(reliable=True)
    req = request("REGISTER")
    tx = h.client(req)
    tx.receive_response(response(req, 200))
    assert tx.state is State.TERMINATED and h.scheduler.pending == 0


def test_a_client_transaction_needs_an_rfc3261_branch() -> None:
    h = Harness()
    with pytest.raises(ValueError, match="z9hG4bK"):
        h.client(request(branch="old2543branch"))


async def test_the_tu_awaits_the_final_response_and_iterates_provisionals() -> None:
    h = Harness()
    req = request()
    tx = h.client(req)
    seen: list[int] = []

    async def iterate() -> None:
        async for r in tx.responses():
            seen.append(r.status)

    task = asyncio.create_task(iterate())
    final = asyncio.create_task(tx.final_response())
    await asyncio.sleep(0)
    tx.receive_response(response(req, 180))
    await asyncio.sleep(0)
    tx.receive_response(response(req, 183))
    tx.receive_response(response(req, 200))
    async with asyncio.timeout(1):
        await task
        assert (await final).status == 200
    assert seen == [180, 183, 200]
    # late iteration still sees everything
    assert [r.status async for r in tx.responses()] == [180, 183, 200]


# INVITE server ---------------------------------------------------------------------------


def test_invite_server_sends_100_trying_at_once_and_again_on_retransmission() -> None:
    h = Harness()
    req = request()
    tx = h.invite_server(req)
    assert [m.status for m in h.wire.messages() if isinstance(m, SipResponse)] == [100]
    trying = h.wire.messages()[0]
    assert isinstance(trying, SipResponse) and trying.to.tag is None
    tx.receive_request(req)
    assert len(h.wire.sent) == 2 and tx.retransmissions == 1


def test_invite_server_trying_delay_lets_a_fast_tu_answer_first() -> None:
    h = Harness(timers=TimerSettings(trying_delay=0.2))
    req = request()
    tx = h.invite_server(req)
    h.scheduler.advance(0.1)
    tx.respond(tx.create_response(180))
    h.scheduler.advance(1)
    assert [m.status for m in h.wire.messages() if isinstance(m, SipResponse)] == [180]
    slow = Harness(timers=TimerSettings(trying_delay=0.2))
    slow.invite_server(request())
    slow.scheduler.advance(0.2)
    assert slow.wire.times() == [0.2]


def test_invite_server_resends_the_last_provisional_on_retransmission() -> None:
    h = Harness()
    req = request()
    tx = h.invite_server(req)
    tx.respond(tx.create_response(180))
    tx.receive_request(req)
    statuses = [m.status for m in h.wire.messages() if isinstance(m, SipResponse)]
    assert statuses == [100, 180, 180]
    assert h.wire.messages()[-1].to.tag == "b1"


def test_invite_server_failure_is_retransmitted_by_timer_g_until_ack() -> None:
    h = Harness()
    req = request()
    tx = h.invite_server(req)
    tx.respond(tx.create_response(486))
    assert tx.state is State.COMPLETED
    h.scheduler.advance(10)
    assert h.wire.times() == [0.0, 0.0, 0.5, 1.5, 3.5, 7.5]
    tx.receive_request(req)  # INVITE retransmission: the 486 again
    assert len(h.wire.sent) == 7
    ack = request("ACK", to_tag="b1")
    tx.receive_request(ack)
    assert tx.state is State.CONFIRMED
    h.scheduler.advance(4.9)
    assert len(h.wire.sent) == 7 and tx.state is State.CONFIRMED
    tx.receive_request(ack)  # absorbed
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED and h.terminated == [tx]
    assert h.scheduler.pending == 0


def test_invite_server_timer_g_is_capped_at_t2_and_timer_h_reports_a_lost_ack() -> None:
    h = Harness()
    tx = h.invite_server(request())
    failures: list[Exception] = []
    tx.on_failure = failures.append
    tx.respond(tx.create_response(404))
    h.scheduler.advance(31.9)
    times = h.wire.times()[1:]
    intervals = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED
    assert len(failures) == 1 and isinstance(failures[0], TransactionTimeout)
    assert failures[0].timer == "H"


def test_invite_server_over_tcp_sends_once_and_timer_i_is_zero() -> None:
    h = Harness(reliable=True)
    tx = h.invite_server(request())
    tx.respond(tx.create_response(486))
    h.scheduler.advance(10)
    assert h.wire.times() == [0.0, 0.0]
    tx.receive_request(request("ACK", to_tag="b1"))
    assert tx.state is State.TERMINATED and h.scheduler.pending == 0


def test_invite_server_absorbs_retransmissions_after_a_2xx_for_64_t1() -> None:
    h = Harness()
    req = request()
    tx = h.invite_server(req)
    assert tx.respond(tx.create_response(200))
    assert tx.state is State.ACCEPTED
    tx.receive_request(req)
    assert len(h.wire.sent) == 2  # absorbed: the TU retransmits its 2xx itself
    assert tx.respond(tx.create_response(200))  # ... like this
    assert not tx.respond(tx.create_response(486))
    h.scheduler.advance(32)
    assert tx.state is State.TERMINATED and h.terminated == [tx]


@pytest.mark.parametrize("status", [180, 200, 486])
def test_invite_server_lets_go_of_the_cancel_handler_once_final(status: int) -> None:
    h = Harness()
    tx = h.invite_server(request())
    tx.on_cancel = lambda cancel: None
    assert tx.respond(tx.create_response(status))
    # A CANCEL after a final response has no effect (§9.2): the TU's handler, and the call
    # it holds, need not live as long as the transaction lingers.
    assert (tx.on_cancel is None) is (status >= 200)


# non-INVITE server -----------------------------------------------------------------------


def test_non_invite_server_absorbs_then_answers_retransmissions() -> None:
    h = Harness()
    req = request("OPTIONS")
    tx = h.server(req)
    tx.receive_request(req)
    assert h.wire.sent == []  # nothing to resend yet
    assert tx.respond(tx.create_response(200))
    tx.receive_request(req)
    assert len(h.wire.sent) == 2 and h.wire.sent[0][1] == h.wire.sent[1][1]
    assert not tx.respond(tx.create_response(500))
    h.scheduler.advance(31.9)
    assert tx.state is State.COMPLETED
    h.scheduler.advance(0.1)
    assert tx.state is State.TERMINATED and h.terminated == [tx]


def test_non_invite_server_timer_j_is_zero_over_tcp() -> None:
    h = Harness(reliable=True)
    tx = h.server(request("BYE"))
    tx.respond(tx.create_response(100))
    assert tx.state is State.PROCEEDING
    tx.respond(tx.create_response(200))
    assert tx.state is State.TERMINATED and h.scheduler.pending == 0


def test_server_keys_match_ack_to_invite_and_fall_back_for_rfc2543() -> None:
    invite = request()
    assert server_key(invite) == server_key(request("ACK", to_tag="b1"))
    assert server_key(invite) != server_key(request("CANCEL"))
    old = request(branch="1234")
    old_ack = request("ACK", branch="1234", to_tag="x9")
    assert server_key(old)[0] == "s2543" and server_key(old) == server_key(old_ack)
    h = Harness()
    tx = h.invite_server(old)
    tx.respond(tx.create_response(486))
    assert not tx.matches(old_ack)  # an ACK must carry the tag of our response
    assert tx.matches(request("ACK", branch="1234", to_tag="b1"))
    assert tx.matches(old)
