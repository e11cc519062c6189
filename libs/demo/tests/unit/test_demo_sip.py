"""The demo's SIP user agent: messages it builds and reads, digest answers, and an endpoint
that tolerates retransmissions and garbage (driven through a fake transport: no I/O)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

from plateau_demo import sip
from plateau_demo.agents import asks_auto_answer
from plateau_demo.dialog import Dialog
from plateau_demo.endpoint import SipEndpoint
from plateau_demo.model import TrafficModel, TrafficSettings
from plateau_demo.sip import Challenge, SipMessage, SipParseError

pytestmark = pytest.mark.unit

GATEWAY = ("127.0.0.1", 5060)

INVITE = (
    "INVITE sip:1001@127.0.0.1:40000 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"
    "f: <sip:+242066123456@127.0.0.1>;tag=gw1\r\n"
    "t: <sip:1001@127.0.0.1>\r\n"
    "i: call-1@gw\r\n"
    "CSeq: 1 INVITE\r\n"
    "m: <sip:gw@127.0.0.1:5060>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 10\r\n"
    "\r\n"
    "v=0\r\ns=-\r\nEXTRA"
)


def test_a_request_is_read_with_compact_headers_and_its_body_cut_at_content_length() -> None:
    message = sip.parse(INVITE.encode())
    assert message.is_request and message.method == "INVITE"
    assert message.call_id == "call-1@gw"
    assert message.cseq == (1, "INVITE")
    assert message.branch == "z9hG4bKabc"
    assert message.from_tag == "gw1" and message.to_tag == ""
    assert sip.uri_of(message.header("Contact")) == "sip:gw@127.0.0.1:5060"
    assert message.body == "v=0\r\ns=-\r\n"


def test_a_response_copies_vias_from_call_id_and_cseq_and_tags_the_to() -> None:
    invite = sip.parse(INVITE.encode())
    ok = sip.response(invite, 200, to_tag="me", contact="<sip:1001@127.0.0.1:40000>", body="v=0")
    again = sip.parse(ok.encode())
    assert again.status == 200 and again.reason == "OK"
    assert again.header("Via") == invite.header("Via")
    assert again.to_tag == "me" and again.from_tag == "gw1"
    assert again.cseq == (1, "INVITE")
    assert again.header("Content-Length") == "3" and again.body == "v=0"
    assert again.header("Content-Type") == "application/sdp"


def test_a_built_request_round_trips() -> None:
    request = sip.request(
        "REGISTER",
        "sip:127.0.0.1:5060",
        via_host="127.0.0.1",
        via_port=40000,
        from_="<sip:1001@127.0.0.1>;tag=a",
        to="<sip:1001@127.0.0.1>",
        call_id="reg-1",
        cseq=7,
        contact="<sip:1001@127.0.0.1:40000>",
        extra=[("Expires", "300")],
    )
    again = sip.parse(request.encode())
    assert again.method == "REGISTER" and again.uri == "sip:127.0.0.1:5060"
    assert again.cseq == (7, "REGISTER")
    assert again.branch.startswith("z9hG4bK")
    assert again.get("Expires") == "300"


def test_ack_and_cancel_of_an_invite_keep_its_branch() -> None:
    invite = sip.request(
        "INVITE",
        "sip:+242053000100@127.0.0.1:5060",
        via_host="127.0.0.1",
        via_port=5070,
        from_="<sip:+242066123456@127.0.0.1>;tag=c",
        to="<sip:+242053000100@127.0.0.1>",
        call_id="x",
        cseq=1,
        body=sip.sdp("127.0.0.1", 40000),
    )
    busy = sip.response(invite, 486, to_tag="gw")
    ack = sip.ack_for_failure(invite, busy)
    cancel = sip.cancel_for(invite)
    assert ack.branch == cancel.branch == invite.branch
    assert ack.cseq == (1, "ACK") and cancel.cseq == (1, "CANCEL")
    assert ack.to_tag == "gw" and cancel.to_tag == ""
    assert "m=audio 40000 RTP/AVP" in invite.body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"HELLO\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\n",  # no Call-ID, CSeq, From, To
        b"SIP/2.0 99 Odd\r\nVia: a\r\nCall-ID: b\r\nCSeq: 1 X\r\nFrom: c\r\nTo: d\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a\r\nCall-ID: b\r\nCSeq: one X\r\nFrom: c\r\nTo: d\r\n\r\n",
        INVITE.replace("Content-Length: 10", "Content-Length: 500").encode(),
    ],
)
def test_what_is_not_a_readable_sip_message_is_refused(data: bytes) -> None:
    with pytest.raises(SipParseError):
        sip.parse(data)


def test_the_digest_answer_is_rfc_2617_with_qop_auth() -> None:
    challenge = sip.choose_challenge(
        [
            'Digest realm="plateau", nonce="n1", algorithm=SHA-512-256, qop="auth"',
            'Digest realm="plateau", nonce="n2", algorithm=MD5, qop="auth", opaque="o"',
        ]
    )
    assert challenge == Challenge("plateau", "n2", "MD5", "auth", "o")
    value = sip.authorization(
        challenge,
        username="1001",
        password="secret",
        method="REGISTER",
        uri="sip:127.0.0.1:5060",
        nc=1,
        cnonce="cn",
    )

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    expected = md5(
        f"{md5('1001:plateau:secret')}:n2:00000001:cn:auth:{md5('REGISTER:sip:127.0.0.1:5060')}"
    )
    assert f'response="{expected}"' in value
    assert "qop=auth" in value and "nc=00000001" in value and 'opaque="o"' in value


def test_sha_256_is_preferred_when_offered() -> None:
    chosen = sip.choose_challenge(
        [
            'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
        ]
    )
    assert chosen.algorithm == "SHA-256"
    with pytest.raises(SipParseError):
        sip.choose_challenge(['Basic realm="r"'])


def test_a_dialog_sends_bye_to_the_remote_contact_with_a_growing_cseq() -> None:
    invite = sip.parse(INVITE.encode())
    dialog = Dialog.as_callee(invite, "me", "127.0.0.1", 40000)
    first, second = dialog.request("BYE"), dialog.request("INFO")
    assert first.uri == "sip:gw@127.0.0.1:5060"
    assert first.from_tag == "me" and first.to_tag == "gw1"
    assert first.cseq == (1, "BYE") and second.cseq == (2, "INFO")
    assert dialog.key == ("call-1@gw", "me")


class FakeTransport:
    """Catches what the endpoint sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[SipMessage, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((sip.parse(data), addr))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)


