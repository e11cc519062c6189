"""CallMedia, the B2BUA's media facade, against a real rtpengine and signalling-only.

UDP sockets stand in for the caller (or outbound customer) and the agent; RTP really flows
through rtpengine, which really plays generated tones and writes recordings. The contract
tests run on both media ports: what the B2BUA relies on whichever it runs with.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from rtp_harness import (
    LOOPBACK,
    WAIT,
    Rtp,
    RtpPeer,
    media_port_of,
    nearest_tone,
    peers,
    phone_sdp,
    rtp_packet,
    rtpengine,
    write_tone,
)

from plateau_sip_gateway.config import MediaConfig, QueueMedia
from plateau_sip_gateway.media import (
    MediaError,
    RtpengineClient,
    RtpengineError,
    RtpengineMedia,
    SignallingOnlyMedia,
)
from plateau_sip_gateway.media.calls import CallMedia
from plateau_sip_gateway.media.embedded import EmbeddedRtpengine

pytestmark = pytest.mark.integration
__all__ = ["peers", "rtpengine"]  # fixtures, used by name

#: Tones whose 20 ms PCMU frames tell them apart: 8 and 20 periods per frame.
GREETING_HZ, MUSIC_HZ, MESSAGE_HZ = 400, 1000, 500


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-pass greeting (0.6 s), a short music loop (0.4 s) and a compliance message."""
    folder = tmp_path_factory.mktemp("prompts")
    return {
        "greeting": write_tone(folder / "greeting.wav", 0.6, GREETING_HZ),
        "music": write_tone(folder / "music.wav", 0.4, MUSIC_HZ),
        "message": write_tone(folder / "compliance.wav", 0.6, MESSAGE_HZ),
    }


@pytest.fixture
def config(prompts: dict[str, Path]) -> MediaConfig:
    return MediaConfig(
        queues={
            "sales": QueueMedia(greeting=prompts["greeting"], music=prompts["music"], record=True),
            "support": QueueMedia(),
        },
        compliance_message=prompts["message"],
    )


@pytest.fixture
async def anchored(
    rtpengine: EmbeddedRtpengine, config: MediaConfig
) -> AsyncIterator[tuple[CallMedia, RtpengineClient]]:
    """CallMedia on rtpengine, with the ng client to look at rtpengine's side."""
    async with RtpengineClient(rtpengine.ng_address) as client:
        media = CallMedia(RtpengineMedia(client), config)
        yield media, client
        await media.close()


@pytest.fixture(params=["rtpengine", "signalling-only"])
async def any_media(
    request: pytest.FixtureRequest, config: MediaConfig
) -> AsyncIterator[CallMedia]:
    """CallMedia on each media port, for the contract both keep."""
    if request.param == "signalling-only":
        yield CallMedia(SignallingOnlyMedia("rtpengine not enabled"), config)
        return
    daemon: EmbeddedRtpengine = request.getfixturevalue("rtpengine")
    async with RtpengineClient(daemon.ng_address) as client:
        media = CallMedia(RtpengineMedia(client), config)
        yield media
        await media.close()


@pytest.fixture
def call_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}@plateau.test"


def tone_of(packet: Rtp) -> int:
    return nearest_tone(packet, (GREETING_HZ, MUSIC_HZ, MESSAGE_HZ))


async def exchange(
    caller: RtpPeer, caller_sends_to: int, agent: RtpPeer, agent_sends_to: int
) -> tuple[list[Rtp], list[Rtp]]:
    """Ten packets each way (caller PCMU 0x1111, agent PCMA 0x2222); what each received
    from the other (anything else that arrives, such as the end of the music, is left out)."""
    for seq in range(10):
        caller.send(rtp_packet(seq, ssrc=0x1111), caller_sends_to)
        agent.send(rtp_packet(500 + seq, ssrc=0x2222, payload_type=8), agent_sends_to)
        await asyncio.sleep(0.02)

    async def from_peer(peer: RtpPeer, ssrc: int) -> list[Rtp]:
        found: list[Rtp] = []
        async with asyncio.timeout(WAIT):
            while len(found) < 10:
                packet = await peer.received.get()
                if packet.ssrc == ssrc:
                    found.append(packet)
        return found

    return await from_peer(agent, 0x1111), await from_peer(caller, 0x2222)


