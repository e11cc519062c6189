"""The running gateway's media: sipp carries the signalling of the carrier and the agent,
UDP sockets named in their SDP carry the audio through a real rtpengine.

A queued caller gets a 183 and hears the entry point's greeting then music; when the agent
answers, caller and agent hear each other on the port of the 183 (no re-INVITE), the call is
recorded, and hanging up frees it in rtpengine. An outbound live answer no agent takes within
2 s hears the compliance message, then the BYE. Without rtpengine the gateway says at start
that it runs signalling-only.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import structlog
from rtp_harness import (
    LOOPBACK,
    WAIT,
    Rtp,
    RtpPeer,
    nearest_tone,
    peers,
    rtp_packet,
    rtpengine,
    write_tone,
)
from sip_gateway_harness import (
    ACK_2XX,
    DNIS,
    INVITE,
    SDP,
    TENANT,
    RunningGateway,
    Sipp,
    agent_answers,
    carrier_cancels,
    free_port,
    register,
    run_sipp,
    running_gateway,
    start_sipp,
    wait_until,
    write,
)

from plateau_contracts.events.dialer import CampaignStarted, ContactAllowed
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.config import MediaConfig, QueueMedia
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.media import RtpengineClient, RtpengineError
from plateau_sip_gateway.media.embedded import EmbeddedRtpengine
from plateau_sip_gateway.testing.sipp import OK_IN_DIALOG

pytestmark = pytest.mark.integration
__all__ = ["peers", "rtpengine"]  # fixtures, used by name

EXTENSION, SECOND = "1001", "1002"
PASSWORD = secrets.token_urlsafe(12)
GREETING_HZ, MUSIC_HZ, MESSAGE_HZ = 400, 1000, 500
ALLOWED = "+242066123456"
CAMPAIGN = "cmp-media"


def carrier_waits_with_early_media(media_port: int, in_dialog: str = "") -> str:
    """Carrier: INVITE (audio at ``media_port``), 180, 183 with SDP, 200, ACK, the
    ``in_dialog`` steps, then the gateway hangs up (BYE)."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier waits with early media">
{INVITE.replace("[media_port]", str(media_port))}
    <recv response="183"/>
    <recv response="200" timeout="60000"/>
{ACK_2XX}
{in_dialog}
    <recv request="BYE" timeout="60000"/>
{OK_IN_DIALOG}
</scenario>"""


@pytest.fixture
def media_config(tmp_path: Path) -> MediaConfig:
    return MediaConfig(
        queues={
            "sales": QueueMedia(
                greeting=write_tone(tmp_path / "greeting.wav", 0.6, GREETING_HZ),
                music=write_tone(tmp_path / "music.wav", 0.4, MUSIC_HZ),
                record=True,
            )
        },
        compliance_message=write_tone(tmp_path / "compliance.wav", 0.6, MESSAGE_HZ),
    )


@pytest.fixture
def customer_port() -> int:
    return free_port()


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    tmp_path: Path,
    rtpengine: EmbeddedRtpengine,
    media_config: MediaConfig,
    customer_port: int,
) -> AsyncIterator[RunningGateway]:
    trunks = TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "carrier",
                    "tenant": TENANT,
                    "source_networks": ["127.0.0.1/32"],
                    "outbound": [{"host": "127.0.0.1", "port": customer_port}],
                    "entry_points": {"+242053000100": "sales"},
                    "capacity": {"kind": "calls", "max_calls": 10},
                    "options_interval_s": 0,
                }
            ]
        }
    )
    async with running_gateway(
        service_pool,
        tmp_path,
        passwords={EXTENSION: PASSWORD, SECOND: PASSWORD},
        config=trunks,
        schema=service_schema.schema,
        rtpengine=rtpengine.ng_address,
        media=media_config,
    ) as running:
        allowlist = running.gateway.allowlist
        allowlist.apply(CampaignStarted(campaign_id=CAMPAIGN, requested_by="supervisor"), TENANT)
        allowlist.apply(
            ContactAllowed(contact_id="ct-1", campaign_id=CAMPAIGN, number=ALLOWED, list_version=1),
            TENANT,
        )
        yield running


async def offered_call(gw: RunningGateway) -> str:
    async def offered() -> bool:
        return bool(await gw.offered_calls())

    await wait_until(offered, what="call.offered")
    (call_id,) = await gw.offered_calls()
    return call_id


async def from_ssrc(peer: RtpPeer, ssrc: int, count: int) -> list[Rtp]:
    """The next ``count`` packets of the stream ``ssrc`` (others, like music, are skipped)."""
    found: list[Rtp] = []
    async with asyncio.timeout(WAIT):
        while len(found) < count:
            packet = await peer.received.get()
            if packet.ssrc == ssrc:
                found.append(packet)
    return found


async def test_a_queued_caller_hears_the_queue_then_talks_to_the_agent(
    gw: RunningGateway,
    tmp_path: Path,
    peers: tuple[RtpPeer, RtpPeer],
    rtpengine: EmbeddedRtpengine,
) -> None:
    caller, agent_audio = peers
    agent_port = free_port()
    agent_scenario = agent_answers().replace("[media_port]", str(agent_audio.port))
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_scenario), "-m", "1"], tmp_path, port=agent_port
    )
    register_agent = register(EXTENSION, PASSWORD, agent_port)
    registered, output = await run_sipp(
        ["-sf", write(tmp_path, "register.xml", register_agent), "-m", "1", gw.sip_target],
        tmp_path,
    )
    assert registered == 0, f"REGISTER failed:\n{output}"
    carrier = await start_sipp(
        [
            "-sf",
            write(tmp_path, "carrier.xml", carrier_waits_with_early_media(caller.port)),
            "-s",
            DNIS,
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    try:
        call_id = await offered_call(gw)

        # Waiting: one pass of the greeting, then the music, from one rtpengine port.
        heard: list[Rtp] = []
        async with asyncio.timeout(WAIT + 2):
            while sum(nearest_tone(p, (GREETING_HZ, MUSIC_HZ)) == MUSIC_HZ for p in heard) < 25:
                heard.append(await caller.received.get())
        tones = [nearest_tone(p, (GREETING_HZ, MUSIC_HZ)) for p in heard]
        greeting = tones.index(MUSIC_HZ)
        assert set(tones[:greeting]) == {GREETING_HZ} and 28 <= greeting <= 32
        assert {p.payload_type for p in heard} == {0}, "PCMU, the caller's codec"
        (early_port,) = {p.source[1] for p in heard}

        # The agent answers: the caller keeps sending where its 183 said.
        answered = await gw.connect_agent(call_id, EXTENSION)
        assert answered.agent_sip_call_id

        await gw.wait_for(call_id, "call.connected")
        for seq in range(10):
            caller.send(rtp_packet(seq, ssrc=0x1111), early_port)
            await asyncio.sleep(0.02)
        at_agent = await from_ssrc(agent_audio, 0x1111, 10)
        assert [p.sequence for p in at_agent] == list(range(10))
        (agent_side_port,) = {p.source[1] for p in at_agent}
        for seq in range(10):
            agent_audio.send(rtp_packet(700 + seq, ssrc=0x2222), agent_side_port)
            await asyncio.sleep(0.02)
        at_caller = await from_ssrc(caller, 0x2222, 10)
        assert [p.sequence for p in at_caller] == list(range(700, 710))
        assert {p.source for p in at_caller} == {(LOOPBACK, early_port)}

        await gw.hangup(call_id)
        carrier_code, carrier_output = await carrier.result()
        agent_code, agent_output = await agent.result()
        assert carrier_code == 0, carrier_output
        assert agent_code == 0, agent_output
    finally:
        carrier.kill()
        agent.kill()

    # Hanging up freed the call in rtpengine, which had recorded it (the entry point records).
    async with RtpengineClient(rtpengine.ng_address) as client:

        async def released() -> bool:
            try:
                await client.query(call_id)
            except RtpengineError:
                return True
            return False

        await wait_until(released, what="the call's media released")
    assert rtpengine.recording_dir is not None
    (pcap,) = (rtpengine.recording_dir / "pcaps").glob(f"{call_id}-*.pcap")
    assert pcap.stat().st_size > 24 + 20 * (16 + 12 + 160), "the 20 relayed packets"
    (metadata,) = (rtpengine.recording_dir / "metadata").glob(f"*{call_id}-*")
    assert "entry_point=sales" in metadata.read_text(errors="replace")
    types = (await gw.streams())[f"call-{call_id}"]
    assert types[0] == "call.offered" and types[-1] == "call.ended"
    assert "call.connected" in types


async def originate(gw: RunningGateway, attempt: str) -> str:
    request = pb.OriginateRequest(
        request_id=attempt,
        campaign_id=CAMPAIGN,
        contact_id="ct-1",
        attempt_id=attempt,
        number=ALLOWED,
        requested_by=pb.REQUESTER_DIALER,
        requester="dialer",
    )
    response = await gw.stub.Originate(
        request, metadata=(("x-plateau-tenant", TENANT),), timeout=10
    )
    return str(response.call_id)


async def rtpengine_ports(rtpengine: EmbeddedRtpengine, call_id: str) -> dict[str, int]:
    """The port rtpengine receives each side's RTP on, by side (``customer``, ``agent``)."""
    async with RtpengineClient(rtpengine.ng_address) as client:
        tags = (await client.query(call_id)).raw["tags"]
    assert isinstance(tags, dict)
    ports: dict[str, int] = {}
    for tag, side in tags.items():
        stream = side[b"medias"][0][b"streams"][0]  # type: ignore[index]
        ports[tag.decode()] = int(stream[b"local port"])  # type: ignore[index, call-overload]
    return ports