def _endpoint(received: list[SipMessage]) -> tuple[SipEndpoint, FakeTransport]:
    async def on_request(message: SipMessage, source: tuple[str, int]) -> None:
        received.append(message)

    endpoint = SipEndpoint("test", on_request)
    transport = FakeTransport()
    endpoint.connection_made(transport)  # type: ignore[arg-type]
    return endpoint, transport


async def test_a_retransmitted_request_gets_the_same_answer_and_is_handled_once() -> None:
    received: list[SipMessage] = []
    endpoint, transport = _endpoint(received)
    endpoint.datagram_received(INVITE.encode(), GATEWAY)
    await asyncio.sleep(0)
    assert [m.method for m in received] == ["INVITE"]
    ringing = sip.response(received[0], 180, to_tag="me")
    endpoint.respond(received[0], ringing, GATEWAY)
    endpoint.datagram_received(INVITE.encode(), GATEWAY)  # the gateway's timer A fired
    await asyncio.sleep(0)
    assert len(received) == 1
    assert [m.status for m, _ in transport.sent] == [180, 180]
    await endpoint.close()


async def test_a_2xx_to_invite_is_repeated_until_its_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plateau_demo.endpoint.T1", 0.01)
    received: list[SipMessage] = []
    endpoint, transport = _endpoint(received)
    endpoint.datagram_received(INVITE.encode(), GATEWAY)
    await asyncio.sleep(0)
    invite = received[0]
    endpoint.respond(invite, sip.response(invite, 200, to_tag="me", body="v=0"), GATEWAY)
    await asyncio.sleep(0.05)
    repeated = len(transport.sent)
    assert repeated >= 2 and all(m.status == 200 for m, _ in transport.sent)
    ack = Dialog.as_caller(
        sip.parse(INVITE.encode()), sip.response(invite, 200, to_tag="me"), "127.0.0.1", 5060
    ).request("ACK", cseq=1)
    endpoint.datagram_received(ack.encode(), GATEWAY)
    await asyncio.sleep(0.1)
    assert len(transport.sent) <= repeated + 1  # at most one already under way
    await endpoint.close()