# --- the contract, on both media ports --------------------------------------------------


async def test_a_queue_without_media_leaves_the_caller_on_ringback(
    any_media: CallMedia, call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    caller, _ = peers
    assert await any_media.hold_in_queue(call_id, "support", phone_sdp(caller.port)) is None
    assert await any_media.hold_in_queue(call_id, "no-such-entry", phone_sdp(caller.port)) is None
    assert await any_media.hold_in_queue(call_id, None, phone_sdp(caller.port)) is None
    await any_media.release(call_id)


async def test_caller_and_agent_hear_each_other(
    any_media: CallMedia, call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    """Whatever the media, the SDP the B2BUA hands each side gets the audio across."""
    caller, agent = peers
    caller_offer = phone_sdp(caller.port, session=1)
    hold = await any_media.hold_in_queue(call_id, "support", caller_offer)
    assert hold is None
    to_agent = await any_media.offer_to_agent(call_id, caller_offer)
    # A RONA: the next agent is offered the same SDP.
    assert await any_media.offer_to_agent(call_id, caller_offer) == to_agent
    to_caller = await any_media.agent_answered(call_id, phone_sdp(agent.port, session=2))
    try:
        at_agent, at_caller = await exchange(
            caller, media_port_of(to_caller), agent, media_port_of(to_agent)
        )
        assert [p.sequence for p in at_agent] == list(range(10))
        assert {p.payload_type for p in at_agent} == {0}
        assert at_agent[3].payload == bytes([3]) * 160
        assert [p.sequence for p in at_caller] == list(range(500, 510))
        assert {p.payload_type for p in at_caller} == {8}
    finally:
        await any_media.release(call_id)
    await any_media.release(call_id)


async def test_release_of_an_unknown_call_is_harmless(any_media: CallMedia) -> None:
    await any_media.release("never-seen@plateau.test")


async def test_agent_answered_before_any_offer_is_a_clear_error(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str
) -> None:
    media, _ = anchored
    with pytest.raises(MediaError, match="offer_to_agent comes before agent_answered"):
        await media.agent_answered(call_id, phone_sdp(5004))


# --- rtpengine: the queue's greeting and music -------------------------------------------


async def test_queued_caller_hears_greeting_then_music_over_early_media(
    anchored: tuple[CallMedia, RtpengineClient],
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
) -> None:
    media, client = anchored
    caller, _ = peers
    early = await media.hold_in_queue(call_id, "sales", phone_sdp(caller.port))
    try:
        assert early is not None, "the SDP for the caller's 183"
        assert f"c=IN IP4 {LOOPBACK}" in early and "a=sendrecv" in early
        assert "RTP/AVP 0 8 101" in early, "the caller's own codecs"
        assert (await client.query(call_id)).tags == ("agent", "customer")

        # One pass of the greeting (30 frames of 20 ms), then the music, over and over.
        heard: list[Rtp] = []
        async with asyncio.timeout(WAIT + 2):
            while sum(tone_of(p) == MUSIC_HZ for p in heard) < 45:
                heard.append(await caller.received.get())
        tones = [tone_of(p) for p in heard]
        greeting = tones.index(MUSIC_HZ)
        assert set(tones[:greeting]) == {GREETING_HZ}
        assert 28 <= greeting <= 32
        assert set(tones[greeting:]) == {MUSIC_HZ}, "music after the greeting, nothing else"
        assert len(tones) - greeting > 0.4 / 0.02, "the music repeats"
        assert {p.payload_type for p in heard} == {0}
        assert {p.source for p in heard} == {(LOOPBACK, media_port_of(early))}
    finally:
        await media.release(call_id)


async def test_agent_takes_over_the_early_media_without_a_reinvite(
    anchored: tuple[CallMedia, RtpengineClient],
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
) -> None:
    media, _ = anchored
    caller, agent = peers
    caller_offer = phone_sdp(caller.port, session=1)
    early = await media.hold_in_queue(call_id, "sales", caller_offer)
    assert early is not None
    try:
        await caller.receive(5)  # the greeting has started
        to_agent = await media.offer_to_agent(call_id, caller_offer)
        assert media_port_of(to_agent) != media_port_of(early)

        final = await media.agent_answered(call_id, phone_sdp(agent.port, session=2))
        assert final == early, "the caller's 200 repeats its 183's answer (RFC 3261 §13.2.1)"

        at_agent, at_caller = await exchange(
            caller, media_port_of(early), agent, media_port_of(to_agent)
        )
        assert [p.sequence for p in at_agent] == list(range(10)), "the caller is unblocked"
        assert {p.source for p in at_caller} == {(LOOPBACK, media_port_of(early))}
        assert [p.sequence for p in at_caller] == list(range(500, 510))

        # The music has stopped: once the queue is drained, nothing more reaches the caller.
        await caller.drain(quiet=0.3)
        with pytest.raises(TimeoutError):
            await caller.receive(1, within=0.5)
    finally:
        await media.release(call_id)


async def test_queue_media_falls_back_to_ringback_when_it_cannot_be_anchored(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str
) -> None:
    media, client = anchored
    video_only = phone_sdp(5004).replace("m=audio", "m=video")
    with structlog.testing.capture_logs() as logs:
        assert await media.hold_in_queue(call_id, "sales", video_only) is None
    assert [entry["fallback"] for entry in logs] == ["ringback"]
    assert "no audio stream" in logs[0]["error"]
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)


# --- rtpengine: recording ----------------------------------------------------------------


async def test_a_recorded_queue_writes_the_call_to_a_pcap(
    anchored: tuple[CallMedia, RtpengineClient],
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
    rtpengine: EmbeddedRtpengine,
) -> None:
    media, _ = anchored
    caller, agent = peers
    offer = phone_sdp(caller.port, session=1)
    to_agent = await media.offer_to_agent(call_id, offer)
    to_caller = await media.agent_answered(call_id, phone_sdp(agent.port, session=2))
    assert await media.record(call_id, "support") is False, "support does not record"
    assert await media.record(call_id, "sales") is True
    await exchange(caller, media_port_of(to_caller), agent, media_port_of(to_agent))
    await media.stop_recording(call_id)
    await media.release(call_id)

    assert rtpengine.recording_dir is not None
    escaped = call_id.replace("@", "%40")
    pcaps = list((rtpengine.recording_dir / "pcaps").glob(f"{escaped}-*.pcap"))
    assert len(pcaps) == 1
    raw = pcaps[0].read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), "a libpcap file"
    assert len(raw) > 24 + 20 * (16 + 12 + 160), "the 20 relayed packets are in it"
    (metadata,) = (rtpengine.recording_dir / "metadata").glob(f"*{escaped}-*")
    assert "entry_point=sales" in metadata.read_text(errors="replace")


