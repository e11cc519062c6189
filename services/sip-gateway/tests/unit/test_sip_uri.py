"""SIP/SIPS URIs and other absolute URIs: parsing, serialising, comparing."""

from __future__ import annotations

import pytest

from plateau_sip_gateway.sip import (
    AbsoluteUri,
    Params,
    SipParseError,
    SipUri,
    escape_user,
    parse_sip_uri,
    parse_uri,
    unescape,
)

pytestmark = pytest.mark.unit


def test_a_full_sips_uri_is_split_into_its_parts() -> None:
    text = (
        "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr?Subject=hi%20there&Priority=urgent"
    )
    uri = parse_sip_uri(text)
    assert uri == SipUri(
        scheme="sips",
        user="alice",
        password="secret",
        host="[2001:db8::1]",
        port=5061,
        params=Params((("transport", "tls"), ("lr", None))),
        headers=(("Subject", "hi%20there"), ("Priority", "urgent")),
    )
    assert str(uri) == text
    assert uri.is_sips and uri.loose_route and uri.transport == "tls"
    assert uri.host_port == "[2001:db8::1]:5061"
    assert str(uri.without_headers()) == "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr"


@pytest.mark.parametrize(
    ("text", "host", "port", "user"),
    [
        ("sip:example.com", "example.com", None, None),
        ("SIP:Bob@Biloxi.Example.COM:5070", "Biloxi.Example.COM", 5070, "Bob"),
        ("sip:192.0.2.4", "192.0.2.4", None, None),
        ("sip:[::1]:5060", "[::1]", 5060, None),
        ("sip:+14155550100@gw.example.net;user=phone", "gw.example.net", None, "+14155550100"),
        ("sip:host.example.com.", "host.example.com.", None, None),
    ],
)
def test_host_port_and_user(text: str, host: str, port: int | None, user: str | None) -> None:
    uri = parse_sip_uri(text)
    assert (uri.host, uri.port, uri.user, uri.scheme) == (host, port, user, "sip")


@pytest.mark.parametrize(
    "text",
    [
        "tel:+1-201-555-0123",
        "tel:7042;phone-context=example.com",
        "urn:service:sos",
        "http://www.example.com/a?b=c",
        "isbn:2983792873",
        "soap.beep://192.0.2.103:3002",
    ],
)
def test_other_schemes_are_kept_opaque(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert str(uri) == text
    assert uri.equivalent(parse_uri(text))
    with pytest.raises(SipParseError, match="not a SIP URI"):
        parse_sip_uri(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@example.com:99999",
        "sip:user@example.com:50a",
        "sip:user@exa mple.com",
        "sip:user@-example.com",
        "sip:user@example..com",
        "sip:user@[2001:db8::zz]",
        "sip:user@[::1",
        "sip:user@[::1]x",
        "sip:us<er@example.com",
        "sip:user:pa:ss@example.com",
        "sip:user@example.com;=x",
        "sip:user@example.com;a=",
        "sip:user@example.com;a b",
        "sip:user@example.com?x",
        "sip:user@example.com?=x",
        "sip:user@example.com?a=<b>",
        "1sip:user@example.com",
        "tel:",
        "tel:12 34",
        "<sip:user@example.com>",
    ],
)
def test_malformed_uris_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_escapes_are_kept_in_wire_form_and_decoded_on_request() -> None:
    uri = parse_sip_uri("sip:I%20have%20spaces@example.net;n%61me=v%61lue")
    assert uri.user == "I%20have%20spaces"
    assert uri.unescaped_user == "I have spaces"
    assert uri.params.get("n%61me") == "v%61lue"
    assert escape_user("I have spaces@home") == "I%20have%20spaces%40home"
    assert escape_user("+1;isub=2") == "+1;isub=2"
    assert unescape(escape_user("ünï:cødé")) == "ünï:cødé"


# RFC 3261 §19.1.4 examples of equivalent and different URIs.
@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_equivalent_uris(left: str, right: str) -> None:
    assert parse_uri(left).equivalent(parse_uri(right))
    assert parse_uri(right).equivalent(parse_uri(left))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:bob@biloxi.com", "tel:+1234"),
    ],
)
def test_different_uris(left: str, right: str) -> None:
    assert not parse_uri(left).equivalent(parse_uri(right))
    assert not parse_uri(right).equivalent(parse_uri(left))


def test_uris_are_values() -> None:
    uri = parse_sip_uri("sip:alice@example.com;transport=tcp")
    assert uri == parse_sip_uri("sip:alice@example.com;transport=tcp")
    assert len({uri, parse_sip_uri("sip:alice@example.com;transport=tcp")}) == 1
    assert str(uri.with_params(uri.params.remove("transport"))) == "sip:alice@example.com"
    assert uri.default_port == 5060
    assert parse_sip_uri("sips:a@b").default_port == 5061
