"""What each RFC 4475 torture message must produce, one entry per file.

``Parses``: the message is well formed; ``fields`` are (label, getter, expected) checks of
what the RFC's section is about, ``uas`` the status ``check_request`` answers with under
the default policy (None: the request may proceed; responses have no ``uas``).
``Fails``: ``parse`` raises SipParseError with that status and ``can_respond``.

Section names follow map.txt (S31101 = RFC 4475 §3.1.1.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plateau_sip_gateway.sip import (
    AbsoluteUri,
    SipRequest,
    SipResponse,
    find_body,
    parse_uri,
    split_multipart,
)

Message = SipRequest | SipResponse
Check = tuple[str, Callable[[Any], object], object]


@dataclass(frozen=True)
class Parses:
    section: str
    fields: tuple[Check, ...] = ()
    uas: int | None = None


@dataclass(frozen=True)
class Fails:
    section: str
    status: int
    can_respond: bool
    reason: str = ""
    fields: tuple[Check, ...] = field(default=())


def _parts(m: Message) -> list[tuple[str, bytes]]:
    assert m.content_type is not None
    return [(p.content_type.mime, p.body) for p in split_multipart(m.body, m.content_type)]


def _via_summary(m: Message) -> list[tuple[str, str, int | None, str | None]]:
    return [(v.transport, v.host, v.port, v.branch) for v in m.vias]


LONG = "long" * 20
EXPECTATIONS: dict[str, Parses | Fails] = {
    # §3.1.1 valid messages ---------------------------------------------------------
    "wsinv": Parses(
        "S31101",
        (
            ("Request-URI", lambda m: str(m.uri), "sip:vivekg@chair-dnrc.example.com;unknownparam"),
            ("To has no display name", lambda m: m.to.display_name, None),
            ("To URI", lambda m: str(m.to.uri), "sip:vivekg@chair-dnrc.example.com"),
            ("To tag", lambda m: m.to.tag, "1918181833n"),
            ("From display name", lambda m: m.from_.display_name, 'J Rosenberg \\"'),
            ("From URI", lambda m: str(m.from_.uri), "sip:jdrosen@example.com"),
            ("From tag", lambda m: m.from_.tag, "98asjd8"),
            ("Max-Forwards 0068", lambda m: m.max_forwards, 68),
            ("Call-ID", lambda m: m.call_id, "wsinv.ndaksdj@192.0.2.1"),
            ("CSeq over two lines", lambda m: (m.cseq.number, m.cseq.method), (9, "INVITE")),
            (
                "Via with LWS around / and = and a comma list",
                _via_summary,
                [
                    ("UDP", "192.0.2.2", None, "390skdjuw"),
                    ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
                    ("UDP", "192.168.255.111", None, "z9hG4bK30239"),
                ],
            ),
            ("empty Subject (s)", lambda m: m.headers.get("Subject"), ""),
            (
                "folded unknown header",
                lambda m: m.headers.get("newfangledheader"),
                "newfangled value continued newfangled value",
            ),
            (
                "unknown header kept whole",
                lambda m: m.headers.get_all("UnknownHeaderWithUnusualValue"),
                (";;,,;;,;",),
            ),
            (
                "Route URI parameters",
                lambda m: [(k, v) for k, v in m.routes[0].uri.params],
                [("lr", None), ("unknownwith", "value"), ("unknown-no-value", None)],
            ),
            ("Contact (m) display name", lambda m: m.contacts[0].display_name, 'Quoted string ""'),
            (
                "Contact parameters",
                lambda m: [(k, v) for k, v in m.contacts[0].params],
                [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")],
            ),
            ("Contact q", lambda m: m.contacts[0].q, 0.33),
            ("body", lambda m: len(m.body), 150),
            ("Content-Type", lambda m: m.content_type.mime, "application/sdp"),
        ),
    ),
    "intmeth": Parses(
        "S31102",
        (
            ("method", lambda m: m.method, "!interesting-Method0123456789_*+`.%indeed'~"),
            ("CSeq method", lambda m: m.cseq.method, "!interesting-Method0123456789_*+`.%indeed'~"),
            (
                "Request-URI user",
                lambda m: m.uri.user,
                "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            ),
            (
                "Request-URI password",
                lambda m: m.uri.password,
                "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            ),
            ("Request-URI host", lambda m: m.uri.host, "example.com"),
            ("Via branch", lambda m: m.top_via.branch, "z9hG4bK-.!%66*_+`'~"),
            (
                "To display name with quoted-pair controls",
                lambda m: m.to.display_name,
                "BEL:\x07 NUL:\x00 DEL:\x7f",
            ),
            (
                "To URI user",
                lambda m: m.to.uri.user,
                "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            ),
            (
                "From token display name",
                lambda m: m.from_.display_name,
                "token1~` token2'+_ token3*%!.-",
            ),
            (
                "From odd parameter",
                lambda m: m.from_.params.get("fromParam''~+*_!.-%"),
                "работающий",
            ),
            ("From tag", lambda m: m.from_.tag, "_token~1'+`*%!-."),
            ("Call-ID", lambda m: m.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"),
            ("Max-Forwards", lambda m: m.max_forwards, 255),
            (
                "extension header",
                lambda m: m.headers.get("extensionHeader-!.%*+_`'~"),
                "\ufeff大停電",
            ),
        ),
        uas=501,
    ),
    "esc01": Parses(
        "S31103",
        (
            ("Request-URI user escaped", lambda m: m.uri.user, "sips%3Auser%40example.com"),
            ("Request-URI user unescaped", lambda m: m.uri.unescaped_user, "sips:user@example.com"),
            ("Request-URI host", lambda m: m.uri.host, "example.net"),
            ("To user unescaped", lambda m: m.to.uri.unescaped_user, "user"),
            (
                "To equivalent",
                lambda m: m.to.uri.equivalent(parse_uri("sip:user@example.com")),
                True,
            ),
            ("From user with spaces", lambda m: m.from_.uri.unescaped_user, "I have spaces"),
            ("Call-ID (i)", lambda m: m.call_id, "esc01.239409asdfakjkn23onasd0-3234"),
            ("Content-Type (C)", lambda m: m.content_type.mime, "application/sdp"),
            (
                "Contact equivalent to its unescaped form",
                lambda m: m.contacts[0].uri.equivalent(
                    parse_uri("sip:caller@host5.example.net;lr;name=value%2541")
                ),
                True,
            ),
        ),
    ),
    "escnull": Parses(
        "S31104",
        (
            ("To user holds NUL", lambda m: m.to.uri.unescaped_user, "null-\x00-null"),
            ("From user holds NUL", lambda m: m.from_.uri.unescaped_user, "null-\x00-null"),
            (
                "Contacts",
                lambda m: [c.uri.unescaped_user for c in m.contacts],
                ["\x00", "\x00\x00"],
            ),
            ("L:0", lambda m: m.body, b""),
        ),
    ),
    "esc02": Parses(
        "S31105",
        (
            ("method is not REGISTER", lambda m: m.method, "RE%47IST%45R"),
            ("To display name", lambda m: m.to.display_name, "%Z%45"),
            ("From display name", lambda m: m.from_.display_name, "%Z%45"),
            ("Via branch", lambda m: m.top_via.branch, "z9hG4bK209%fzsnel234"),
            (
                "two Contacts, not three",
                lambda m: [c.uri.host for c in m.contacts],
                ["host1.example.com", "host3.example.com"],
            ),
            (
                "C%6Fntact is another header",
                lambda m: m.headers.get("C%6Fntact"),
                "<sip:alias2@host2.example.com>",
            ),
        ),
        uas=501,
    ),
    "lwsdisp": Parses(
        "S31106",
        (
            ("From display name", lambda m: m.from_.display_name, "caller"),
            ("From URI", lambda m: str(m.from_.uri), "sip:caller@example.com"),
            ("From tag", lambda m: m.from_.tag, "323"),
        ),
    ),
    "longreq": Parses(
        "S31107",
        (
            (
                "To display name",
                lambda m: m.to.display_name,
                "I have a user name of " + "extreme" * 10 + " proportion",
            ),
            ("To URI port", lambda m: m.to.uri.port, 6000),
            (
                "To URI long parameter",
                lambda m: m.to.uri.params.get("unknownparam1"),
                f"very{LONG}value",
            ),
            (
                "To URI valueless parameter",
                lambda m: f"very{'long' * 25}ParameterNameWithNoValue" in m.to.uri.params,
                True,
            ),
            ("From (F) tag length", lambda m: len(m.from_.tag), 155),
            (
                "From long header parameter",
                lambda m: m.from_.params.get("unknownheaderparam" + "name" * 20),
                "unknowheaderparam" + "value" * 15,
            ),
            ("Call-ID", lambda m: m.call_id, "longreq.one" + "really" * 20 + "longcallid"),
            (
                "unknown long header",
                lambda m: m.headers.get(f"Unknown-{'Long' * 20}-Name"),
                f"unknown-{'long' * 20}-value; unknown-{'long' * 20}-parameter-name = "
                f"unknown-{'long' * 20}-parameter-value",
            ),
            ("34 Vias in every spelling", lambda m: len(m.vias), 34),
            ("top Via", lambda m: m.top_via.host, "sip33.example.com"),
            ("last Via received", lambda m: m.vias[-1].received, "192.0.2.5"),
            ("last Via branch", lambda m: m.vias[-1].branch, f"very{'long' * 50}branchvalue"),
            ("Contact user", lambda m: m.contacts[0].uri.user, "amazinglylongcallername" * 5),
            ("l: 150", lambda m: len(m.body), 150),
        ),
    ),
    "dblreq": Parses(
        "S31108",
        (
            ("only the REGISTER", lambda m: m.method, "REGISTER"),
            ("its empty body (the INVITE is ignored)", lambda m: m.body, b""),
            ("Call-ID (I)", lambda m: m.call_id, "dblreq.0ha0isndaksdj99sdfafnl3lk233412"),
        ),
    ),
    "semiuri": Parses(
        "S31109",
        (
            ("user with ; and escaped @", lambda m: m.uri.user, "user;par=u%40example.net"),
            ("host", lambda m: m.uri.host, "example.com"),
            ("no URI parameters", lambda m: len(m.uri.params), 0),
            (
                "folded Accept list",
                lambda m: [a.mime for a in m.accept],
                [
                    "application/sdp",
                    "application/pkcs7-mime",
                    "multipart/mixed",
                    "multipart/signed",
                    "message/sip",
                    "message/sipfrag",
                ],
            ),
        ),
    ),
    "transports": Parses(
        "S31110",
        (
            (
                "Via transports",
                lambda m: [(v.transport, v.host) for v in m.vias],
                [
                    ("UDP", "t1.example.com"),
                    ("SCTP", "t2.example.com"),
                    ("TLS", "t3.example.com"),
                    ("UNKNOWN", "t4.example.com"),
                    ("TCP", "t5.example.com"),
                ],
            ),
            ("Call-ID after two spaces", lambda m: m.call_id, "transports.kijh4akdnaqjkwendsasfdj"),
        ),
    ),
    "mpart01": Parses(
        "S31111",
        (
            ("boundary", lambda m: m.content_type.boundary, "7a9cbec02ceef655"),
            ("body length", lambda m: len(m.body), 553),
            (
                "part types",
                lambda m: [t for t, _ in _parts(m)],
                ["text/plain", "application/octet-stream"],
            ),
            ("text part", lambda m: _parts(m)[0][1], b"Hello"),
            (
                "binary part keeps NULs",
                lambda m: (len(_parts(m)[1][1]), b"\x00" in _parts(m)[1][1]),
                (342, True),
            ),
            ("binary part ends before the delimiter", lambda m: _parts(m)[1][1][-2:], b"\xd0\x05"),
            ("find_body text/plain", lambda m: find_body(m, "text/plain"), b"Hello"),
            ("no SDP", find_body, None),
            (
                "Via rport without value",
                lambda m: (m.top_via.has_rport, m.top_via.rport),
                (True, None),
            ),
            ("Via port", lambda m: m.top_via.port, 5070),
        ),
        uas=415,
    ),
    "unreason": Parses(
        "S31112",
        (
            ("status", lambda m: m.status, 200),
            (
                "UTF-8 reason phrase",
                lambda m: m.reason,
                "= 2**3 * 5**2 но сто девяносто девять - простое",
            ),
            ("body", lambda m: len(m.body), 154),
        ),
    ),
    "noreason": Parses(
        "S31113",
        (("status", lambda m: m.status, 100), ("empty reason phrase", lambda m: m.reason, "")),
    ),
    # §3.1.2 invalid messages -------------------------------------------------------
    "badinv01": Fails("S31201", 400, True, "Via"),
    "clerr": Fails("S31202", 400, True, "shorter"),
    "ncl": Fails("S31203", 400, True, "Content-Length"),
    "scalar02": Fails("S31204", 400, True, "CSeq"),
    "scalarlg": Fails("S31205", 400, False, "CSeq"),
    "quotbal": Fails("S31206", 400, True, "quoted"),
    "ltgtruri": Fails("S31207", 400, True, "Request-URI"),
    "lwsruri": Fails("S31208", 400, True, "request line"),
    "lwsstart": Fails("S31209", 400, True, "request line"),
    "trws": Fails("S31210", 400, True, "request line"),
    "escruri": Fails("S31211", 400, True, "Request-URI"),
    "baddate": Fails("S31212", 400, True, "Date"),
    "regbadct": Fails("S31213", 400, True, "Contact"),
    "badaspec": Fails("S31214", 400, True, "To"),
    "baddn": Fails("S31215", 400, True, "display name"),
    "badvers": Fails("S31216", 505, True, "version"),
    "mismatch01": Fails("S31217", 400, True, "CSeq method"),
    "mismatch02": Fails("S31218", 400, True, "CSeq method"),
    "bigcode": Fails("S31219", 400, False, "status line"),
    # §3.2 transaction-layer oddities ----------------------------------------------
    "badbranch": Parses(
        "S32010",
        (
            ("branch is only the magic cookie", lambda m: m.top_via.branch, "z9hG4bK"),
            ("so RFC 2543 matching applies", lambda m: m.top_via.has_rfc3261_branch, False),
        ),
    ),
    # §3.3 application-layer semantics ---------------------------------------------
    "insuf": Fails("S33010", 400, True, "missing From, To, Call-ID"),
    "unkscm": Parses(
        "S33020",
        (
            (
                "opaque Request-URI",
                lambda m: m.uri,
                AbsoluteUri("nobodyKnowsThisScheme", "totallyopaquecontent"),
            ),
        ),
        uas=416,
    ),
    "novelsc": Parses(
        "S33030",
        (
            ("Request-URI scheme", lambda m: m.uri.scheme, "soap.beep"),
            ("Request-URI", lambda m: str(m.uri), "soap.beep://192.0.2.103:3002"),
        ),
        uas=416,
    ),
    "unksm2": Parses(
        "S33040",
        (
            ("To isbn:", lambda m: m.to.uri, AbsoluteUri("isbn", "2983792873")),
            ("From http:", lambda m: str(m.from_.uri), "http://www.example.com"),
            ("From tag", lambda m: m.from_.tag, "3234233"),
            ("Contact name:", lambda m: str(m.contacts[0].uri), "name:John_Smith"),
        ),
        uas=400,
    ),
    "bext01": Parses(
        "S33050",
        (
            ("Require", lambda m: m.require, ("nothingSupportsThis", "nothingSupportsThisEither")),
            (
                "Proxy-Require",
                lambda m: m.proxy_require,
                ("noProxiesSupportThis", "norDoAnyProxiesSupportThis"),
            ),
        ),
        uas=420,
    ),
    "invut": Parses(
        "S33060",
        (("Content-Type", lambda m: m.content_type.mime, "application/unknownformat"),),
        uas=415,
    ),
    "regaut01": Parses(
        "S33070",
        (
            ("Authorization scheme", lambda m: m.authorization[0].scheme, "NoOneKnowsThisScheme"),
            ("its parameter", lambda m: m.authorization[0].get("opaque-data"), "here"),
            ("not Digest", lambda m: m.authorization[0].is_digest, False),
            ("Content-Length:0", lambda m: m.body, b""),
        ),
    ),
    "multi01": Fails("S33080", 400, True, "more than one"),
    "mcl01": Fails("S33090", 400, True, "Content-Length"),
    "bcast": Parses(
        "S33100",
        (("second Via is broadcast", lambda m: m.vias[1].host, "255.255.255.255"),),
    ),
    "zeromf": Parses("S33110", (("Max-Forwards", lambda m: m.max_forwards, 0),)),
    "cparam01": Parses(
        "S33120",
        (
            ("URI has no parameter", lambda m: len(m.contacts[0].uri.params), 0),
            ("it is a contact parameter", lambda m: "unknownparam" in m.contacts[0].params, True),
        ),
    ),
    "cparam02": Parses(
        "S33130",
        (
            ("URI parameter", lambda m: "unknownparam" in m.contacts[0].uri.params, True),
            ("no contact parameter", lambda m: len(m.contacts[0].params), 0),
        ),
    ),
    "regescrt": Parses(
        "S33140",
        (
            (
                "Contact (M) URI header",
                lambda m: m.contacts[0].uri.headers,
                (("Route", "%3Csip:sip.example.com%3E"),),
            ),
            ("L:0", lambda m: m.body, b""),
        ),
    ),
    "sdp01": Parses(
        "S33150",
        (("Accept", lambda m: [a.mime for a in m.accept], ["text/nobodyknowsthis"]),),
        uas=406,
    ),
    # §3.4 backward compatibility ---------------------------------------------------
    "inv2543": Parses(
        "S34010",
        (
            ("no Max-Forwards", lambda m: m.max_forwards, None),
            ("no branch", lambda m: m.top_via.branch, None),
            ("no From tag", lambda m: m.from_.tag, None),
            (
                "body is the rest of the datagram",
                lambda m: m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n"),
                True,
            ),
            ("Record-Route maddr", lambda m: m.record_routes[0].uri.maddr, "ss1.example.com"),
            ("To addr-spec user=phone", lambda m: m.to.params.get("user"), "phone"),
        ),
    ),
}

EXTRA_FILES: dict[str, Fails] = {
    # Not an RFC 4475 message (map.txt does not list it): a header line without a colon
    # and no Via or CSeq at all, so nothing can be answered.
    "test": Fails("-", 400, False, "colon"),
}
