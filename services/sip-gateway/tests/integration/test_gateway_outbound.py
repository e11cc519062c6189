"""Outbound calls through the running gateway, with sipp as the customer's network and as
agents: ``Originate`` of an allowed number (answered and bridged to an agent, busy, ring
timeout, abandoned for compliance when no agent is connected within 2 s) and an agent's
softphone dialling an allowed number. The customer leg is set up as RFC 3725 flow I: the
INVITE carries no SDP, the customer's 200 the offer, our ACK the agent's answer."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from sip_gateway_harness import (
    SDP,
    TENANT,
    RunningGateway,
    agent_answers,
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
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.testing.sipp import OK_IN_DIALOG, asked_to_auto_answer

pytestmark = pytest.mark.integration

EXTENSION = "1005"
PASSWORD = secrets.token_urlsafe(12)
ALLOWED = "+242066123456"
CAMPAIGN = "cmp-out"
METADATA = (("x-plateau-tenant", TENANT),)


def outbound_trunk(customer_port: int) -> TrunksConfig:
    return TrunksConfig.model_validate(
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


@pytest.fixture
def customer_port() -> int:
    return free_port()


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool,
    service_schema: MigratedSchema,
    tmp_path: Path,
    customer_port: int,
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool,
        tmp_path,
        passwords={EXTENSION: PASSWORD},
        config=outbound_trunk(customer_port),
        schema=service_schema.schema,
    ) as running:
        # The dialer's facts, applied as its feed would (the feed itself is tested over
        # the broker in test_gateway_dialling).
        allowlist = running.gateway.allowlist
        allowlist.apply(CampaignStarted(campaign_id=CAMPAIGN, requested_by="supervisor"), TENANT)
        allowlist.apply(
            ContactAllowed(contact_id="ct-1", campaign_id=CAMPAIGN, number=ALLOWED, list_version=3),
            TENANT,
        )
        yield running


def reply(status: str, sdp: bool = False, tag: bool = True) -> str:
    to_tag = ";tag=[pid]c[call_number]" if tag else ""
    body = (
        f"Content-Type: application/sdp\nContent-Length: [len]\n\n{SDP}"
        if sdp
        else ("Content-Length: 0")
    )
    return f"""
  <send{' retrans="500"' if status.startswith("200") and sdp else ""}><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:]{to_tag}
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:customer@[local_ip]:[local_port]>
{body}
]]></send>"""


ACK = """
  <recv request="ACK" timeout="15000"/>"""


def customer(after_answer: str, expect_offer: bool = False) -> str:
    """The customer's network answering the gateway's INVITE: 180, then 200 with SDP."""
    check = (
        '<ereg regexp="m=audio [1-9]" search_in="msg" check_it="true" assign_to="offer"/>'
        if expect_offer
        else '<ereg regexp="Content-Length: 0" search_in="msg" check_it="true" assign_to="no"/>'
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer answers">
  <recv request="INVITE"><action>{check}</action></recv>
{reply("180 Ringing")}
  <pause milliseconds="100"/>
{reply("200 OK", sdp=True)}
{after_answer}
</scenario>"""


ACK_WITH_AGENT_ANSWER = """
  <recv request="ACK" timeout="15000"><action>
    <ereg regexp="o=plateau [0-9]+ 1 " search_in="msg" check_it="true" assign_to="o"/>
    <ereg regexp="m=audio [1-9][0-9]* RTP" search_in="msg" check_it="true" assign_to="m"/>
  </action></recv>"""

BYE_FROM_GATEWAY = f"""
  <recv request="BYE" timeout="30000"/>
{OK_IN_DIALOG}"""


async def originate(gw: RunningGateway, number: str = ALLOWED, ring_s: float = 10) -> str:
    request = pb.OriginateRequest(
        request_id=f"att-{secrets.token_hex(3)}",
        campaign_id=CAMPAIGN,
        contact_id="ct-1",
        attempt_id=f"att-{secrets.token_hex(3)}",
        number=number,
        requested_by=pb.REQUESTER_DIALER,
        requester="dialer",
    )
    request.ring_timeout.FromMilliseconds(int(ring_s * 1000))
    response = await gw.stub.Originate(request, metadata=METADATA, timeout=10)
    assert response.call_id
    return str(response.call_id)


