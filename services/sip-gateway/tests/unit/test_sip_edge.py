"""Behind the SIP edge: the real source a trusted proxy reports, the Path it adds to
REGISTERs, and the settings that say which proxy to trust and to leave through."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest
from pydantic import ValidationError

from plateau_sip_gateway.domain.digest import (
    Algorithm,
    compute_ha1,
    compute_response,
    derive_credentials,
)
from plateau_sip_gateway.domain.directory import InMemoryDirectory
from plateau_sip_gateway.domain.edge import (
    ForwardedSource,
    ForwardedSourceError,
    TrustedProxies,
    parse_forwarded_source,
    parse_networks,
)
from plateau_sip_gateway.entrypoints.sip import SipEntrypoint, source_of
from plateau_sip_gateway.registrar_service import RegistrarService
from plateau_sip_gateway.settings import (
    GatewaySettings,
    outbound_proxy,
    resolve_outbound_proxy,
)
from plateau_sip_gateway.sip import SipRequest, SipResponse, parse
from plateau_sip_gateway.sip.endpoint import Destination
from plateau_sip_gateway.sip.timers import TimerSettings, VirtualScheduler
from plateau_sip_gateway.sip.transaction import NonInviteServerTransaction

pytestmark = pytest.mark.unit

PROXY = "10.0.0.5"
PHONE = ("198.51.100.7", 40312)
REALM = "plateau"
PASSWORD = "correct-horse"
_branches = itertools.count()


def request(
    method: str = "OPTIONS",
    *,
    via_host: str = PROXY,
    extra: tuple[str, ...] = (),
    user: str = "1001",
    cseq: int = 1,
) -> SipRequest:
    lines = [
        f"{method} sip:{user}@192.0.2.1 SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host}:5080;branch=z9hG4bK{next(_branches)}",
        "Max-Forwards: 69",
        f"From: <sip:{user}@192.0.2.1>;tag=1",
        f"To: <sip:{user}@192.0.2.1>",
        "Call-ID: edge-test@198.51.100.7",
        f"CSeq: {cseq} {method}",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse("\r\n".join(lines).encode())
    assert isinstance(message, SipRequest)
    return message


class Transaction:
    """A real server transaction whose responses are kept, not sent."""

    def __init__(self, message: SipRequest) -> None:
        self.sent: list[bytes] = []
        self.tx = NonInviteServerTransaction(
            message,
            self.sent.append,
            reliable=False,
            timers=TimerSettings(),
            scheduler=VirtualScheduler(),
            to_tag="t1",
        )

    @property
    def response(self) -> SipResponse:
        (raw,) = self.sent
        response = parse(raw)
        assert isinstance(response, SipResponse)
        return response


# the header ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("UDP 203.0.113.7:5060", ForwardedSource("UDP", "203.0.113.7", 5060)),
        ("tcp 203.0.113.7:40000", ForwardedSource("TCP", "203.0.113.7", 40000)),
        ("  UDP   203.0.113.7:1  ", ForwardedSource("UDP", "203.0.113.7", 1)),
        ("udp [2001:db8::7]:5062", ForwardedSource("UDP", "2001:db8::7", 5062)),
        ("UDP [2001:DB8:0::7]:5062", ForwardedSource("UDP", "2001:db8::7", 5062)),
    ],
)
def test_forwarded_source_is_read(value: str, expected: ForwardedSource) -> None:
    assert parse_forwarded_source(value) == expected


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "must be '<transport> <address>:<port>'"),
        ("203.0.113.7:5060", "must be '<transport> <address>:<port>'"),
        ("UDP 203.0.113.7:5060 extra", "must be '<transport> <address>:<port>'"),
        ("PIGEON 203.0.113.7:5060", "unknown transport"),
        ("UDP 203.0.113.7", "must be <IPv4>:<port>"),
        ("UDP carrier.example:5060", "is not an IP address"),
        ("UDP 203.0.113.999:5060", "is not an IP address"),
        ("UDP 203.0.113.7:0", "is not 1-65535"),
        ("UDP 203.0.113.7:65536", "is not 1-65535"),
        ("UDP 203.0.113.7:-1", "is not 1-65535"),
        ("UDP 2001:db8::7:5060", "must be <IPv4>:<port>"),
        ("UDP [2001:db8::7]5060", "lacks ']:<port>'"),
        ("UDP [2001:db8::7", "lacks ']:<port>'"),
    ],
)
def test_malformed_forwarded_source_says_what_is_wrong(value: str, complaint: str) -> None:
    with pytest.raises(ForwardedSourceError, match=complaint.replace("[", r"\[")):
        parse_forwarded_source(value)


# whom to believe ----------------------------------------------------------------------


def test_no_trusted_proxy_means_the_header_is_never_read() -> None:
    proxies = TrustedProxies()
    assert not proxies
    assert not proxies.trusts(PROXY)
    assert proxies.real_source(PROXY, ["garbage that would be a 400"]) is None


def test_only_packets_from_the_trusted_networks_are_believed() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/24, 2001:db8:1::/64")
    assert proxies.trusts("10.0.0.5")
    assert proxies.trusts("[2001:db8:1::9]")
    assert not proxies.trusts("10.0.1.5")
    assert not proxies.trusts("not-an-address")
    # From outside, even a well-formed header is ignored, and a garbled one is not an error.
    assert proxies.real_source("203.0.113.7", ["UDP 198.51.100.7:5060"]) is None
    assert proxies.real_source("203.0.113.7", ["garbage"]) is None
    assert proxies.real_source(PROXY, ["UDP 198.51.100.7:5060"]) == ForwardedSource(
        "UDP", "198.51.100.7", 5060
    )


def test_a_trusted_proxy_without_the_header_speaks_for_itself() -> None:
    assert TrustedProxies.parse(PROXY).real_source(PROXY, []) is None


def test_a_repeated_header_from_a_trusted_proxy_is_refused() -> None:
    proxies = TrustedProxies.parse(PROXY)
    with pytest.raises(ForwardedSourceError, match="appears 2 times"):
        proxies.real_source(PROXY, ["UDP 198.51.100.7:5060", "UDP 192.0.2.9:5060"])


def test_networks_are_cidr_or_addresses() -> None:
    assert [str(n) for n in parse_networks("10.0.0.5, 10.1.0.0/16,,")] == [
        "10.0.0.5/32",
        "10.1.0.0/16",
    ]
    with pytest.raises(ValueError, match="'kamailio' is not an IP address or CIDR network"):
        parse_networks("10.0.0.5, kamailio")


# the entry point ----------------------------------------------------------------------


def test_source_of_a_relayed_request_is_the_reported_one_via_the_proxy() -> None:
    tx = Transaction(request(extra=("X-Plateau-Source: UDP 198.51.100.7:40312",)))
    source = source_of(tx.tx, TrustedProxies.parse("10.0.0.0/24"))
    assert (source.transport, source.remote, source.relay) == ("UDP", PHONE, (PROXY, 5080))


def test_source_of_ignores_the_header_from_an_untrusted_sender() -> None:
    message = request(via_host="203.0.113.66", extra=("X-Plateau-Source: UDP 10.9.9.9:5060",))
    source = source_of(Transaction(message).tx, TrustedProxies.parse("10.0.0.0/24"))
    assert (source.remote, source.relay) == (("203.0.113.66", 5080), None)
    source = source_of(Transaction(message).tx)
    assert (source.remote, source.relay) == (("203.0.113.66", 5080), None)


def test_malformed_header_from_the_trusted_proxy_is_a_400_with_the_reason() -> None:
    tx = Transaction(request(extra=("X-Plateau-Source: UDP 198.51.100.7",)))
    # Nothing but the header is looked at before the 400: no registrar, no B2BUA needed.
    entry = SipEntrypoint(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        "demo",
        proxies=TrustedProxies.parse(PROXY),
    )
    entry.handle(tx.tx)
    assert tx.response.status == 400
    assert "X-Plateau-Source address '198.51.100.7' must be" in tx.response.reason


# Path (RFC 3327) ----------------------------------------------------------------------


def registrar() -> RegistrarService:
    return RegistrarService.create(
        realm=REALM,
        secrets=[b"k" * 32],
        directory=InMemoryDirectory([derive_credentials("1001", REALM, PASSWORD)]),
        clock=lambda: 1_700_000_000.0,
    )


PATH = "<sip:10.0.0.5:5080;received=sip:198.51.100.7:40312;lr>"


def authenticated_register(
    service: RegistrarService, *extra: str, relayed: bool = True
) -> SipResponse:
    """A REGISTER through the proxy, challenged and answered."""
    headers = ("Contact: <sip:1001@192.168.1.20:5060>", "Expires: 120", *extra)
    challenge, _ = service.handle(request("REGISTER", extra=headers), PHONE, "UDP", relayed=relayed)
    www = next(v for v in challenge.www_authenticate if v.get("algorithm") == "MD5")
    nonce = www.get("nonce") or ""
    md5 = Algorithm.parse("MD5")
    assert md5 is not None
    digest = compute_response(
        algorithm=md5,
        ha1=compute_ha1(md5, "1001", REALM, PASSWORD),
        nonce=nonce,
        method="REGISTER",
        uri="sip:1001@192.0.2.1",
        nc="00000001",
        cnonce="c0ffee",
    )
    auth = (
        f'Authorization: Digest username="1001", realm="{REALM}", nonce="{nonce}", '
        f'uri="sip:1001@192.0.2.1", response="{digest}", algorithm=MD5, qop=auth, '
        'nc=00000001, cnonce="c0ffee"'
    )
    response, _ = service.handle(
        request("REGISTER", extra=(*headers, auth), cseq=2), PHONE, "UDP", relayed=relayed
    )
    assert response.status == 200, response.reason
    return response


def test_a_relayed_register_stores_its_path_and_echoes_it_when_supported() -> None:
    service = registrar()
    response = authenticated_register(service, f"Path: {PATH}", "Supported: path, outbound")
    (binding,) = service.registrar.lookup("1001", 1_700_000_000.0)
    assert binding.path == (PATH,)
    assert binding.source == PHONE
    assert response.headers.get_all("Path") == (PATH,)


def test_path_hops_keep_their_order_and_are_not_echoed_without_supported_path() -> None:
    service = registrar()
    response = authenticated_register(
        service, "Path: <sip:10.0.0.5:5080;lr>, <sip:10.0.0.6;lr>", "Path: <sip:10.0.0.7;lr>"
    )
    (binding,) = service.registrar.lookup("1001", 1_700_000_000.0)
    assert binding.path == ("<sip:10.0.0.5:5080;lr>", "<sip:10.0.0.6;lr>", "<sip:10.0.0.7;lr>")
    assert response.headers.get_all("Path") == ()


def test_a_path_from_a_phone_that_registered_directly_is_ignored() -> None:
    service = registrar()
    response = authenticated_register(
        service, "Path: <sip:203.0.113.66;lr>", "Supported: path", relayed=False
    )
    (binding,) = service.registrar.lookup("1001", 1_700_000_000.0)
    assert binding.path == ()
    assert response.headers.get_all("Path") == ()


def test_a_malformed_path_from_the_proxy_is_400() -> None:
    service = registrar()
    headers = ("Contact: <sip:1001@192.168.1.20:5060>", "Path: <tel:+242>")
    response, _ = service.handle(request("REGISTER", extra=headers), PHONE, "UDP", relayed=True)
    assert response.status == 400
    assert "Path" in response.reason


# settings -----------------------------------------------------------------------------


def test_outbound_proxy_is_read_with_the_route_to_preload() -> None:
    assert outbound_proxy("sip:10.0.0.5:5080") == (
        "UDP",
        "10.0.0.5",
        5080,
        "<sip:10.0.0.5:5080;transport=udp;lr>",
    )
    assert outbound_proxy("<sip:[2001:db8::5];transport=tcp;lr>") == (
        "TCP",
        "2001:db8::5",
        5060,
        "<sip:[2001:db8::5]:5060;transport=tcp;lr>",
    )
    assert outbound_proxy("sip:kamailio-replicas:5080").route == (
        "<sip:kamailio-replicas:5080;transport=udp;lr>"
    )


async def test_outbound_proxy_by_name_is_looked_up_once_and_routed_by_name() -> None:
    assert await resolve_outbound_proxy("sip:localhost:5080") == (
        Destination("UDP", "127.0.0.1", 5080),
        "<sip:localhost:5080;transport=udp;lr>",
    )
    assert await resolve_outbound_proxy("sip:10.0.0.5:5080;transport=tcp") == (
        Destination("TCP", "10.0.0.5", 5080),
        "<sip:10.0.0.5:5080;transport=tcp;lr>",
    )


@pytest.mark.parametrize(
    ("setting", "value", "complaint"),
    [
        ("sip_outbound_proxy", "sips:10.0.0.5", "must be a sip: URI"),
        ("sip_outbound_proxy", "10.0.0.5", "is not a SIP URI"),
        ("sip_outbound_proxy", "sip:10.0.0.5;transport=sctp", "is not UDP or TCP"),
        ("sip_trusted_proxies", "10.0.0.0/8,kamailio", "'kamailio' is not an IP address"),
    ],
)
def test_wrong_edge_settings_stop_the_start(setting: str, value: str, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        GatewaySettings.model_validate({setting: value})


def test_edge_settings_default_to_no_proxy() -> None:
    settings = GatewaySettings()
    assert (settings.sip_trusted_proxies, settings.sip_outbound_proxy) == ("", None)


# Record-Route ---------------------------------------------------------------------------


def test_responses_that_make_a_dialog_carry_the_record_route_in_order() -> None:
    rr = ("<sip:192.0.2.1:5060;r2=on;lr>", "<sip:10.0.0.5:5080;r2=on;lr>")
    invite = request("INVITE", extra=tuple(f"Record-Route: {r}" for r in rr))
    for status in (180, 183, 200):
        assert invite.create_response(status, to_tag="t").headers.get_all("Record-Route") == rr
    for status in (100, 486):
        assert invite.create_response(status, to_tag="t").headers.get_all("Record-Route") == ()
