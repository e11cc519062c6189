"""The demo's SIP peers, the gateway played by the test through a fake transport (no I/O):
the softphone registers with digest and answers, the carrier's customers answer with the
offer, are busy or ring until CANCEL, and the carrier's callers give up."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from plateau_demo import sip
from plateau_demo.agents import AgentIdentity, Softphone
from plateau_demo.carrier import Carrier
from plateau_demo.endpoint import SipEndpoint
from plateau_demo.model import CustomerAnswer, Outcome, TrafficModel, TrafficSettings
from plateau_demo.sip import SipMessage

pytestmark = pytest.mark.unit

GATEWAY = ("127.0.0.1", 5060)
FAST = TrafficSettings(ring_s=(0.01, 0.02), talk_median_s=0.05, talk_sigma=0.01)


class Wire:
    """Stands for the socket: records what is sent and lets the test answer it."""

    def __init__(self, answer: Callable[[SipMessage], list[SipMessage]] | None = None) -> None:
        self.sent: list[SipMessage] = []
        self.answer = answer
        self.endpoint: SipEndpoint | None = None

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        message = sip.parse(data)
        self.sent.append(message)
        if self.answer is not None and self.endpoint is not None:
            endpoint = self.endpoint
            for reply in self.answer(message):
                asyncio.get_running_loop().call_soon(
                    endpoint.datagram_received, reply.encode(), GATEWAY
                )

    def deliver(self, message: SipMessage) -> None:
        assert self.endpoint is not None
        self.endpoint.datagram_received(message.encode(), GATEWAY)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def statuses(self) -> list[int]:
        return [m.status for m in self.sent if not m.is_request]


def _attach(wire: Wire, endpoint: SipEndpoint) -> SipEndpoint:
    endpoint.connection_made(wire)  # type: ignore[arg-type]
    endpoint.host, endpoint.port = "127.0.0.1", 40000
    wire.endpoint = endpoint
    return endpoint


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (the fake wire has nothing to wait on)
            await asyncio.sleep(0.01)


def _gateway_invite(to: str, body: str = "") -> SipMessage:
    return sip.request(
        "INVITE",
        f"sip:{to}@127.0.0.1:40000",
        via_host="127.0.0.1",
        via_port=5060,
        from_="<sip:gw@127.0.0.1>;tag=gw",
        to=f"<sip:{to}@127.0.0.1>",
        call_id=sip.new_call_id("gw"),
        cseq=1,
        contact="<sip:gw@127.0.0.1:5060>",
        body=body,
    )


async def test_the_softphone_answers_the_digest_challenge_and_keeps_the_granted_time() -> None:
    def registrar(message: SipMessage) -> list[SipMessage]:
        if message.method != "REGISTER":
            return []
        if message.get("Authorization") is None:
            challenge = sip.response(message, 401, to_tag="r")
            challenge.headers.append(
                ("WWW-Authenticate", 'Digest realm="plateau", nonce="n", qop="auth"')
            )
            return [challenge]
        ok = sip.response(message, 200, to_tag="r")
        ok.headers.append(("Contact", f"{message.header('Contact')};expires=120"))
        return [ok]

    wire = Wire(registrar)
    phone = Softphone(
        AgentIdentity("a-1001", "1001", "pw"),
        GATEWAY,
        TrafficModel(FAST, random.Random(1)),
        Counter(),
    )
    phone.endpoint = _attach(wire, SipEndpoint("phone", phone._on_request))
    phone._register_call_id = "reg@test"
    assert await phone._register(300) == 120
    first, second = [m for m in wire.sent if m.method == "REGISTER"]
    assert first.get("Authorization") is None
    answer = second.header("Authorization")
    assert 'username="1001"' in answer and 'realm="plateau"' in answer and "nc=00000001" in answer
    assert second.cseq[0] == first.cseq[0] + 1 and second.call_id == first.call_id
    assert sip.uri_of(second.header("Contact")) == "sip:1001@127.0.0.1:40000"
    await phone.endpoint.close()


async def test_the_softphone_rings_answers_with_sdp_and_hangs_up_after_talking() -> None:
    wire = Wire()
    counts: Counter[str] = Counter()
    phone = Softphone(
        AgentIdentity("a-1001", "1001", "pw"), GATEWAY, TrafficModel(FAST, random.Random(2)), counts
    )
    phone.endpoint = _attach(wire, SipEndpoint("phone", phone._on_request))
    invite = _gateway_invite("1001", body=sip.sdp("127.0.0.1", 20000))
    wire.deliver(invite)
    await _until(lambda: 200 in wire.statuses())
    ok = next(m for m in wire.sent if m.status == 200)
    assert wire.statuses()[0] == 180 and "m=audio" in ok.body and ok.to_tag
    assert sip.uri_of(ok.header("Contact")) == "sip:1001@127.0.0.1:40000"
    ack = sip.request(
        "ACK",
        sip.uri_of(ok.header("Contact")),
        via_host="127.0.0.1",
        via_port=5060,
        from_=invite.header("From"),
        to=ok.header("To"),
        call_id=invite.call_id,
        cseq=1,
    )
    wire.deliver(ack)
    await _until(lambda: any(m.method == "BYE" for m in wire.sent))
    bye = next(m for m in wire.sent if m.method == "BYE")
    assert bye.uri == "sip:gw@127.0.0.1:5060" and bye.to_tag == "gw" and bye.from_tag == ok.to_tag
    wire.deliver(sip.response(bye, 200))
    await _until(lambda: not phone._busy)
    assert counts["calls taken by agents"] == 1
    # A second INVITE while ringing the first would be busy; a CANCEL ends the ringing.
    other = _gateway_invite("1001")
    phone.model = TrafficModel(TrafficSettings(ring_s=(5, 5)), random.Random(3))
    wire.deliver(other)
    await _until(lambda: wire.statuses().count(180) == 2)
    wire.deliver(sip.cancel_for(other))
    await _until(lambda: 487 in wire.statuses())
    await phone.endpoint.close()


def _carrier(wire: Wire, answer: CustomerAnswer) -> Carrier:
    model = TrafficModel(FAST, random.Random(4))
    model.customer_answer = lambda: answer  # type: ignore[method-assign]
    carrier = Carrier(model, GATEWAY, ["+242053000100"], random.Random(5))
    carrier.endpoint = _attach(wire, SipEndpoint("carrier", carrier._on_request))
    return carrier


async def test_a_customer_who_answers_sends_the_offer_and_hangs_up_after_talking() -> None:
    wire = Wire()
    carrier = _carrier(wire, CustomerAnswer(Outcome.ANSWER, ring_s=0.01, talk_s=0.05))
    invite = _gateway_invite("+242066123456")  # RFC 3725 flow I: no SDP
    wire.deliver(invite)
    await _until(lambda: 200 in wire.statuses())
    ok = next(m for m in wire.sent if m.status == 200)
    assert wire.statuses()[0] == 180 and ok.body.startswith("v=0")
    await _until(lambda: any(m.method == "BYE" for m in wire.sent))
    assert carrier.counts["outbound answered"] == 1
    await carrier.endpoint.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("outcome", "final"), [(Outcome.BUSY, 486), (Outcome.NO_ANSWER, 487)], ids=["busy", "rings"]
)
async def test_a_customer_is_busy_or_rings_until_cancelled(outcome: Outcome, final: int) -> None:
    wire = Wire()
    carrier = _carrier(wire, CustomerAnswer(outcome, ring_s=0.01, talk_s=1))
    invite = _gateway_invite("+242066123456")
    wire.deliver(invite)
    await _until(lambda: 180 in wire.statuses())
    if outcome is Outcome.NO_ANSWER:
        await asyncio.sleep(0.05)
        wire.deliver(sip.cancel_for(invite))
    await _until(lambda: final in wire.statuses())
    assert all(m.status != 200 or m.cseq[1] == "CANCEL" for m in wire.sent if not m.is_request)
    await carrier.endpoint.close()  # type: ignore[union-attr]


async def test_a_caller_who_loses_patience_cancels_and_acks_the_487() -> None:
    cancelled: list[SipMessage] = []

    def gateway(message: SipMessage) -> list[SipMessage]:
        if message.method == "INVITE":
            return [sip.response(message, 100), sip.response(message, 180, to_tag="gw")]
        if message.method == "CANCEL":
            cancelled.append(message)
            invite = next(m for m in wire.sent if m.method == "INVITE")
            return [sip.response(message, 200), sip.response(invite, 487, to_tag="gw")]
        return []

    wire = Wire(gateway)
    carrier = _carrier(wire, CustomerAnswer(Outcome.BUSY, 0, 0))
    carrier.model.patience_s = lambda: 0.05  # type: ignore[method-assign]
    await asyncio.wait_for(carrier.call("+242053000100"), 2)
    invite = next(m for m in wire.sent if m.method == "INVITE")
    ack = next(m for m in wire.sent if m.method == "ACK")
    assert cancelled[0].branch == invite.branch == ack.branch
    assert "m=audio" in invite.body and invite.uri == "sip:+242053000100@127.0.0.1:5060"
    assert carrier.counts["calls abandoned"] == 1
    await carrier.endpoint.close()  # type: ignore[union-attr]
