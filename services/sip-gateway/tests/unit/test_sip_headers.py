"""The header collection and the typed header values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plateau_sip_gateway.sip import (
    COMPACT_FORMS,
    AuthValue,
    Headers,
    MediaType,
    NameAddr,
    Params,
    SipParseError,
    SipUri,
    Via,
    canonical_name,
    format_date,
    parse,
    parse_auth,
    parse_media_type,
    parse_name_addr,
    parse_via,
    quote,
    unquote,
)
from plateau_sip_gateway.sip.values import parse_date, parse_retry_after

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("compact", "name"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
    ],
)
def test_compact_forms_stand_for_their_header(compact: str, name: str) -> None:
    assert COMPACT_FORMS[compact] == name
    assert canonical_name(compact)[1] == name
    assert canonical_name(compact.upper())[1] == name
    headers = Headers([(compact, "value")])
    assert headers.get(name) == "value"
    assert headers.get(name.upper()) == "value"
    assert list(headers) == [(name, "value")]


def test_names_are_case_insensitive_and_unknown_ones_keep_their_spelling() -> None:
    headers = Headers([("cALL-iD", "abc"), ("X-Custom-Thing", "1"), ("x-custom-thing", "2")])
    assert list(headers) == [("Call-ID", "abc"), ("X-Custom-Thing", "1"), ("x-custom-thing", "2")]
    assert headers.get_all("X-CUSTOM-THING") == ("1", "2")
    assert "call-id" in headers and "Via" not in headers
    assert headers.names() == ("Call-ID", "X-Custom-Thing")
    with pytest.raises(ValueError, match="header name"):
        Headers([("Bad Name", "x")])
    with pytest.raises(ValueError, match="CR or LF"):
        Headers([("Subject", "injected\r\nVia: SIP/2.0/UDP evil")])


def test_list_headers_are_split_where_the_grammar_allows() -> None:
    headers = Headers(
        [
            (
                "Contact",
                '"Bell, Alexander" <sip:a.g.bell@example.com>, <sip:x,y@example.com>;q=0.5',
            ),
            ("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com"),
            ("Supported", "timer,100rel, path"),
            ("WWW-Authenticate", 'Digest realm="a, b", nonce="x", qop="auth,auth-int"'),
            ("Authorization", 'Digest username="bob", realm="a", uri="sip:a@b", response="0"'),
            ("Proxy-Authenticate", 'Digest realm="a", nonce="y"'),
            ("Proxy-Authorization", 'Digest username="bob", realm="a"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Retry-After", "18000;duration=3600"),
            ("X-Unknown", "a, b, c"),
            ("Subject", "Hi, there"),
        ]
    )
    assert headers.get_all("Contact") == (
        '"Bell, Alexander" <sip:a.g.bell@example.com>',
        "<sip:x,y@example.com>;q=0.5",
    )
    assert headers.get_all("Via") == (
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/TCP b.example.com",
    )
    assert headers.get_all("Supported") == ("timer", "100rel", "path")
    for whole in (
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Date",
        "Retry-After",
        "X-Unknown",
        "Subject",
    ):
        assert headers.count(whole) == 1, whole


def test_adding_removing_and_replacing_fields_gives_new_collections() -> None:
    headers = Headers(
        [("Via", "SIP/2.0/UDP b"), ("From", "<sip:f@x>"), ("Via", "SIP/2.0/UDP c"), ("To", "t")]
    )
    top = headers.add("Via", "SIP/2.0/UDP a", first=True)
    assert top.get_all("Via") == ("SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c")
    assert next(iter(top)) == ("Via", "SIP/2.0/UDP a")
    assert headers.get_all("Via") == ("SIP/2.0/UDP b", "SIP/2.0/UDP c")
    bottom = headers.add("v", "SIP/2.0/UDP d")
    assert list(bottom)[3] == ("Via", "SIP/2.0/UDP d")
    assert headers.add("Route", "<sip:r>").get("Route") == "<sip:r>"
    assert headers.remove_first("Via").get_all("Via") == ("SIP/2.0/UDP c",)
    assert headers.remove("VIA").get_all("Via") == ()
    assert headers.remove_first("Route") is headers
    replaced = headers.replace("Via", "SIP/2.0/TCP x, SIP/2.0/TCP y")
    assert list(replaced)[:2] == [("Via", "SIP/2.0/TCP x"), ("Via", "SIP/2.0/TCP y")]
    assert replaced.count("Via") == 2
    assert headers.replace("Subject", "new").get("Subject") == "new"
    assert "To" not in headers.replace("To")


def test_equality_ignores_the_order_of_different_names_only() -> None:
    a = Headers([("Via", "1"), ("Via", "2"), ("To", "t"), ("From", "f")])
    b = Headers([("From", "f"), ("v", "1"), ("t", "t"), ("Via", "2")])
    c = Headers([("Via", "2"), ("Via", "1"), ("To", "t"), ("From", "f")])
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != Headers([("Via", "1"), ("Via", "2"), ("To", "t")])


def test_via_with_every_parameter() -> None:
    via = parse_via(
        "SIP / 2.0 / tcp [2001:db8::9]:5070 ;branch= z9hG4bK74bf9;received=192.0.2.1;"
        "rport=5071;maddr=224.2.0.1;ttl=16;x-ext"
    )
    assert via.transport == "TCP"
    assert (via.host, via.port, via.sent_by) == ("[2001:db8::9]", 5070, "[2001:db8::9]:5070")
    assert (via.branch, via.received, via.rport, via.maddr, via.ttl) == (
        "z9hG4bK74bf9",
        "192.0.2.1",
        5071,
        "224.2.0.1",
        16,
    )
    assert via.has_rport and via.has_rfc3261_branch and "x-ext" in via.params
    assert str(via) == (
        "SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK74bf9;received=192.0.2.1;rport=5071;"
        "maddr=224.2.0.1;ttl=16;x-ext"
    )
    assert parse_via(str(via)) == via


def test_a_server_stamps_received_and_rport_on_the_top_via() -> None:
    via = Via.new("udp", "10.0.0.1", 5060, "z9hG4bKabc")
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport"
    stamped = via.with_received("203.0.113.7", 40000)
    assert (
        str(stamped)
        == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=40000;received=203.0.113.7"
    )
    no_rport = Via.new("TCP", "h", None, "z9hG4bKx", rport=False).with_received("192.0.2.9", 1)
    assert str(no_rport) == "SIP/2.0/TCP h;branch=z9hG4bKx;received=192.0.2.9"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP host;rport=abc",
        "SIP/2.0/UDP host;ttl=300",
        "SIP/2.0/UDP host;received=not_an_address",
        "SIP/2.0/UDP host extra",
        "SIP/2.0/UDP ho@st",
    ],
)
def test_malformed_vias_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:a@b>", None, "sip:a@b", ()),
        ('"" <sip:a@b>', "", "sip:a@b", ()),
        ('"A \\"B\\" \\\\ C" <sip:a@b>;tag=1', 'A "B" \\ C', "sip:a@b", (("tag", "1"),)),
        ("Alice  Smith<sip:a@b;lr>", "Alice Smith", "sip:a@b;lr", ()),
        ("sip:a@b;tag=x;expires=60", None, "sip:a@b", (("tag", "x"), ("expires", "60"))),
        ("tel:+123;tag=1", None, "tel:+123", (("tag", "1"),)),
        (
            '<urn:uuid:1>;+sip.instance="<urn:uuid:f81d>"',
            None,
            "urn:uuid:1",
            (("+sip.instance", '"<urn:uuid:f81d>"'),),
        ),
    ],
)
def test_name_addr_forms(
    text: str, display: str | None, uri: str, params: tuple[tuple[str, str], ...]
) -> None:
    value = parse_name_addr(text, "To")
    assert (value.display_name, str(value.uri), value.params.items) == (display, uri, params)
    assert parse_name_addr(str(value), "To") == value


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        '"a" sip:a@b',
        'x "a" <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "<sip:a@b",
        "< sip:a@b>",
        "<sip:a@b >",
        "sip:a@b?x=y",
        "<sip:a@b>;",
        "<sip:a@b>;tag=1 x",
        "<>",
    ],
)
def test_malformed_name_addrs_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text, "To")


def test_name_addr_rendering_quotes_only_what_needs_it() -> None:
    uri = SipUri(host="example.com", user="bob")
    assert str(NameAddr(uri)) == "<sip:bob@example.com>"
    assert str(NameAddr(uri, "Bob Smith")) == "Bob Smith <sip:bob@example.com>"
    assert str(NameAddr(uri, "Smith, Bob")) == '"Smith, Bob" <sip:bob@example.com>'
    assert str(NameAddr(uri, "")) == '"" <sip:bob@example.com>'
    tagged = NameAddr(uri, None, Params((("tag", "1"),))).with_tag("2")
    assert (str(tagged), tagged.tag) == ("<sip:bob@example.com>;tag=2", "2")
    contact = parse_name_addr("<sip:a@b>;expires=3600;q=0.7", "Contact")
    assert (contact.expires, contact.q) == (3600, 0.7)
    assert parse_name_addr("<sip:a@b>;q=2;expires=x", "Contact").q is None


def test_digest_credentials_keep_commas_inside_quotes() -> None:
    value = parse_auth(
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
        ' uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b",'
        ' response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41",'
        " algorithm=SHA-256"
    )
    assert value.is_digest
    assert value.get("USERNAME") == "bob"
    assert value.get("uri") == "sip:bob@biloxi.com"
    assert (value.get("qop"), value.get("nc"), value.get("algorithm")) == (
        "auth",
        "00000001",
        "SHA-256",
    )
    assert value.get("missing") is None
    assert parse_auth(str(value)) == value
    challenge = AuthValue.of(
        "Digest",
        [
            ("realm", "atlanta.com", True),
            ("qop", "auth,auth-int", True),
            ("algorithm", "MD5", False),
        ],
    )
    assert str(challenge) == 'Digest realm="atlanta.com", qop="auth,auth-int", algorithm=MD5'
    assert parse_auth("Bearer abc.def==").token68 == "abc.def=="
    with pytest.raises(SipParseError):
        parse_auth('Digest realm="x", nonce')
    with pytest.raises(SipParseError):
        parse_auth('Digest realm="unterminated')


def test_retry_after_date_and_media_types() -> None:
    retry = parse_retry_after("120 (I'm in a (long) meeting) ;duration=3600")
    assert (retry.seconds, retry.comment, retry.duration) == (120, "I'm in a (long) meeting", 3600)
    assert parse_retry_after(str(retry)) == retry
    with pytest.raises(SipParseError):
        parse_retry_after("949302838503028349304023988")
    with pytest.raises(SipParseError):
        parse_retry_after("5 (open")
    moment = parse_date("Sat, 13 Nov 2010 23:29:00 GMT")
    assert moment == datetime(2010, 11, 13, 23, 29, tzinfo=UTC)
    assert format_date(moment) == "Sat, 13 Nov 2010 23:29:00 GMT"
    for bad in ("Sat, 13 Nov 2010 23:29:00 EST", "Sat, 31 Feb 2010 23:29:00 GMT", "yesterday"):
        with pytest.raises(SipParseError):
            parse_date(bad)
    media = parse_media_type('multipart/mixed ; boundary="a b" ;charset=utf-8')
    assert (media.mime, media.boundary, media.params.get("charset")) == (
        "multipart/mixed",
        "a b",
        "utf-8",
    )
    assert MediaType("*", "*").matches("application/sdp")
    assert MediaType("application", "*").matches("application/sdp")
    assert not MediaType("text", "plain").matches("application/sdp")


def test_quote_and_unquote_are_inverse() -> None:
    for text in ("", "plain", 'with "quotes"', "back\\slash", "ctl\x01\x7f", "ünïcode"):
        assert unquote(quote(text)) == text
    with pytest.raises(ValueError, match="CR or LF"):
        quote("a\r\nb")
    assert Params.of([("a", "tok"), ("b", "needs quoting"), ("c", None)]).items == (
        ("a", "tok"),
        ("b", '"needs quoting"'),
        ("c", None),
    )


def test_folded_and_spaced_headers_are_unfolded() -> None:
    message = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From:\r\n\t<sip:f@x>\r\n  ;tag=1\r\n"
        b"To    :<sip:t@x>\r\n"
        b"Call-ID:c\r\n"
        b"CSeq: 1\r\n OPTIONS\r\n"
        b"Subject: one\r\n  two \t\r\n\tthree\r\n"
        b"\r\n"
    )
    assert message.from_.tag == "1"
    assert str(message.to.uri) == "sip:t@x"
    assert message.headers.get("Subject") == "one two three"
    assert message.cseq.method == "OPTIONS"
