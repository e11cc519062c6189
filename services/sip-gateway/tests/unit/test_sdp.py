"""The SDP edits of the signalling-only B2BUA: hold offers, refusing answers, one origin."""

from __future__ import annotations

import pytest

from plateau_sip_gateway.sdp import Origin, is_hold, rejecting_answer, with_direction

pytestmark = pytest.mark.unit

OFFER = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=sendrecv\r\nm=video 51372 RTP/AVP 31\r\n"
)


def test_a_hold_offer_sets_every_stream_inactive_once() -> None:
    held = with_direction(OFFER, "inactive")
    lines = held.decode().split("\r\n")
    assert lines.count("a=inactive") == 2  # one per m= line
    assert "a=sendrecv" not in lines
    assert is_hold(held) and not is_hold(OFFER)
    assert held.endswith(b"\r\n")


def test_resuming_restores_sendrecv() -> None:
    resumed = with_direction(with_direction(OFFER, "inactive"), "sendrecv")
    assert not is_hold(resumed)


def test_a_refusing_answer_rejects_every_stream_with_port_zero() -> None:
    answer = rejecting_answer(OFFER).decode()
    assert "m=audio 0 RTP/AVP 0 8" in answer
    assert "m=video 0 RTP/AVP 31" in answer
    assert "o=plateau 2890844526" in answer


def test_the_origin_keeps_one_session_and_counts_changes() -> None:
    origin = Origin(session_id=77)
    first = origin.stamp(OFFER).decode()
    assert "o=plateau 77 1 IN IP4 192.0.2.10" in first
    # The same body again (a retransmission, a refresh) keeps the version.
    assert "o=plateau 77 1 " in origin.stamp(OFFER).decode()
    # Another agent's SDP: same session, next version.
    other = OFFER.replace(b"o=alice 2890844526", b"o=bob 99").replace(b"49170", b"40000")
    assert "o=plateau 77 2 IN IP4 192.0.2.10" in origin.stamp(other).decode()


def test_lf_only_sdp_is_normalised_to_crlf() -> None:
    lf = OFFER.replace(b"\r\n", b"\n")
    assert with_direction(lf, "inactive").count(b"\r\n") == with_direction(OFFER, "inactive").count(
        b"\r\n"
    )
