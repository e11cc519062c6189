"""Parsing, encoding and building requests and responses."""

from __future__ import annotations

import dataclasses

import pytest

from plateau_sip_gateway.sip import (
    MAX_MESSAGE_SIZE,
    CSeq,
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    UasPolicy,
    Via,
    check_request,
    find_body,
    parse,
    parse_headers,
    parse_uri,
    reason_phrase,
    split_multipart,
)
from plateau_sip_gateway.sip.values import parse_media_type

pytestmark = pytest.mark.unit

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
)
INVITE = (
    b"INVITE sip:queue-support@pbx.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bK1a, SIP/2.0/TCP edge.example.net\r\n"
    b"Max-Forwards: 70\r\n"
    b'f: "Caller, The" <sip:+14155550100@carrier.example.com>;tag=1928301774\r\n'
    b"t: <sip:queue-support@pbx.example.com>\r\n"
    b"i: a84b4c76e66710@pc33.carrier.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"m: <sip:+14155550100@192.0.2.10:5060>;expires=60\r\n"
    b"Record-Route: <sip:proxy.example.net;lr>, <sip:edge.example.net;lr>\r\n"
    b"Route: <sip:pbx.example.com;lr>\r\n"
    b"k: timer, 100rel\r\n"
    b"Require: timer\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE\r\n"
    b"Expires: 120\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Retry-After: 30\r\n"
    b"c: application/sdp\r\n"
    b"l: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def _request(data: bytes = INVITE) -> SipRequest:
    message = parse(data)
    assert isinstance(message, SipRequest)
    return message


def test_a_typical_invite_exposes_what_a_b2bua_needs() -> None:
    request = _request()
    assert request.method == "INVITE"
    assert request.uri == parse_uri("sip:queue-support@pbx.example.com")
    assert [(v.transport, v.sent_by, v.branch) for v in request.vias] == [
        ("UDP", "192.0.2.10:5060", "z9hG4bK776asdhds"),
        ("UDP", "proxy.example.net", "z9hG4bK1a"),
        ("TCP", "edge.example.net", None),
    ]
    assert request.top_via.has_rport and request.top_via.rport is None
    assert request.from_.display_name == "Caller, The"
    assert request.from_.tag == "1928301774"
    assert request.to.tag is None
    assert request.call_id == "a84b4c76e66710@pc33.carrier.example.com"
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.max_forwards == 70
    assert [str(c.uri) for c in request.contacts] == ["sip:+14155550100@192.0.2.10:5060"]
    assert request.contacts[0].expires == 60
    assert [str(r.uri) for r in request.record_routes] == [
        "sip:proxy.example.net;lr",
        "sip:edge.example.net;lr",
    ]
    assert request.routes[0].uri == parse_uri("sip:pbx.example.com;lr")
    assert request.supported == ("timer", "100rel")
    assert request.require == ("timer",)
    assert request.allow == ("INVITE", "ACK", "CANCEL", "BYE")
    assert request.expires == 120
    assert request.date is not None and request.date.year == 2010
    assert request.retry_after is not None and request.retry_after.seconds == 30
    assert request.content_type is not None and request.content_type.mime == "application/sdp"
    assert request.content_length == len(SDP)
    assert request.body == SDP
    assert find_body(request) == SDP
    assert request.authorization == () and request.www_authenticate == ()
    assert request.accept is None and not request.is_contact_wildcard


def test_encoding_is_canonical() -> None:
    encoded = _request().encode()
    head, body = encoded.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "INVITE sip:queue-support@pbx.example.com SIP/2.0"
    assert lines[1:4] == [
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        "Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bK1a",
        "Via: SIP/2.0/TCP edge.example.net",
    ]
    assert 'From: "Caller, The" <sip:+14155550100@carrier.example.com>;tag=1928301774' in lines
    assert "Call-ID: a84b4c76e66710@pc33.carrier.example.com" in lines
    assert "Content-Type: application/sdp" in lines
    assert lines[-1] == f"Content-Length: {len(SDP)}"
    assert body == SDP
    assert bytes(_request()) == encoded


def test_content_length_is_always_the_body_length() -> None:
    request = _request()
    no_body = request.with_body(b"", None)
    assert no_body.encode().endswith(b"Content-Length: 0\r\n\r\n")
    assert no_body.content_type is None
    other = request.with_body(b"hello", "text/plain")
    assert other.encode().endswith(b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    stale = dataclasses.replace(request, headers=request.headers.add("Content-Length", "999"))
    assert stale.encode().count(b"Content-Length") == 1
    assert parse(stale.encode()) == request


def test_udp_bodies_follow_content_length() -> None:
    longer = INVITE + b"trailing garbage after the datagram's message"
    assert _request(longer).body == SDP
    missing = INVITE.replace(b"l: " + str(len(SDP)).encode() + b"\r\n", b"")
    assert _request(missing + b"rest").body == SDP + b"rest"
    with pytest.raises(SipParseError, match="shorter") as caught:
        parse(INVITE[:-5])
    assert caught.value.can_respond


@pytest.mark.parametrize(
    ("data", "status", "can_respond", "reason"),
    [
        (b"", 400, False, "empty line"),
        (b"\r\n\r\n", 400, False, "empty line"),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"), 400, True, "bare"),
        (
            INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 256\r\n"),
            400,
            True,
            "Max-Forwards",
        ),
        (INVITE.replace(b"Expires: 120", b"Expires: soon"), 400, True, "Expires"),
        (INVITE.replace(b"c: application/sdp", b"c: sdp"), 400, True, "media type"),
        (
            INVITE.replace(b"Route: <sip:pbx.example.com;lr>", b"Route: <sip:pbx"),
            400,
            True,
            "Route",
        ),
        (INVITE.replace(b"i: ", b"i: two words "), 400, True, "Call-ID"),
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/2.1\r\n", 1), 505, True, "version"),
        (INVITE.replace(b"INVITE sip:", b"INV\xe2\x82\xacTE sip:", 1), 400, False, "method"),
        (INVITE.replace(b"m: <sip:", b"m: *, <sip:"), 400, True, "Contact: *"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: INVITE"), 400, False, "CSeq"),
        (INVITE.replace(b";rport\r\n", b";rport;;\r\n"), 400, True, "Via"),
        (INVITE.replace(b"v: SIP/2.0/UDP 192.0.2.10", b"v: SIP/2.0/UDP"), 400, False, "Via"),
        (b"INVITE sip:a@b SIP/2.0\r\n Via: x\r\n\r\n", 400, False, "whitespace"),
        (
            b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 ACK\r\n\r\n",
            400,
            False,
            "missing",
        ),
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\n\r\n", 400, False, "missing"),
        (b"SIP/2.0 99 Low\r\n\r\n", 400, False, "status line"),
        (b"HTTP/1.1 200 OK\r\n\r\n", 400, False, "request line"),
        (INVITE + b"x" * MAX_MESSAGE_SIZE, 513, True, "larger"),
        (INVITE.replace(b"Timestamp: 54\r\n", b"X: y\r\n" * 600), 400, True, "header fields"),
    ],
)
def test_faults_say_what_to_answer(
    data: bytes, status: int, can_respond: bool, reason: str
) -> None:
    with pytest.raises(SipParseError) as caught:
        parse(data)
    error = caught.value
    assert (error.status, error.can_respond) == (status, can_respond), error.reason
    assert reason.lower() in error.reason.lower()
    if can_respond:
        response = error.create_response(to_tag="abc")
        assert response.status == status
        assert response.reason == reason_phrase(status)
        assert response.headers.get("CSeq") is not None
        assert response.encode().startswith(f"SIP/2.0 {status} ".encode())


def test_create_response_copies_what_rfc_3261_says() -> None:
    request = _request()
    trying = request.create_response(100)
    assert (trying.status, trying.reason) == (100, "Trying")
    assert trying.headers.get_all("Via") == request.headers.get_all("Via")
    assert trying.headers.get("Timestamp") == "54"
    assert trying.to.tag is None
    ringing = request.create_response(180, to_tag="gw-1")
    assert ringing.to.tag == "gw-1"
    assert ringing.from_ == request.from_
    assert (ringing.call_id, ringing.cseq) == (request.call_id, request.cseq)
    assert "Timestamp" not in ringing.headers
    # §12.1.1: a response that makes a dialog carries the Record-Route, in order.
    assert ringing.headers.get_all("Record-Route") == request.headers.get_all("Record-Route")
    assert ringing.headers.get_all("Record-Route")
    ok = request.create_response(
        200,
        "Answered",
        to_tag="gw-1",
        headers=[("Contact", "<sip:gw@198.51.100.1>"), ("Content-Type", "application/sdp")],
        body=SDP,
    )
    assert (ok.reason, ok.body, ok.contacts[0].uri.host) == ("Answered", SDP, "198.51.100.1")
    assert parse(ok.encode()) == ok
    already_tagged = ringing.to.tag
    in_dialog = _request(
        INVITE.replace(b"t: <sip:queue-support@pbx.example.com>", b"t: <sip:q@p>;tag=x")
    )
    assert in_dialog.create_response(200, to_tag="other").to.tag == "x"
    assert already_tagged == "gw-1"


def test_reason_phrases() -> None:
    assert reason_phrase(486) == "Busy Here"
    assert reason_phrase(513) == "Message Too Large"
    assert reason_phrase(499) == "Client Error"
    assert reason_phrase(299) == "Success"


def test_proxy_style_helpers() -> None:
    request = _request()
    mine = Via.new("UDP", "198.51.100.1", 5060, "z9hG4bKgw1")
    forwarded = request.with_top_via(mine).with_decremented_max_forwards()
    assert forwarded.vias[0] == mine
    assert forwarded.vias[1:] == request.vias
    assert forwarded.max_forwards == 69
    assert request.max_forwards == 70
    response = parse(forwarded.create_response(180, to_tag="t").encode())
    assert isinstance(response, SipResponse)
    back = response.without_top_via()
    assert back.vias == request.vias
    no_max = request.without_header("Max-Forwards")
    assert no_max.max_forwards is None
    assert no_max.with_decremented_max_forwards().max_forwards == 70
    retargeted = request.with_uri(SipUri(host="agent.example.com", user="1001", port=5070))
    assert retargeted.encode().startswith(b"INVITE sip:1001@agent.example.com:5070 SIP/2.0\r\n")
    assert request.with_replaced_header("Require").require == ()
    assert request.with_header("Route", "<sip:first;lr>", first=True).routes[0].uri.host == "first"


def test_messages_are_validated_when_built() -> None:
    with pytest.raises(ValueError, match="token"):
        SipRequest("BAD METHOD", parse_uri("sip:a@b"))
    with pytest.raises(ValueError, match="100-699"):
        SipResponse(99, "x")
    with pytest.raises(ValueError, match="CR or LF"):
        SipResponse(200, "OK\r\nVia: x")
    with pytest.raises(SipParseError, match="missing Via"):
        _ = SipResponse(200, "OK").top_via
    with pytest.raises(SipParseError, match="missing From"):
        _ = SipResponse(200, "OK").from_


def test_invalid_utf8_survives_a_round_trip() -> None:
    data = INVITE.replace(b"Timestamp: 54", b"Subject: caf\xe9 \xff")
    request = _request(data)
    assert request.encode() == _request(request.encode()).encode()
    assert b"Subject: caf\xe9 \xff\r\n" in request.encode()


def test_leading_crlfs_are_ignored() -> None:
    assert _request(b"\r\n\r\n" + INVITE) == _request()


MULTIPART = (
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: application/isup;version=itu-t92+\r\n"
    b"\r\n"
    b"\x01\x00\x49\r\n--not-the-boundary\r\n"
    b"--outer  \r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"\r\n"
    b"no headers: text/plain\r\n"
    b"--inner\r\n"
    b"Content-Type: application/SDP\r\n"
    b"\r\n" + SDP + b"\r\n"
    b"--inner--\r\n"
    b"--outer--\r\n"
    b"epilogue"
)


def test_multipart_bodies_are_split_and_the_sdp_found() -> None:
    outer = parse_media_type("multipart/mixed;boundary=outer")
    parts = split_multipart(MULTIPART, outer)
    assert [p.content_type.mime for p in parts] == ["application/isup", "multipart/alternative"]
    assert parts[0].body == b"\x01\x00\x49\r\n--not-the-boundary"
    inner = split_multipart(parts[1].body, parts[1].content_type)
    assert [(p.content_type.mime, p.body) for p in inner] == [
        ("text/plain", b"no headers: text/plain"),
        ("application/sdp", SDP),
    ]
    request = _request().with_body(MULTIPART, "multipart/mixed;boundary=outer")
    assert find_body(request) == SDP
    assert find_body(request, "application/isup") == b"\x01\x00\x49\r\n--not-the-boundary"
    assert find_body(request, "image/png") is None
    assert check_request(request, UasPolicy(extensions=frozenset({"timer"}))) is None
    for broken in (b"no boundary at all", b"--outer\r\nContent-Type: a/b\r\n\r\nunterminated"):
        with pytest.raises(SipParseError):
            split_multipart(broken, outer)
    with pytest.raises(SipParseError, match="boundary"):
        split_multipart(MULTIPART, parse_media_type("multipart/mixed"))
    assert parse_headers(b"") == Headers()


def test_uas_checks() -> None:
    request = _request()
    assert check_request(request, UasPolicy(extensions=frozenset({"timer"}))) is None
    rejection = check_request(request)
    assert rejection is not None and rejection.status == 420
    unknown = dataclasses.replace(
        request, method="PUBLISH", headers=request.headers.replace("CSeq", "1 PUBLISH")
    )
    rejection = check_request(unknown)
    assert rejection is not None and rejection.status == 501
    assert "INVITE" in dict(rejection.headers)["Allow"]
    tel = request.with_uri(parse_uri("tel:+14155550100"))
    policy = UasPolicy(extensions=frozenset({"timer"}))
    assert check_request(tel, policy) is not None
    assert (
        check_request(tel, dataclasses.replace(policy, uri_schemes=frozenset({"sip", "tel"})))
        is None
    )
    gzip = request.with_header("Content-Encoding", "gzip")
    rejection = check_request(gzip, policy)
    assert rejection is not None and rejection.status == 415
    assert dict(rejection.headers) == {"Accept-Encoding": "identity"}
    untyped = request.without_header("Content-Type")
    assert check_request(untyped, policy) == check_request(untyped, policy)
    rejection = check_request(untyped, policy)
    assert rejection is not None and rejection.status == 400
    optional = request.with_body(b"<xml/>", "application/xml").with_header(
        "Content-Disposition", "render;handling=optional"
    )
    assert check_request(optional, policy) is None
    bad_accept = request.with_header("Accept", "garbage")
    rejection = check_request(bad_accept, policy)
    assert rejection is not None and rejection.status == 400
    ack = dataclasses.replace(
        request, method="ACK", headers=request.headers.replace("CSeq", "1 ACK")
    )
    assert check_request(ack) is None
    cancel = dataclasses.replace(
        request, method="CANCEL", headers=request.headers.replace("CSeq", "1 CANCEL")
    )
    assert check_request(cancel.with_body(b"", None)) is None


def test_register_rules() -> None:
    register = _request(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKr1\r\n"
        b"From: <sip:1001@example.com>;tag=a\r\n"
        b"To: <sip:1001@example.com>\r\n"
        b"Call-ID: r1\r\n"
        b"CSeq: 2 REGISTER\r\n"
        b"Contact: *\r\n"
        b"Expires: 0\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert register.is_contact_wildcard and register.contacts == ()
    assert check_request(register) is None
    rejection = check_request(register.with_replaced_header("Expires", "60"))
    assert rejection is not None and rejection.status == 400
