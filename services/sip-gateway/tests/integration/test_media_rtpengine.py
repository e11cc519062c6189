"""The media port against a real rtpengine daemon, started in user space on loopback.

UDP sockets play the caller, the agent and the carrier: RTP really flows through rtpengine,
rtpengine really plays a generated WAV file and really writes a recording.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import structlog
from rtp_harness import (
    CARRIER_ORIGIN,
    LOOPBACK,
    WAIT,
    RtpPeer,
    media_port_of,
    peers,
    phone_sdp,
    rtp_packet,
    rtpengine,
    write_tone,
)

from plateau_runtime.errors import DependencyUnavailableError
from plateau_sip_gateway.media import (
    MUSIC_REPEAT,
    MediaUnavailableError,
    RtpengineClient,
    RtpengineError,
    RtpengineMedia,
    RtpengineTimeoutError,
    SignallingOnlyMedia,
    media_from_settings,
    placeholder_sdp,
)
from plateau_sip_gateway.media.embedded import (
    DEBIAN_PACKAGE,
    EmbeddedRtpengine,
    free_udp_port,
    rtpengine_binary,
)

pytestmark = pytest.mark.integration
__all__ = ["peers", "rtpengine"]  # fixtures, used by name


@pytest.fixture
async def client(rtpengine: EmbeddedRtpengine) -> AsyncIterator[RtpengineClient]:
    async with RtpengineClient(rtpengine.ng_address, timeout=1.0, retries=2) as ng:
        yield ng


@pytest.fixture
def call_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}@plateau.test"


async def anchor_bridged_call(
    media: RtpengineMedia, call_id: str, caller: RtpPeer, agent: RtpPeer
) -> tuple[int, int]:
    """Offer from the caller, answer from the agent; rtpengine's (caller-facing, agent-facing)
    ports: the caller sends to the first, the agent to the second."""
    to_agent = await media.anchor_offer(call_id, "caller", phone_sdp(caller.port, session=1))
    to_caller = await media.anchor_answer(
        call_id, "caller", "agent", phone_sdp(agent.port, session=2)
    )
    return media_port_of(to_caller), media_port_of(to_agent)


# --- control --------------------------------------------------------------------------------


async def test_ping(client: RtpengineClient) -> None:
    await client.ping()


async def test_offer_and_answer_point_the_legs_at_rtpengine(
    client: RtpengineClient,
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
    rtpengine: EmbeddedRtpengine,
) -> None:
    caller, agent = peers
    offer = await client.offer(
        call_id, "caller", phone_sdp(caller.port, origin=CARRIER_ORIGIN, ice=True)
    )
    answer = await client.answer(call_id, "caller", "agent", phone_sdp(agent.port))

    for sdp, peer in ((offer.sdp, caller), (answer.sdp, agent)):
        assert f"c=IN IP4 {LOOPBACK}" in sdp
        assert re.search(rf"^o=\S+ \d+ \d+ IN IP4 {re.escape(LOOPBACK)}\r$", sdp, re.MULTILINE)
        assert CARRIER_ORIGIN not in sdp
        port = media_port_of(sdp)
        low, high = rtpengine.port_range
        assert low <= port <= high
        assert port != peer.port
        assert "RTP/AVP 0 8 101" in sdp
        assert "a=rtpmap:0 PCMU/8000" in sdp and "a=rtpmap:8 PCMA/8000" in sdp
        assert "a=candidate" not in sdp and "a=ice-ufrag" not in sdp

    info = await client.query(call_id)
    assert info.tags == ("agent", "caller")
    assert info.created is not None
    await client.delete(call_id)


async def test_unknown_call_is_a_clear_error(client: RtpengineClient) -> None:
    with pytest.raises(RtpengineError) as raised:
        await client.query("no-such-call@plateau.test")
    assert raised.value.reason == "Unknown call-id"
    assert "query" in str(raised.value) and "Unknown call-id" in str(raised.value)

    with pytest.raises(RtpengineError, match="Call-ID not found"):
        await client.delete("no-such-call@plateau.test")
    with pytest.raises(RtpengineError):
        await client.play_media("no-such-call@plateau.test", "caller", "/nonexistent.wav")


async def test_release_frees_the_call_and_is_idempotent(
    client: RtpengineClient, call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    media = RtpengineMedia(client)
    caller, agent = peers
    await anchor_bridged_call(media, call_id, caller, agent)
    await media.release(call_id)
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)
    await media.release(call_id)


# --- media ----------------------------------------------------------------------------------


async def test_rtp_is_relayed_both_ways(
    client: RtpengineClient, call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    media = RtpengineMedia(client)
    caller, agent = peers
    caller_sends_to, agent_sends_to = await anchor_bridged_call(media, call_id, caller, agent)
    try:
        for seq in range(10):
            caller.send(rtp_packet(seq, ssrc=0x1111), caller_sends_to)
            agent.send(rtp_packet(500 + seq, ssrc=0x2222, payload_type=8), agent_sends_to)
            await asyncio.sleep(0.02)

        at_agent = await agent.receive(10)
        at_caller = await caller.receive(10)

        assert [p.sequence for p in at_agent] == list(range(10))
        assert {(p.ssrc, p.payload_type) for p in at_agent} == {(0x1111, 0)}
        assert at_agent[3].payload == bytes([3]) * 160
        assert {p.source for p in at_agent} == {(LOOPBACK, agent_sends_to)}

        assert [p.sequence for p in at_caller] == list(range(500, 510))
        assert {(p.ssrc, p.payload_type) for p in at_caller} == {(0x2222, 8)}
        assert {p.source for p in at_caller} == {(LOOPBACK, caller_sends_to)}
    finally:
        await media.release(call_id)


async def test_play_reaches_the_chosen_leg_and_stops(
    client: RtpengineClient, call_id: str, peers: tuple[RtpPeer, RtpPeer], tmp_path: Path
) -> None:
    media = RtpengineMedia(client)
    caller, agent = peers
    await anchor_bridged_call(media, call_id, caller, agent)
    music = write_tone(tmp_path / "music.wav", seconds=1.0)
    try:
        playback = await media.play(call_id, "caller", music, repeat=MUSIC_REPEAT)
        assert playback.duration is not None
        assert playback.duration.total_seconds() == pytest.approx(1.0, abs=0.05)

        # 20 ms PCMU frames (the caller's first codec) from rtpengine's caller-facing port.
        packets = await caller.receive(15)
        assert {p.payload_type for p in packets} == {0}
        assert {len(p.payload) for p in packets} == {160}
        assert len({p.payload for p in packets}) > 1, "a tone, not silence"
        assert agent.received.empty(), "the agent must not hear the caller's queue music"

        await media.stop_playing(call_id, "caller")
        await caller.drain(quiet=0.3)
        with pytest.raises(TimeoutError):
            await caller.receive(1, within=0.5)
    finally:
        await media.release(call_id)


async def test_greeting_to_a_queued_caller_answered_by_the_gateway(
    client: RtpengineClient, call_id: str, peers: tuple[RtpPeer, RtpPeer], tmp_path: Path
) -> None:
    """The queue answers the caller itself (no agent yet) and plays the greeting."""
    media = RtpengineMedia(client)
    caller, _ = peers
    await media.anchor_offer(call_id, "caller", phone_sdp(caller.port))
    to_caller = await media.anchor_answer(call_id, "caller", "gateway", placeholder_sdp(LOOPBACK))
    assert f"c=IN IP4 {LOOPBACK}" in to_caller
    assert media_port_of(to_caller) != 9
    greeting = write_tone(tmp_path / "greeting.wav", seconds=0.5, frequency=660)
    try:
        playback = await media.play(call_id, "caller", greeting)
        assert playback.duration is not None
        packets = await caller.receive(10)
        assert {p.source[1] for p in packets} == {media_port_of(to_caller)}
    finally:
        await media.release(call_id)


async def test_outbound_compliance_message_then_hang_up(
    client: RtpengineClient, call_id: str, peers: tuple[RtpPeer, RtpPeer], tmp_path: Path
) -> None:
    """An outbound call nobody can take: the carrier's leg hears the message, then it ends."""
    media = RtpengineMedia(client)
    carrier, _ = peers
    to_carrier = await media.anchor_offer(call_id, "gateway", placeholder_sdp(LOOPBACK))
    assert "m=audio 9 " not in to_carrier
    await media.anchor_answer(call_id, "gateway", "carrier", phone_sdp(carrier.port))
    message = write_tone(tmp_path / "compliance.wav", seconds=0.6, frequency=500)

    playback = await media.play(call_id, "carrier", message)
    assert playback.duration is not None
    async with asyncio.timeout(WAIT):
        packets = await carrier.receive(5)
        await asyncio.sleep(playback.duration.total_seconds())
    assert {p.source[1] for p in packets} == {media_port_of(to_carrier)}
    total = len(packets) + await carrier.drain(quiet=0.3)
    assert 0.6 / 0.02 - 6 <= total <= 0.6 / 0.02 + 6, "one pass of the message, in 20 ms frames"

    await media.release(call_id)
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)


