"""Property tests: generated messages round-trip; hostile bytes never crash the parser."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plateau_sip_gateway.sip import (
    MAX_MESSAGE_SIZE,
    CSeq,
    Headers,
    NameAddr,
    Params,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    parse,
    quote,
)

pytestmark = pytest.mark.unit

TORTURE_DIR = Path(__file__).resolve().parents[4].parent / "shared" / "testdata" / "sip" / "rfc4475"

TYPICAL_INVITE = (
    b"INVITE sip:+33123456789@gw.example.net;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Carrier" <sip:+14155550100@carrier.example.com>;tag=1928301774\r\n'
    b"To: <sip:+33123456789@gw.example.net>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.carrier.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+14155550100@192.0.2.10:5060>\r\n"
    b"Record-Route: <sip:edge.carrier.example.com;lr>\r\n"
    b"Supported: timer, 100rel\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=carrier 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def _seeds() -> list[bytes]:
    if not TORTURE_DIR.is_dir():
        pytest.fail(f"RFC 4475 test messages not found in {TORTURE_DIR}")
    return [TYPICAL_INVITE, *(p.read_bytes() for p in sorted(TORTURE_DIR.glob("*.dat")))]


SEEDS = _seeds() if TORTURE_DIR.is_dir() else [TYPICAL_INVITE]


def _parse_or_reject(data: bytes) -> SipRequest | SipResponse | None:
    """Parse; an accepted message must re-encode to itself."""
    try:
        message = parse(data)
    except SipParseError as exc:
        assert 100 <= exc.status <= 699
        if exc.can_respond:
            exc.create_response(to_tag="x").encode()
        return None
    encoded = message.encode()
    again = parse(encoded)
    assert again == message
    assert again.encode() == encoded
    return message


# -- generated valid messages -----------------------------------------------------

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not h.replace(".", "").isdigit())
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{ipaddress.IPv6Address(a).compressed}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)
escaped = st.integers(0, 255).map(lambda b: f"%{b:02X}")
user_chars = st.sampled_from(list("abcXYZ019-_.!~*'()&=+$,;?/")) | escaped
users = st.lists(user_chars, min_size=1, max_size=10).map("".join)
param_chars = st.sampled_from(list("abcXYZ019-_.!~*'()[]/:&+$")) | escaped
param_text = st.lists(param_chars, min_size=1, max_size=8).map("".join)
header_chars = st.sampled_from(list("abcXYZ019-_.!~*'()[]/?:+$")) | escaped
header_text = st.lists(header_chars, min_size=1, max_size=8).map("".join)
uri_params = st.lists(st.tuples(param_text, st.none() | param_text), max_size=3).map(
    lambda items: Params(tuple(items))
)
display_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
quoted_values = display_text.map(quote)
# parameter names whose values have a grammar of their own are left to the unit tests
SPECIAL_PARAMS = {"expires", "q", "received", "maddr", "ttl", "rport", "branch"}
param_names = tokens.filter(lambda t: t.lower() not in SPECIAL_PARAMS)
header_params = st.lists(
    st.tuples(param_names, st.none() | tokens | quoted_values), max_size=3
).map(lambda items: Params(tuple(items)))


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = True) -> SipUri:
    user = draw(st.none() | users)
    password = draw(st.none() | param_text.filter(lambda p: not set(p) & set("[]/:")))
    headers = ()
    if with_headers:
        headers = tuple(draw(st.lists(st.tuples(header_text, header_text), max_size=2)))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=password if user is not None else None,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=headers,
    )


name_addrs = st.builds(NameAddr, sip_uris(), st.none() | display_text.map(str.strip), header_params)
vias = st.builds(
    Via,
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    hosts,
    ports,
    st.lists(st.tuples(param_names, st.none() | tokens), max_size=3).map(
        lambda items: Params((("branch", "z9hG4bK" + "x" * len(items)), *items))
    ),
)
extension_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(
    lambda v: v.strip(" \t")
)


def _interleave(fields: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """``fields`` shuffled, except that fields of the same name keep their order."""
    order = [rng.random() for _ in fields]
    by_name: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(fields):
        by_name.setdefault(name.lower(), []).append(i)
    for indexes in by_name.values():
        for i, key in zip(indexes, sorted(order[i] for i in indexes), strict=True):
            order[i] = key
    return [fields[i] for i in sorted(range(len(fields)), key=lambda i: (order[i], i))]


@st.composite
def messages(draw: st.DrawFn) -> tuple[SipRequest | SipResponse, dict[str, object]]:
    via_list = draw(st.lists(vias, min_size=1, max_size=3))
    from_ = draw(name_addrs)
    to = draw(name_addrs)
    call_id = draw(tokens) + "@" + draw(tokens)
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "REGISTER"]) | tokens)
    cseq = CSeq(draw(st.integers(0, 2**32 - 1)), method)
    contacts = draw(st.lists(name_addrs, max_size=2))
    max_forwards = draw(st.none() | st.integers(0, 255))
    extensions = draw(st.lists(st.tuples(tokens.map(lambda t: "X-" + t), extension_values)))
    fields = [("Via", str(v)) for v in via_list]
    fields += [("From", str(from_)), ("To", str(to)), ("Call-ID", call_id), ("CSeq", str(cseq))]
    fields += [("Contact", str(c)) for c in contacts]
    if max_forwards is not None:
        fields.append(("Max-Forwards", str(max_forwards)))
    fields += extensions
    body = draw(st.binary(max_size=200))
    if body:
        fields.append(("Content-Type", "application/octet-stream"))
    headers = Headers(_interleave(fields, draw(st.randoms(use_true_random=False))))
    expected: dict[str, object] = {
        "vias": tuple(via_list),
        "from_": from_,
        "to": to,
        "call_id": call_id,
        "cseq": cseq,
        "contacts": tuple(contacts),
        "max_forwards": max_forwards,
    }
    if draw(st.booleans()):
        uri = draw(sip_uris(with_headers=False))
        return SipRequest(method, uri, headers, body), expected
    status = draw(st.integers(100, 699))
    reason = draw(extension_values)
    return SipResponse(status, reason, headers, body), expected


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_messages_round_trip(
    case: tuple[SipRequest | SipResponse, dict[str, object]],
) -> None:
    message, expected = case
    encoded = message.encode()
    parsed = parse(encoded)
    assert parsed == message
    for name, value in expected.items():
        assert getattr(parsed, name) == value, name
    assert parse(parsed.encode()) == parsed
    assert parsed.encode() == encoded


# -- hostile input ------------------------------------------------------------------

NASTY = [
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"@",
    b"=",
    b"?",
    b"[",
    b"]",
    b"/",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"0",
    b"9" * 30,
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "delete", "insert", "replace", "dup_line"]))
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(NASTY) | st.binary(min_size=1, max_size=8))
        elif kind == "replace" and at < len(data):
            data[at : at + 1] = draw(st.sampled_from(NASTY))
        elif kind == "dup_line":
            start = data.rfind(b"\r\n", 0, at) + 2
            end = data.find(b"\r\n", at)
            if end > start:
                data[start:start] = data[start : end + 2]
    return bytes(data)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_parse_or_fail_cleanly(data: bytes) -> None:
    _parse_or_reject(data)


@settings(max_examples=2_000, deadline=None)
@given(st.binary(max_size=1500))
def test_random_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    _parse_or_reject(data)


@settings(max_examples=2_000, deadline=None)
@given(st.lists(st.sampled_from(NASTY), max_size=200).map(b"".join))
def test_separator_soup_after_a_valid_head_fails_cleanly(tail: bytes) -> None:
    _parse_or_reject(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n" + tail)


def test_every_truncation_of_every_torture_message_parses_or_fails_cleanly() -> None:
    for seed in SEEDS:
        for end in range(len(seed) + 1):
            _parse_or_reject(seed[:end])


def _hostile_messages() -> list[bytes]:
    """Inputs built to make a backtracking parser explode, each near the size limit."""
    size = MAX_MESSAGE_SIZE - 400
    head = (
        b"INVITE sip:a@example.com SIP/2.0\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\n"
        b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    )
    tail = b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n\r\n"
    return [
        head + b"Via: SIP/2.0/UDP h" + b";" * size + b"\r\n" + tail,
        head + b"Via: SIP/2.0/UDP h;a=" + b'"' + b"\\\\" * (size // 2) + b"\r\n" + tail,
        head + b"Via: " + b"SIP / 2.0 / UDP h ;" * (size // 20) + b"\r\n" + tail,
        head + b"Contact: " + b"a " * (size // 2) + b"<sip:x@y>\r\n" + tail,
        head + b"Contact: " + b'"' * size + b"\r\n" + tail,
        head + b"Contact: " + b"<" * size + b"\r\n" + tail,
        head + b"Contact: " + b"<sip:a@b>," * (size // 10) + b"\r\n" + tail,
        head + b"Contact: <sip:" + b"%4" * (size // 2) + b"@h>\r\n" + tail,
        head + b"Contact: <sip:a@" + b"a-" * (size // 2) + b">\r\n" + tail,
        head + b"Contact: <sip:a@" + b"a." * (size // 2) + b">\r\n" + tail,
        head + b"Contact: <sip:a@h" + b";p" * (size // 2) + b"=\r\n" + tail,
        head + b"X: y\r\n" + b" \t" * (size // 2) + b"\r\n" + tail,
        head + b"Max-Forwards: " + b"9" * size + b"\r\n" + tail,
        head + b"Retry-After: 1 " + b"(" * size + b"\r\n" + tail,
        head + b"Authorization: Digest " + b'a="x",' * (size // 6) + b"\r\n" + tail,
        head + b"Date: " + b"Mon, " * (size // 5) + b"\r\n" + tail,
        b"\r\n" * (size // 2),
        b"INVITE " + b"sip:" * (size // 4) + b" SIP/2.0\r\n\r\n",
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("index", range(len(_hostile_messages())))
def test_hostile_input_is_handled_in_bounded_memory(index: int) -> None:
    data = _hostile_messages()[index]
    assert len(data) <= MAX_MESSAGE_SIZE
    tracemalloc.start()
    try:
        message = _parse_or_reject(data)
        if message is not None:
            for view in ("retry_after", "authorization", "date", "contacts"):
                with contextlib.suppress(SipParseError):
                    getattr(message, view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MAX_MESSAGE_SIZE, peak
