"""Cutting messages out of a stream by Content-Length."""

from __future__ import annotations

import pytest

from plateau_sip_gateway.sip import FramingError, StreamFramer, parse

pytestmark = pytest.mark.unit

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
INVITE = (
    b"INVITE sip:agent@192.0.2.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa\r\n"
    b"From: <sip:gw@192.0.2.1>;tag=1\r\nTo: <sip:agent@192.0.2.2>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
OPTIONS = (
    b"OPTIONS sip:agent@192.0.2.2 SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKb\r\n"
    b"f: <sip:gw@192.0.2.1>;tag=2\r\nt: <sip:agent@192.0.2.2>\r\n"
    b"i: c2\r\nCSeq: 1 OPTIONS\r\nl:\r\n 0\r\n\r\n"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa\r\n"
    b"From: <sip:gw@192.0.2.1>;tag=1\r\nTo: <sip:agent@192.0.2.2>;tag=9\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"content-length  :  " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
NO_LENGTH = (
    b"BYE sip:agent@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKc\r\n"
    b"From: <sip:gw@192.0.2.1>;tag=1\r\nTo: <sip:agent@192.0.2.2>;tag=9\r\n"
    b"Call-ID: c1\r\nCSeq: 2 BYE\r\n\r\n"
)
MESSAGES = [INVITE, OPTIONS, RESPONSE, NO_LENGTH, INVITE]
STREAM = (
    b"\r\n" + INVITE + OPTIONS + b"\r\n\r\n" + RESPONSE + NO_LENGTH + b"\r\n\r\n\r\n\r\n" + INVITE
)


def _feed_all(chunks: list[bytes]) -> tuple[list[bytes], int, StreamFramer]:
    pings: list[None] = []
    framer = StreamFramer(on_ping=lambda: pings.append(None))
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out, len(pings), framer


def test_a_stream_split_at_every_byte_boundary_gives_the_same_messages() -> None:
    for cut in range(len(STREAM) + 1):
        out, pings, framer = _feed_all([STREAM[:cut], STREAM[cut:]])
        assert out == MESSAGES, cut
        assert pings == 3, cut
        assert framer.buffered == 0


def test_a_stream_fed_byte_by_byte_gives_the_same_messages() -> None:
    out, pings, _ = _feed_all([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert out == MESSAGES
    assert pings == 3
    assert [type(parse(m)).__name__ for m in out] == [
        "SipRequest",
        "SipRequest",
        "SipResponse",
        "SipRequest",
        "SipRequest",
    ]
    assert parse(out[1]).body == b""


def test_a_single_crlf_is_a_pong_not_a_ping() -> None:
    out, pings, framer = _feed_all([b"\r\n", OPTIONS, b"\r\n", b"\r"])
    assert (out, pings) == ([OPTIONS], 0)
    assert framer.buffered == 1
    assert framer.feed(b"\n\r\n") == []


def test_a_partial_message_waits_for_more() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:-1]) == []
    assert framer.buffered == len(INVITE) - 1
    assert framer.feed(INVITE[-1:] + OPTIONS[:10]) == [INVITE]
    assert framer.buffered == 10


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (INVITE.replace(b"Content-Length: ", b"Content-Length: -"), 400, "invalid"),
        (INVITE.replace(b"Content-Length: ", b"Content-Length: x"), 400, "invalid"),
        (INVITE.replace(b"Max-Forwards: 70", b"l: 3"), 400, "more than one"),
        (INVITE.replace(b"Content-Length: ", b"Content-Length: 99999999999999"), 513, "too large"),
        (INVITE.replace(b"Content-Length: ", b"Content-Length: 70000"), 513, "larger than"),
        (b"INVITE sip:a@b SIP/2.0\r\nX: " + b"y" * 70_000, 513, "no end of headers"),
    ],
)
def test_framing_errors_are_fatal(data: bytes, status: int, reason: str) -> None:
    framer = StreamFramer()
    with pytest.raises(FramingError, match=reason) as caught:
        framer.feed(data)
    assert caught.value.status == status
    with pytest.raises(FramingError):
        framer.feed(OPTIONS)
    assert framer.buffered == 0


def test_the_size_limit_is_configurable_and_counts_the_whole_message() -> None:
    framer = StreamFramer(max_message_size=len(INVITE))
    assert framer.feed(INVITE) == [INVITE]
    small = StreamFramer(max_message_size=len(INVITE) - 1)
    with pytest.raises(FramingError) as caught:
        small.feed(INVITE[: -len(SDP)])  # refused as soon as Content-Length is known
    assert caught.value.status == 513


def test_a_large_trickled_head_is_scanned_in_linear_time() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-Filler: " + b"z" * 60_000 + b"\r\n"
    framer = StreamFramer()
    for i in range(0, len(head), 7):
        assert framer.feed(head[i : i + 7]) == []
    assert framer.feed(b"\r\n") == [head + b"\r\n"]