async def test_an_allowed_number_is_dialled_answered_and_bridged_to_an_agent(
    gw: RunningGateway, tmp_path: Path, customer_port: int
) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        # The customer is waiting: the agent's phone is asked to answer by itself.
        ["-sf", write(tmp_path, "agent.xml", asked_to_auto_answer(agent_answers())), "-m", "1"],
        tmp_path,
        port=agent_port,
    )
    code, output = await run_sipp(
        [
            "-sf",
            write(tmp_path, "reg.xml", register(EXTENSION, PASSWORD, agent_port)),
            "-m",
            "1",
            gw.sip_target,
        ],
        tmp_path,
    )
    assert code == 0, f"REGISTER failed:\n{output}"
    scenario = customer(ACK_WITH_AGENT_ANSWER + BYE_FROM_GATEWAY)
    phone = await start_sipp(
        ["-sf", write(tmp_path, "customer.xml", scenario), "-m", "1"],
        tmp_path,
        port=customer_port,
    )
    call_id = await originate(gw)
    await gw.wait_for(call_id, "call.dial_completed")
    await gw.connect_agent(call_id, EXTENSION, agent="a-5")
    await gw.wait_for(call_id, "call.connected")
    await gw.hangup(call_id)

    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"the agent's side failed:\n{output}"
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.originated",
        "call.dial_completed",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    originated, completed = events[0], events[1]
    assert originated["number"] == ALLOWED and originated["list_version"] == 3
    assert originated["campaign_id"] == CAMPAIGN and originated["contact_id"] == "ct-1"
    assert completed["outcome"] == "answered" and completed["sip_code"] is None
    assert events[3]["agent_id"] == "a-5"
    assert events[4]["cause"] == "api_hangup"
    assert gw.gateway.b2bua.admission.in_use("carrier") == 0


async def test_a_live_answer_without_an_agent_is_abandoned_after_two_seconds(
    gw: RunningGateway, tmp_path: Path, customer_port: int
) -> None:
    refused_answer = """
  <recv request="ACK" timeout="15000"><action>
    <ereg regexp="m=audio 0 RTP" search_in="msg" check_it="true" assign_to="m"/>
  </action></recv>"""
    scenario = customer(refused_answer + BYE_FROM_GATEWAY)
    phone = await start_sipp(
        ["-sf", write(tmp_path, "customer.xml", scenario), "-m", "1"], tmp_path, port=customer_port
    )
    call_id = await originate(gw)
    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"
    await gw.wait_for(call_id, "call.ended")
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.originated",
        "call.dial_completed",
        "call.compliance_abandoned",
        "call.ended",
    ]
    abandoned, ended = events[2], events[3]
    assert int(str(abandoned["waited_ms"])) >= 2000
    assert abandoned["message_played"] is False  # signalling-only: no media relay
    assert ended["cause"] == "compliance_abandon" and ended["ended_by"] == "gateway"


async def test_a_busy_customer_ends_the_dial_with_its_code(
    gw: RunningGateway, tmp_path: Path, customer_port: int
) -> None:
    scenario = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer busy">
  <recv request="INVITE"/>
{reply("486 Busy Here")}
  <recv request="ACK"/>
</scenario>"""
    phone = await start_sipp(
        ["-sf", write(tmp_path, "busy.xml", scenario), "-m", "1"], tmp_path, port=customer_port
    )
    call_id = await originate(gw)
    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"
    await gw.wait_for(call_id, "call.ended")
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.originated",
        "call.dial_completed",
        "call.ended",
    ]
    assert events[1]["outcome"] == "busy" and events[1]["sip_code"] == 486
    assert events[2]["cause"] == "busy" and events[2]["ended_by"] == "caller"


async def test_a_customer_who_does_not_answer_is_cancelled_at_the_ring_timeout(
    gw: RunningGateway, tmp_path: Path, customer_port: int
) -> None:
    scenario = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer never answers">
  <recv request="INVITE"/>
{reply("180 Ringing")}
  <recv request="CANCEL" timeout="15000"/>
{reply("200 OK", tag=False)}
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0
]]></send>
  <recv request="ACK"/>
</scenario>"""
    phone = await start_sipp(
        ["-sf", write(tmp_path, "ring.xml", scenario), "-m", "1"], tmp_path, port=customer_port
    )
    call_id = await originate(gw, ring_s=1)
    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"
    await gw.wait_for(call_id, "call.ended")
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events][1:] == ["call.dial_completed", "call.ended"]
    assert events[1]["outcome"] == "no_answer" and events[1]["sip_code"] is None
    assert int(str(events[1]["ring_ms"])) >= 1000
    assert events[2]["cause"] == "no_answer" and events[2]["ended_by"] == "gateway"