async def test_signalling_only_records_nothing_and_says_why(call_id: str) -> None:
    media = CallMedia(
        SignallingOnlyMedia("rtpengine not enabled"),
        MediaConfig(queues={"sales": QueueMedia(record=True)}),
    )
    with structlog.testing.capture_logs() as logs:
        assert await media.record(call_id, "sales") is False
    assert logs[0]["event"] == "sip_gateway.media.not_recorded"
    assert "signalling only" in logs[0]["reason"]
    await media.stop_recording(call_id)


# --- rtpengine: the outbound compliance message ------------------------------------------


async def test_compliance_message_reaches_the_customer_then_the_media_is_freed(
    anchored: tuple[CallMedia, RtpengineClient],
    call_id: str,
    peers: tuple[RtpPeer, RtpPeer],
) -> None:
    """An outbound customer answered (their 200 carried the offer) and no agent took it."""
    media, client = anchored
    customer, _ = peers
    acks: list[str | None] = []
    assert media.plays_compliance_message
    message = media.abandon_with_message(call_id, phone_sdp(customer.port), acks.append)
    # The B2BUA forgets the ended call meanwhile: the message's task keeps the media.
    await media.release(call_id)
    assert await message is True
    (for_ack,) = acks
    assert for_ack is not None and "a=sendrecv" in for_ack
    # It ended once the message had played: the call is gone from rtpengine...
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)
    # ...and the customer received one pass of it, from the port in the ACK's SDP.
    heard = [customer.received.get_nowait() for _ in range(customer.received.qsize())]
    heard += [p async for p in _rest(customer)]
    assert 0.6 / 0.02 - 4 <= len(heard) <= 0.6 / 0.02 + 2
    assert {tone_of(p) for p in heard[2:-2]} == {MESSAGE_HZ}
    assert {p.source for p in heard} == {(LOOPBACK, media_port_of(for_ack))}