async def test_recording_writes_a_pcap_and_metadata(
    client: RtpengineClient,
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
    rtpengine: EmbeddedRtpengine,
) -> None:
    media = RtpengineMedia(client)
    caller, agent = peers
    caller_sends_to, agent_sends_to = await anchor_bridged_call(media, call_id, caller, agent)
    await media.start_recording(call_id, metadata="queue=sales")
    for seq in range(10):
        caller.send(rtp_packet(seq, ssrc=0x3333), caller_sends_to)
        agent.send(rtp_packet(seq, ssrc=0x4444), agent_sends_to)
        await asyncio.sleep(0.01)
    await agent.receive(10)
    await caller.receive(10)
    await media.stop_recording(call_id)
    await media.release(call_id)

    assert rtpengine.recording_dir is not None
    escaped = call_id.replace("@", "%40")
    pcaps = list((rtpengine.recording_dir / "pcaps").glob(f"{escaped}-*.pcap"))
    assert len(pcaps) == 1, list((rtpengine.recording_dir / "pcaps").iterdir())
    raw = pcaps[0].read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), "a libpcap file"
    assert len(raw) > 24 + 20 * (16 + 12 + 160), "the 20 relayed packets are in it"
    metadata = list((rtpengine.recording_dir / "metadata").glob(f"*{escaped}-*"))
    assert len(metadata) == 1
    assert "queue=sales" in metadata[0].read_text(errors="replace")