async def test_a_request_is_retransmitted_until_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plateau_demo.endpoint.T1", 0.01)
    endpoint, transport = _endpoint([])
    bye = Dialog.as_callee(sip.parse(INVITE.encode()), "me", "127.0.0.1", 40000).request("BYE")
    pending = asyncio.ensure_future(endpoint.request(bye, GATEWAY))
    await asyncio.sleep(0.05)
    assert len(transport.sent) >= 2 and {m.branch for m, _ in transport.sent} == {bye.branch}
    endpoint.datagram_received(sip.response(bye, 200).encode(), GATEWAY)
    answer = await asyncio.wait_for(pending, 1)
    assert answer is not None and answer.status == 200
    await endpoint.close()


async def test_a_non_2xx_final_to_our_invite_is_acked_again_when_repeated() -> None:
    endpoint, transport = _endpoint([])
    invite = sip.request(
        "INVITE",
        "sip:+242053000100@127.0.0.1:5060",
        via_host="127.0.0.1",
        via_port=40000,
        from_="<sip:a@127.0.0.1>;tag=c",
        to="<sip:+242053000100@127.0.0.1>",
        call_id="y",
        cseq=1,
    )
    pending = asyncio.ensure_future(endpoint.request(invite, GATEWAY))
    await asyncio.sleep(0)
    busy = sip.response(invite, 486, to_tag="gw").encode()
    endpoint.datagram_received(busy, GATEWAY)
    answer = await asyncio.wait_for(pending, 1)
    assert answer is not None and answer.status == 486
    endpoint.datagram_received(busy, GATEWAY)
    acks = [m for m, _ in transport.sent if m.method == "ACK"]
    assert len(acks) == 2 and acks[0].branch == invite.branch
    await endpoint.close()


async def test_garbage_and_stray_responses_are_dropped_without_a_crash() -> None:
    received: list[SipMessage] = []
    endpoint, transport = _endpoint(received)
    endpoint.datagram_received(b"\x00\x01not sip at all", GATEWAY)
    endpoint.datagram_received(b"\r\n\r\n", GATEWAY)  # a keep-alive
    stray = sip.response(sip.parse(INVITE.encode()), 200, to_tag="x").encode()
    endpoint.datagram_received(stray, GATEWAY)
    await asyncio.sleep(0)
    assert endpoint.dropped == 1
    assert received == [] and transport.sent == []
    await endpoint.close()


@pytest.mark.parametrize(
    ("header", "asked"),
    [
        ("Alert-Info: <urn:alert:service:auto-answer>\r\n", True),
        ("Call-Info: <sip:127.0.0.1>; answer-after=0\r\n", True),
        ("Alert-Info: <http://127.0.0.1/ring.wav>\r\n", False),
        ("Call-Info: <sip:127.0.0.1>;answer-after=5\r\n", False),
        ("", False),
    ],
)
def test_an_invite_that_asks_for_auto_answer_is_recognised(header: str, asked: bool) -> None:
    invite = sip.parse(INVITE.replace("CSeq: 1 INVITE\r\n", f"CSeq: 1 INVITE\r\n{header}").encode())
    assert asks_auto_answer(invite) is asked


def test_an_agent_asked_to_auto_answer_answers_within_the_compliance_window() -> None:
    model = TrafficModel(TrafficSettings(), random.Random(7))
    assert all(model.ring_s(auto_answer=True) < 0.5 for _ in range(200))
    assert max(model.ring_s() for _ in range(200)) > 2.0  # otherwise a person's pace