async def _rest(peer: RtpPeer) -> AsyncIterator[Rtp]:
    """Packets still on their way (loopback delivers them within the quiet period)."""
    while True:
        try:
            yield await asyncio.wait_for(peer.received.get(), 0.3)
        except TimeoutError:
            return


async def test_signalling_only_abandon_hangs_up_at_once(call_id: str, config: MediaConfig) -> None:
    media = CallMedia(SignallingOnlyMedia("rtpengine not enabled"), config)
    acks: list[str | None] = []
    assert not media.plays_compliance_message
    assert await media.abandon_with_message(call_id, phone_sdp(5004), acks.append) is False
    assert acks == [None], "the B2BUA refuses the streams in its ACK"


async def test_no_compliance_message_configured_hangs_up_at_once(
    rtpengine: EmbeddedRtpengine, call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    customer, _ = peers
    async with RtpengineClient(rtpengine.ng_address) as client:
        media = CallMedia(RtpengineMedia(client), MediaConfig())
        acks: list[str | None] = []
        assert not media.plays_compliance_message
        message = media.abandon_with_message(call_id, phone_sdp(customer.port), acks.append)
        assert await message is False
        assert acks == [None]
        with pytest.raises(RtpengineError, match="Unknown call-id"):
            await client.query(call_id)


async def test_a_failed_compliance_message_still_acks_and_frees(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str
) -> None:
    media, client = anchored
    acks: list[str | None] = []
    video_only = phone_sdp(5004).replace("m=audio", "m=video")
    with structlog.testing.capture_logs() as logs:
        assert await media.abandon_with_message(call_id, video_only, acks.append) is False
    assert acks == [None]
    assert logs[0]["event"] == "sip_gateway.media.compliance_message_failed"
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)


# --- what the gateway says at start ------------------------------------------------------


async def test_start_report_names_what_signalling_only_cannot_do(config: MediaConfig) -> None:
    media = CallMedia(SignallingOnlyMedia("rtpengine not enabled"), config)
    (line,) = media.start_report()
    assert "signalling-only" in line
    assert "queue media for sales" in line and "recording for sales" in line
    assert "compliance message" in line
    assert CallMedia(SignallingOnlyMedia(), MediaConfig()).start_report() == []


async def test_start_report_with_rtpengine(
    anchored: tuple[CallMedia, RtpengineClient],
) -> None:
    media, _ = anchored
    assert media.start_report() == ["queue media: sales; recorded: sales; compliance message: yes"]


# --- re-INVITEs between connected legs ----------------------------------------------------