# --- when rtpengine is absent ---------------------------------------------------------------


class _SilentThenAnswering(asyncio.DatagramProtocol):
    """A stand-in daemon that drops the first ``drop`` copies of each request, then pongs."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        if len(self.seen) > self.drop and self.transport is not None:
            cookie = data.partition(b" ")[0]
            self.transport.sendto(cookie + b" d6:result4:ponge", addr)


async def test_retransmits_with_the_same_cookie_until_answered() -> None:
    loop = asyncio.get_running_loop()
    transport, fake = await loop.create_datagram_endpoint(
        lambda: _SilentThenAnswering(drop=2), local_addr=(LOOPBACK, 0)
    )
    try:
        address = transport.get_extra_info("sockname")
        async with RtpengineClient(address, timeout=0.2, retries=2) as ng:
            await ng.ping()
        assert len(fake.seen) == 3
        assert len(set(fake.seen)) == 1, "retransmissions repeat the cookie and the body"
    finally:
        transport.close()


async def test_rtpengine_not_running_times_out_clearly() -> None:
    port = free_udp_port()
    async with RtpengineClient((LOOPBACK, port), timeout=0.2, retries=2) as ng:
        started = loop_time()
        with pytest.raises(RtpengineTimeoutError) as raised:
            await ng.offer("c@x", "caller", phone_sdp(4000))
        elapsed = loop_time() - started
    message = str(raised.value)
    assert f"{LOOPBACK}:{port}" in message and "'offer'" in message and "3 attempts" in message
    assert "--listen-ng" in message
    assert 0.5 <= elapsed < 2.0


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def test_factory_falls_back_to_signalling_only_when_the_ng_port_is_closed() -> None:
    port = free_udp_port()
    with structlog.testing.capture_logs() as logs:
        media = await media_from_settings(True, f"{LOOPBACK}:{port}", timeout=0.1, retries=1)
    assert isinstance(media, SignallingOnlyMedia)
    assert not media.available
    assert len(logs) == 1
    line = logs[0]["event"]
    assert line.startswith("media: signalling only — SDP passed through, no greeting/music/")
    assert f"rtpengine not reachable at {LOOPBACK}:{port}" in line

    sdp = phone_sdp(5004, origin=CARRIER_ORIGIN, ice=True)
    assert await media.anchor_offer("c@x", "a", sdp) == sdp
    assert await media.anchor_answer("c@x", "a", "b", sdp) == sdp
    await media.release("c@x")
    with pytest.raises(MediaUnavailableError, match=r"signalling-only.*rtpengine-daemon"):
        await media.play("c@x", "a", Path("/greeting.wav"))
    with pytest.raises(MediaUnavailableError):
        await media.start_recording("c@x")


async def test_factory_signalling_only_when_disabled() -> None:
    with structlog.testing.capture_logs() as logs:
        media = await media_from_settings(False, None)
    assert isinstance(media, SignallingOnlyMedia)
    assert [entry["event"] for entry in logs] == [media.description]
    assert "rtpengine not enabled" in media.description


async def test_factory_uses_rtpengine_when_it_answers(rtpengine: EmbeddedRtpengine) -> None:
    host, port = rtpengine.ng_address
    media = await media_from_settings(True, f"{host}:{port}")
    try:
        assert isinstance(media, RtpengineMedia)
        assert media.available
        assert f"{host}:{port}" in media.description
    finally:
        await media.close()


def test_missing_binary_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DependencyUnavailableError) as raised:
        rtpengine_binary()
    assert DEBIAN_PACKAGE == "rtpengine-daemon"
    assert DEBIAN_PACKAGE in str(raised.value)
    assert "apt-get install" in str(raised.value)


def test_daemon_binds_loopback_only(rtpengine: EmbeddedRtpengine) -> None:
    argv = rtpengine.argv()
    assert "--config-file=none" in argv and "--table=-1" in argv
    assert f"--interface={LOOPBACK}" in argv
    assert f"--listen-ng={LOOPBACK}:{rtpengine.ng_port}" in argv
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.bind((LOOPBACK, rtpengine.ng_port))
