"""SIP message layer throughput, against a baseline measured in the same run.

Run from the checkout:  .venv/bin/python bench/sip_parse.py

Prints messages per second, on one core, for a typical carrier INVITE with SDP (about
950 bytes): ``parse`` (including the checks of every header the transaction and dialog
layers use) of a new call each time, ``encode`` of a parsed message, and what a B2BUA
does per INVITE (parse, answer 180, encode the answer). The baseline is the same loop doing only
``data.split(b"\\r\\n")``, so the figures read as "this many times the cost of
splitting the message into lines". Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable

from plateau_sip_gateway.sip import SipRequest, parse

PHASE_SECONDS = 2.0

SDP = (
    b"v=0\r\n"
    b"o=carrier 2890844526 2890844526 IN IP4 198.51.100.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
TEMPLATE = (
    b"INVITE sip:+3312345{n:04d}@gw.plateau.example;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---{n:08x};rport\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Carrier Caller" <sip:+1415555{n:04d}@carrier.example.com>;tag=as{n:08x}\r\n'
    b"To: <sip:+3312345{n:04d}@gw.plateau.example;user=phone>\r\n"
    b"Call-ID: 38482762982201{n:05d}@198.51.100.10\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+1415555{n:04d}@198.51.100.10:5060>\r\n"
    b"Record-Route: <sip:198.51.100.10;lr;ftag=as{n:08x}>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: CarrierSBC 4.2\r\n"
    b"P-Asserted-Identity: <sip:+1415555{n:04d}@carrier.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: {length}\r\n"
    b"\r\n"
).decode()
CALLS = 10_000


def invite(n: int) -> bytes:
    """The INVITE of the n-th call: its own numbers, tags, branch and Call-ID."""
    return TEMPLATE.format(n=n, length=len(SDP)).encode() + SDP


def _rate(work: Callable[[bytes], object], messages: list[bytes]) -> float:
    """Calls per second of ``work`` over about PHASE_SECONDS, cycling through messages."""
    done = 0
    start = time.perf_counter()
    deadline = start + PHASE_SECONDS
    now = start
    while now < deadline:
        for data in messages[done % len(messages) :][:500]:
            work(data)
            done += 1
        now = time.perf_counter()
    return done / (now - start)


def _split_only(data: bytes) -> object:
    return data.split(b"\r\n")


def _encode_parsed(data: bytes) -> object:
    return PARSED[data].encode()


def _answer_180(data: bytes) -> object:
    request = parse(data)
    assert isinstance(request, SipRequest)
    return request.create_response(180, to_tag="gw7f3a").encode()


PARSED: dict[bytes, SipRequest] = {}


def main() -> None:
    calls = [invite(n) for n in range(CALLS)]
    for data in calls[:500]:
        request = parse(data)
        assert isinstance(request, SipRequest)
        PARSED[data] = request
    print(
        f"SIP message layer, Python {platform.python_version()} on {platform.machine()}, "
        f"INVITE of {len(calls[0])} bytes ({len(SDP)} of SDP), {PHASE_SECONDS:.0f} s per phase"
    )
    baseline = _rate(_split_only, calls)
    label = 'baseline data.split(b"\\r\\n")'
    print(f"  {label:<38} {baseline:>10,.0f} msg/s")
    for label, work, messages in (
        ("parse, a new call each time", parse, calls),
        ("encode a parsed INVITE", _encode_parsed, calls[:500]),
        ("parse + create 180 + encode (new call)", _answer_180, calls),
    ):
        rate = _rate(work, messages)
        print(
            f"  {label:<38} {rate:>10,.0f} msg/s  "
            f"{1e6 / rate:6.1f} µs  {baseline / rate:5.1f}x the baseline's cost"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