@pytest.mark.parametrize("from_agent", [True, False], ids=["agent-holds", "caller-holds"])
async def test_hold_and_resume_keep_the_media_path(
    any_media: CallMedia, call_id: str, peers: tuple[RtpPeer, RtpPeer], from_agent: bool
) -> None:
    """A re-INVITE relayed through the facade (hold, then resume) leaves a working call."""
    caller, agent = peers
    caller_offer = phone_sdp(caller.port, session=1)
    to_agent = await any_media.offer_to_agent(call_id, caller_offer)
    to_caller = await any_media.agent_answered(call_id, phone_sdp(agent.port, session=2))
    holder, other = (agent, caller) if from_agent else (caller, agent)
    try:
        for direction in ("sendonly", "sendrecv"):
            offer = phone_sdp(holder.port, session=3).replace("a=sendrecv", f"a={direction}")
            relayed = await any_media.relay_offer(call_id, from_agent, offer)
            assert f"a={direction}" in relayed
            answer = phone_sdp(other.port, session=4)
            if direction == "sendonly":
                answer = answer.replace("a=sendrecv", "a=recvonly")
            back = await any_media.relay_answer(call_id, from_agent, answer)
            # Each side keeps sending where it already did: rtpengine kept its ports.
            holder_sends_to = media_port_of(to_agent if from_agent else to_caller)
            other_sends_to = media_port_of(to_caller if from_agent else to_agent)
            assert media_port_of(back) == holder_sends_to
            assert media_port_of(relayed) == other_sends_to
        at_agent, at_caller = await exchange(
            caller, media_port_of(to_caller), agent, media_port_of(to_agent)
        )
        assert [p.sequence for p in at_agent] == list(range(10))
        assert [p.sequence for p in at_caller] == list(range(500, 510))
    finally:
        await any_media.release(call_id)


# --- one call's commands run in the order they were asked --------------------------------


async def test_a_hang_up_while_the_183_is_prepared_leaves_nothing_behind(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    media, client = anchored
    caller, _ = peers
    hold = asyncio.create_task(media.hold_in_queue(call_id, "sales", phone_sdp(caller.port)))
    await asyncio.sleep(0)  # the hold has started: the release comes second
    await media.release(call_id)
    assert await hold is not None
    with pytest.raises(RtpengineError, match="Unknown call-id"):
        await client.query(call_id)


async def test_an_agent_rung_while_the_183_is_prepared_gets_the_same_offer(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str, peers: tuple[RtpPeer, RtpPeer]
) -> None:
    media, _ = anchored
    caller, agent = peers
    offer = phone_sdp(caller.port)
    hold = asyncio.create_task(media.hold_in_queue(call_id, "sales", offer))
    await asyncio.sleep(0)
    to_agent = await media.offer_to_agent(call_id, offer)
    early = await hold
    assert early is not None
    try:
        final = await media.agent_answered(call_id, phone_sdp(agent.port, session=2))
        assert final == early
        at_agent, at_caller = await exchange(
            caller, media_port_of(early), agent, media_port_of(to_agent)
        )
        assert len(at_agent) == len(at_caller) == 10
    finally:
        await media.release(call_id)


async def test_a_transfer_to_another_agent_keeps_the_callers_port(
    anchored: tuple[CallMedia, RtpengineClient], call_id: str
) -> None:
    """After a first agent talked, the next one takes the same agent side (port-latching)."""
    media, _ = anchored
    loop = asyncio.get_running_loop()
    made = [await loop.create_datagram_endpoint(RtpPeer, local_addr=(LOOPBACK, 0)) for _ in "abc"]
    caller, first, second = (peer for _, peer in made)
    try:
        caller_offer = phone_sdp(caller.port, session=1)
        to_agent = await media.offer_to_agent(call_id, caller_offer)
        to_caller = await media.agent_answered(call_id, phone_sdp(first.port, session=2))
        await exchange(caller, media_port_of(to_caller), first, media_port_of(to_agent))

        assert await media.offer_to_agent(call_id, caller_offer) == to_agent
        again = await media.agent_answered(call_id, phone_sdp(second.port, session=3))
        assert again == to_caller, "the caller's SDP is unchanged: its re-INVITE changes nothing"
        at_second, at_caller = await exchange(
            caller, media_port_of(to_caller), second, media_port_of(to_agent)
        )
        assert [p.sequence for p in at_second] == list(range(10))
        assert [p.sequence for p in at_caller] == list(range(500, 510))
    finally:
        await media.release(call_id)
        for transport, _ in made:
            transport.close()