def customer_answers_then_hears_bye(media_port: int) -> str:
    """The customer's network: INVITE without SDP, 180, 200 with the offer (audio at
    ``media_port``), an ACK whose answer accepts the audio, then the gateway's BYE."""
    offer = SDP.replace("[media_port]", str(media_port))
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer answers alone">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:customer@[local_ip]:[local_port]>
Content-Length: 0
]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:customer@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{offer}
]]></send>
  <recv request="ACK" timeout="15000"><action>
    <ereg regexp="m=audio [1-9][0-9]* RTP" search_in="msg" check_it="true" assign_to="m"/>
  </action></recv>
  <recv request="BYE" timeout="30000"/>
{OK_IN_DIALOG}
</scenario>"""


async def test_an_abandoned_outbound_answer_hears_the_compliance_message_then_bye(
    gw: RunningGateway,
    tmp_path: Path,
    peers: tuple[RtpPeer, RtpPeer],
    customer_port: int,
    rtpengine: EmbeddedRtpengine,
) -> None:
    customer, _ = peers
    scenario = write(tmp_path, "customer.xml", customer_answers_then_hears_bye(customer.port))
    phone = await start_sipp(
        ["-sf", scenario, "-m", "1"],
        tmp_path,
        port=customer_port,
    )
    call_id = await originate(gw, "att-media-1")
    try:
        code, output = await phone.result()
        assert code == 0, f"the customer's side failed:\n{output}"
    finally:
        phone.kill()
    # The BYE came after the whole message: one pass of it had already arrived.
    heard = [customer.received.get_nowait() for _ in range(customer.received.qsize())]
    assert len(heard) >= 0.6 / 0.02 - 4
    assert {nearest_tone(p, (MESSAGE_HZ, MUSIC_HZ)) for p in heard[2:-2]} == {MESSAGE_HZ}

    await gw.wait_for(call_id, "call.ended")
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.originated",
        "call.dial_completed",
        "call.compliance_abandoned",
        "call.ended",
    ]
    assert events[2]["message_played"] is True
    async with RtpengineClient(rtpengine.ng_address) as client:
        with pytest.raises(RtpengineError, match="Unknown call-id"):
            await client.query(call_id)


async def test_an_outbound_answer_bridged_to_an_agent_goes_through_rtpengine(
    gw: RunningGateway,
    tmp_path: Path,
    peers: tuple[RtpPeer, RtpPeer],
    customer_port: int,
    rtpengine: EmbeddedRtpengine,
) -> None:
    customer, agent_audio = peers
    agent_port = free_port()
    agent_scenario = agent_answers().replace("[media_port]", str(agent_audio.port))
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", agent_scenario), "-m", "1"], tmp_path, port=agent_port
    )
    registration = write(tmp_path, "register.xml", register(EXTENSION, PASSWORD, agent_port))
    registered, output = await run_sipp(["-sf", registration, "-m", "1", gw.sip_target], tmp_path)
    assert registered == 0, f"REGISTER failed:\n{output}"
    scenario = write(tmp_path, "customer.xml", customer_answers_then_hears_bye(customer.port))
    phone = await start_sipp(["-sf", scenario, "-m", "1"], tmp_path, port=customer_port)
    try:
        call_id = await originate(gw, "att-media-2")

        await gw.wait_for(call_id, "call.dial_completed")
        await gw.connect_agent(call_id, EXTENSION, agent="a-7")
        await gw.wait_for(call_id, "call.connected")

        ports = await rtpengine_ports(rtpengine, call_id)
        # What the customer was given for the agent side is rtpengine's address, so the
        # API's hold and a transfer's re-INVITE keep the media anchored.
        agent_sdp = gw.gateway.b2bua.find(TENANT, call_id).agent_sdp[0].decode()
        assert f"m=audio {ports['customer']} " in agent_sdp
        for seq in range(10):
            customer.send(rtp_packet(seq, ssrc=0x1111), ports["customer"])
            agent_audio.send(rtp_packet(900 + seq, ssrc=0x2222), ports["agent"])
            await asyncio.sleep(0.02)
        at_agent = await from_ssrc(agent_audio, 0x1111, 10)
        at_customer = await from_ssrc(customer, 0x2222, 10)
        assert [p.sequence for p in at_agent] == list(range(10))
        assert [p.sequence for p in at_customer] == list(range(900, 910))

        await gw.hangup(call_id)
        code, output = await phone.result()
        assert code == 0, f"the customer's side failed:\n{output}"
        code, output = await agent.result()
        assert code == 0, f"the agent's side failed:\n{output}"
    finally:
        phone.kill()
        agent.kill()
    assert customer.received.empty(), "no compliance message: an agent took the call"
    types = await gw.types_of(call_id)
    assert types == [
        "call.originated",
        "call.dial_completed",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]


async def test_a_caller_who_hangs_up_during_the_music_is_released_everywhere(
    gw: RunningGateway,
    tmp_path: Path,
    peers: tuple[RtpPeer, RtpPeer],
    rtpengine: EmbeddedRtpengine,
) -> None:
    caller, _ = peers
    # The caller hangs up (CANCEL) while the queue plays to it: 180, 183, then 487.
    scenario = carrier_cancels(after_ms=1000).replace(
        '<recv response="180"/>', '<recv response="180"/>\n    <recv response="183"/>'
    )
    scenario = scenario.replace("[media_port]", str(caller.port))
    carrier_xml = write(tmp_path, "carrier.xml", scenario)
    code, output = await run_sipp(
        ["-sf", carrier_xml, "-s", DNIS, "-m", "1", gw.sip_target], tmp_path
    )
    assert code == 0, f"the carrier's side failed:\n{output}"
    (call_id,) = await gw.offered_calls()

    async with RtpengineClient(rtpengine.ng_address) as client:

        async def released() -> bool:
            try:
                await client.query(call_id)
            except RtpengineError:
                return True
            return False

        await wait_until(released, what="the call's media released")
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == ["call.offered", "call.ended"]
    assert events[-1]["ended_by"] == "caller"
    assert gw.gateway.b2bua.open_calls == 0


def reinvited_sendrecv(media_port: int) -> str:
    """The carrier accepts a re-INVITE (a transfer's new agent), keeping its audio port."""
    offer = SDP.replace("[media_port]", str(media_port))
    return f"""
  <recv request="INVITE" timeout="30000"><action>
    <ereg regexp="a=sendrecv" search_in="msg" check_it="true" assign_to="reinvite"/>
  </action></recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:carrier@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{offer}
]]></send>
  <recv request="ACK"/>"""


async def test_a_transfer_to_another_agent_keeps_the_callers_media_path(
    gw: RunningGateway,
    tmp_path: Path,
    rtpengine: EmbeddedRtpengine,
) -> None:
    loop = asyncio.get_running_loop()
    made = [await loop.create_datagram_endpoint(RtpPeer, local_addr=(LOOPBACK, 0)) for _ in "abc"]
    caller, first_audio, second_audio = (peer for _, peer in made)
    phones: list[Sipp] = []
    try:
        for extension, audio in ((EXTENSION, first_audio), (SECOND, second_audio)):
            port = free_port()
            scenario = agent_answers().replace("[media_port]", str(audio.port))
            phones.append(
                await start_sipp(
                    ["-sf", write(tmp_path, f"agent-{extension}.xml", scenario), "-m", "1"],
                    tmp_path,
                    port=port,
                )
            )
            registration = write(
                tmp_path, f"reg-{extension}.xml", register(extension, PASSWORD, port)
            )
            code, output = await run_sipp(["-sf", registration, "-m", "1", gw.sip_target], tmp_path)
            assert code == 0, f"REGISTER of {extension} failed:\n{output}"
        scenario = carrier_waits_with_early_media(caller.port, reinvited_sendrecv(caller.port))
        carrier_xml = write(tmp_path, "carrier.xml", scenario)
        carrier = await start_sipp(
            ["-sf", carrier_xml, "-s", DNIS, "-m", "1", gw.sip_target], tmp_path
        )
        phones.append(carrier)
        call_id = await offered_call(gw)

        await gw.connect_agent(call_id, EXTENSION, agent="a-first")
        await gw.wait_for(call_id, "call.connected")
        before = await rtpengine_ports(rtpengine, call_id)

        request = pb.TransferRequest(
            request_id="t-media",
            call_id=call_id,
            agent=pb.AgentTarget(agent_id="a-second", extension=SECOND),
        )
        await gw.stub.Transfer(request, metadata=(("x-plateau-tenant", TENANT),), timeout=10)
        await gw.wait_for(call_id, "call.connected", count=2)

        after = await rtpengine_ports(rtpengine, call_id)
        assert after == before, "the caller and the agent side keep rtpengine's ports"
        for seq in range(10):
            caller.send(rtp_packet(seq, ssrc=0x1111), after["customer"])
            second_audio.send(rtp_packet(300 + seq, ssrc=0x3333), after["agent"])
            await asyncio.sleep(0.02)
        at_second = await from_ssrc(second_audio, 0x1111, 10)
        at_caller = await from_ssrc(caller, 0x3333, 10)
        assert [p.sequence for p in at_second] == list(range(10))
        assert [p.sequence for p in at_caller] == list(range(300, 310))
        assert first_audio.received.empty(), "the first agent hears nothing of it"

        await gw.hangup(call_id)
        for phone in phones:
            code, output = await phone.result()
            assert code == 0, f"a sipp peer failed:\n{output}"
    finally:
        for phone in phones:
            phone.kill()
        for transport, _ in made:
            transport.close()


async def test_the_gateway_says_at_start_that_it_runs_signalling_only(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    tmp_path: Path,
    media_config: MediaConfig,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running_gateway(
            service_pool,
            tmp_path,
            passwords={EXTENSION: PASSWORD},
            schema=service_schema.schema,
            media=media_config,
        ) as running:
            assert running.gateway.media is not None
            assert not running.gateway.media.available
    (start,) = [entry for entry in logs if entry["event"] == "sip_gateway.media"]
    assert start["description"].startswith("media: signalling only — SDP passed through")
    (note,) = [entry for entry in logs if entry["event"] == "sip_gateway.media_config"]
    assert note["log_level"] == "warning"
    assert "queue media for sales" in note["note"] and "recording for sales" in note["note"]


async def test_the_gateway_says_at_start_where_media_is_anchored(
    gw: RunningGateway, rtpengine: EmbeddedRtpengine
) -> None:
    host, port = rtpengine.ng_address
    media = gw.gateway.media
    assert media is not None and media.available
    assert f"anchored in rtpengine at {host}:{port}" in media.description
    assert media.start_report() == ["queue media: sales; recorded: sales; compliance message: yes"]