async def test_originate_on_a_full_trunk_is_resource_exhausted(gw: RunningGateway) -> None:
    admission = gw.gateway.b2bua.admission
    tokens = [admission.admit("carrier") for _ in range(admission.capacity("carrier"))]
    try:
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await originate(gw)
        assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "carrier" in (full.value.details() or "")
    finally:
        for token in tokens:
            admission.release(token)  # type: ignore[arg-type]


def softphone_dials_allowed(number: str) -> str:
    """An agent's softphone: REGISTER, INVITE ``number`` with its SDP (407, retry with
    credentials), ringing and 200 relayed from the customer, ACK, talk, BYE."""
    target = f"sip:{number}@[remote_ip]:[remote_port]"

    def request(method: str, cseq: int, auth: bool, body: bool, to_tag: bool = False) -> str:
        credentials = f"[authentication username={EXTENSION} password={PASSWORD}]\n" if auth else ""
        to = f"<{target}>" + ("[peer_tag_param]" if to_tag else "")
        if method == "REGISTER":
            to = f"<sip:{EXTENSION}@[remote_ip]>"
        expires = "Expires: 3600\n" if method == "REGISTER" else ""
        payload = (
            f"Content-Type: application/sdp\nContent-Length: [len]\n\n{SDP}"
            if body
            else "Content-Length: 0"
        )
        retrans = "" if method == "ACK" else ' retrans="500"'
        return f"""<send{retrans}><![CDATA[
{method} {target} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: {to}
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:{EXTENSION}@[local_ip]:[local_port]>
{expires}{credentials}Max-Forwards: 70
{payload}
]]></send>"""

    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone dials {number}">
{request("REGISTER", 1, False, False)}
<recv response="401" auth="true"/>
{request("REGISTER", 2, True, False)}
<recv response="200"/>
{request("INVITE", 3, False, True)}
<recv response="100" optional="true"/>
<recv response="407" auth="true"/>
{request("ACK", 3, False, False)}
{request("INVITE", 4, True, True)}
<recv response="100" optional="true"/>
<recv response="180" timeout="10000"/>
<recv response="200" timeout="10000"><action>
  <ereg regexp="m=audio [1-9]" search_in="msg" check_it="true" assign_to="m"/>
</action></recv>
{request("ACK", 4, False, False, to_tag=True)}
<pause milliseconds="300"/>
{request("BYE", 5, False, False, to_tag=True)}
<recv response="200"/>
</scenario>"""


async def test_a_softphone_dialling_an_allowed_number_is_connected_to_the_customer(
    gw: RunningGateway, tmp_path: Path, customer_port: int
) -> None:
    phone = await start_sipp(
        ["-sf", write(tmp_path, "customer.xml", customer(ACK + BYE_FROM_GATEWAY, True)), "-m", "1"],
        tmp_path,
        port=customer_port,
    )
    national = "066123456"  # dialled as agents do, in national form
    scenario = write(tmp_path, "dial.xml", softphone_dials_allowed(national))
    code, output = await run_sipp(
        ["-sf", scenario, "-m", "1", "-auth_uri", f"{national}@{gw.sip_target}", gw.sip_target],
        tmp_path,
    )
    assert code == 0, f"the softphone's dial failed:\n{output}"
    code, output = await phone.result()
    assert code == 0, f"the customer's side failed:\n{output}"

    async def ended() -> bool:
        streams = await gw.streams()
        return any(
            t and t[0] == "call.originated" and t[-1] == "call.ended" for t in streams.values()
        )

    await wait_until(ended, 30, "the softphone's call to end")
    [stream] = [s for s, t in (await gw.streams()).items() if t[0] == "call.originated"]
    events = await gw.events(stream)
    assert [e["type"] for e in events] == [
        "call.originated",
        "call.dial_completed",
        "call.connected",
        "call.ended",
    ]
    originated = events[0]
    assert originated["requested_by"] == "agent_softphone"
    assert originated["agent_extension"] == EXTENSION and originated["number"] == ALLOWED
    assert events[2]["extension"] == EXTENSION
    assert events[3]["cause"] == "agent_hangup" and events[3]["ended_by"] == "agent"
