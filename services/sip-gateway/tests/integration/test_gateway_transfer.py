"""Hold, resume and blind transfer of a connected inbound call, with sipp as the carrier and
as agents: ``CallControl.Hold``/``Resume`` re-INVITE the customer (inactive, then the
agent's SDP under the same origin, version by version); ``Transfer`` to another agent
releases the first and re-INVITEs the customer with the second's SDP; to a number the
customer is REFERred to the carrier (or PERMISSION_DENIED when the number is not allowed);
a softphone's own REFER to an entry point puts the call back in its queue."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from sip_gateway_harness import (
    ACK_2XX,
    DNIS,
    INVITE,
    SDP,
    TENANT,
    RunningGateway,
    Sipp,
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
from plateau_sip_gateway.testing.sipp import OK_IN_DIALOG, agent_answers_then

pytestmark = pytest.mark.integration

FIRST, SECOND = "1006", "1007"
PASSWORDS = {FIRST: secrets.token_urlsafe(12), SECOND: secrets.token_urlsafe(12)}
ALLOWED = "+242066123456"
METADATA = (("x-plateau-tenant", TENANT),)


OK = OK_IN_DIALOG

OK_WITH_SDP = f"""
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

{SDP}
]]></send>"""


def reinvited(name: str, regexp: str) -> str:
    """The carrier gets a re-INVITE whose SDP matches ``regexp``, accepts it, gets the ACK."""
    return f"""
  <recv request="INVITE" timeout="20000"><action>
    <ereg regexp="{regexp}" search_in="msg" check_it="true" assign_to="{name}"/>
  </action></recv>
{OK_WITH_SDP}
  <recv request="ACK"/>"""


def carrier(*in_dialog: str) -> str:
    """The carrier: INVITE, ringback, 200 once an agent answers, ACK, then ``in_dialog``
    requests from the gateway, then the gateway's BYE."""
    steps = "\n".join(in_dialog)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier">
{INVITE}
  <recv response="200" timeout="20000"/>
{ACK_2XX}
{steps}
  <recv request="BYE" timeout="20000"/>
{OK}
</scenario>"""


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool, tmp_path, passwords=PASSWORDS, schema=service_schema.schema
    ) as running:
        allowlist = running.gateway.allowlist
        allowlist.apply(CampaignStarted(campaign_id="cmp-1", requested_by="supervisor"), TENANT)
        allowlist.apply(
            ContactAllowed(contact_id="ct-1", campaign_id="cmp-1", number=ALLOWED, list_version=1),
            TENANT,
        )
        yield running


async def agent(gw: RunningGateway, tmp_path: Path, extension: str, scenario: str) -> Sipp:
    """An agent's sipp softphone, registered on ``extension`` with digest auth."""
    port = free_port()
    phone = await start_sipp(
        ["-sf", write(tmp_path, f"agent-{extension}.xml", scenario), "-m", "1"],
        tmp_path,
        port=port,
    )
    registration = write(
        tmp_path, f"reg-{extension}.xml", register(extension, PASSWORDS[extension], port)
    )
    code, output = await run_sipp(["-sf", registration, "-m", "1", gw.sip_target], tmp_path)
    assert code == 0, f"REGISTER of {extension} failed:\n{output}"
    return phone


async def connected_call(
    gw: RunningGateway, tmp_path: Path, carrier_scenario: str
) -> tuple[str, Sipp]:
    """A carrier call connected to the agent on ``FIRST``: its call id and the carrier."""
    scenario = write(tmp_path, "carrier.xml", carrier_scenario)
    phone = await start_sipp(["-sf", scenario, "-s", DNIS, "-m", "1", gw.sip_target], tmp_path)

    async def offered() -> bool:
        if phone.process.returncode is not None:
            code, output = await phone.result()
            pytest.fail(f"the carrier's sipp stopped ({code}):\n{output}")
        return bool(await gw.offered_calls())

    await wait_until(offered, what="call.offered")
    [call_id] = await gw.offered_calls()
    await gw.connect_agent(call_id, FIRST, agent="a-first")
    await gw.wait_for(call_id, "call.connected")
    return call_id, phone


async def succeeded(*phones: Sipp) -> None:
    for phone in phones:
        code, output = await phone.result()
        assert code == 0, f"a sipp peer failed:\n{output}"


async def test_hold_and_resume_over_grpc_re_invite_the_customer(
    gw: RunningGateway, tmp_path: Path
) -> None:
    first = await agent(gw, tmp_path, FIRST, agent_answers())
    scenario = carrier(
        reinvited("held", "a=inactive"),
        reinvited("resumed", "o=plateau [0-9]+ 3 "),  # the agent's SDP again: version 3
    )
    call_id, phone = await connected_call(gw, tmp_path, scenario)
    await gw.stub.Hold(pb.HoldRequest(request_id="h1", call_id=call_id), metadata=METADATA)
    await gw.wait_for(call_id, "call.held")
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await gw.stub.Hold(pb.HoldRequest(request_id="h2", call_id=call_id), metadata=METADATA)
    assert twice.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    await gw.stub.Resume(pb.ResumeRequest(request_id="r1", call_id=call_id), metadata=METADATA)
    await gw.wait_for(call_id, "call.resumed")
    await gw.hangup(call_id)
    await succeeded(phone, first)
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.held",
        "call.resumed",
        "call.ended",
    ]
    assert events[3]["via"] == "api" and events[3]["agent_id"] == "a-first"


async def test_transfer_to_another_agent_releases_the_first_and_bridges_the_second(
    gw: RunningGateway, tmp_path: Path
) -> None:
    first = await agent(gw, tmp_path, FIRST, agent_answers())
    second = await agent(gw, tmp_path, SECOND, agent_answers())
    scenario = carrier(reinvited("second", "o=plateau [0-9]+ 2 "))
    call_id, phone = await connected_call(gw, tmp_path, scenario)
    request = pb.TransferRequest(
        request_id="t1",
        call_id=call_id,
        agent=pb.AgentTarget(agent_id="a-second", extension=SECOND),
    )
    await gw.stub.Transfer(request, metadata=METADATA)
    await gw.wait_for(call_id, "call.connected", count=2)
    await gw.hangup(call_id)
    await succeeded(phone, first, second)
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.transferred",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    transferred = events[3]
    assert transferred["agent_id"] == "a-first" and transferred["via"] == "api"
    assert transferred["target"] == {
        "kind": "agent",
        "agent_id": "a-second",
        "queue_id": None,
        "number": None,
    }
    assert events[5]["agent_id"] == "a-second" and events[6]["agent_id"] == "a-second"


async def test_transfer_to_an_allowed_number_refers_the_customer_to_the_carrier(
    gw: RunningGateway, tmp_path: Path
) -> None:
    first = await agent(gw, tmp_path, FIRST, agent_answers())
    referred = f"""
  <recv request="REFER" timeout="20000"><action>
    <ereg regexp="Refer-To: &lt;sip:\\{ALLOWED}@" search_in="msg" check_it="true" assign_to="to"/>
  </action></recv>
  <send><![CDATA[
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"""
    call_id, phone = await connected_call(gw, tmp_path, carrier(referred))

    refused = pb.TransferRequest(request_id="t0", call_id=call_id, number="+242069999999")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await gw.stub.Transfer(refused, metadata=METADATA)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    trailing = dict(denied.value.trailing_metadata() or ())
    assert trailing["x-plateau-refusal-reason"] == "not_in_contact_list"

    allowed = pb.TransferRequest(request_id="t1", call_id=call_id, number=ALLOWED)
    await gw.stub.Transfer(allowed, metadata=METADATA, timeout=20)
    await succeeded(phone, first)
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events][-2:] == ["call.transferred", "call.ended"]
    assert events[-1]["cause"] == "transferred_away"
    streams = await gw.streams()
    [refusal] = [s for s, t in streams.items() if t == ["call.dial_refused"]]
    [recorded] = await gw.events(refusal)
    assert recorded["number"] == "+242069999999" and recorded["requested_by"] == "integrator"


def agent_refers(refer_to: str) -> str:
    """An agent softphone that answers, then blind-transfers with REFER (RFC 3515): 202,
    the final NOTIFY, and the gateway's BYE releasing it."""
    return agent_answers_then(
        f"""
  <pause milliseconds="200"/>
  <send retrans="500"><![CDATA[
REFER [$gw_uri] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{FIRST}@127.0.0.1>;tag=[pid]a[call_number]
To: [$gw_from]
Call-ID: [call_id]
CSeq: 1 REFER
Contact: <sip:agent@[local_ip]:[local_port]>
Refer-To: <sip:{refer_to}@127.0.0.1>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="202"/>
  <recv request="NOTIFY"><action>
    <ereg regexp="SIP/2.0 200" search_in="body" check_it="true" assign_to="frag"/>
  </action></recv>
{OK}
  <recv request="BYE"/>
{OK}
""",
        name="agent refers",
    )


async def test_a_softphone_refer_to_an_entry_point_puts_the_call_back_in_its_queue(
    gw: RunningGateway, tmp_path: Path
) -> None:
    first = await agent(gw, tmp_path, FIRST, agent_refers(DNIS))
    call_id, phone = await connected_call(gw, tmp_path, carrier(reinvited("wait", "a=inactive")))
    await gw.wait_for(call_id, "call.transferred")
    await succeeded(first)
    await gw.hangup(call_id)
    await succeeded(phone)
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.transferred",
        "call.ended",
    ]
    transferred = events[3]
    assert transferred["via"] == "softphone" and transferred["agent_id"] == "a-first"
    assert transferred["target"]["kind"] == "queue"  # type: ignore[index]
    assert transferred["target"]["queue_id"] == "sales"  # type: ignore[index]


async def test_a_softphone_refer_to_a_number_outside_the_file_is_refused_and_recorded(
    gw: RunningGateway, tmp_path: Path
) -> None:
    refused = agent_refers("066999999").replace(
        """  <recv response="202"/>
  <recv request="NOTIFY"><action>
    <ereg regexp="SIP/2.0 200" search_in="body" check_it="true" assign_to="frag"/>
  </action></recv>
"""
        + OK,
        '  <recv response="403"/>',
    )
    first = await agent(gw, tmp_path, FIRST, refused)
    call_id, phone = await connected_call(gw, tmp_path, carrier())

    async def refusal() -> bool:
        return any(t == ["call.dial_refused"] for t in (await gw.streams()).values())

    await wait_until(refusal, 20, "call.dial_refused")
    await gw.hangup(call_id)
    await succeeded(phone, first)
    assert await gw.types_of(call_id) == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.ended",
    ]
    [stream] = [s for s, t in (await gw.streams()).items() if t == ["call.dial_refused"]]
    [recorded] = await gw.events(stream)
    assert recorded["requested_by"] == "agent_softphone" and recorded["requester"] == FIRST
    assert recorded["sip_code"] == 403


async def test_a_bye_from_a_stranger_who_learnt_the_call_id_is_refused(
    gw: RunningGateway, tmp_path: Path
) -> None:
    first = await agent(gw, tmp_path, FIRST, agent_answers())
    call_id, phone = await connected_call(gw, tmp_path, carrier())
    [offered] = [e for e in await gw.events(f"call-{call_id}") if e["type"] == "call.offered"]
    stranger = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="stranger hangs up someone else's call">
  <send retrans="500"><![CDATA[
BYE sip:{DNIS}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]>;tag=guess
To: <sip:{DNIS}@[remote_ip]>;tag=guess
Call-ID: [call_id]
CSeq: 9 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="403"/>
</scenario>"""
    # 127.0.0.2 is loopback too, but on no trunk's networks (the trunk is 127.0.0.1/32);
    # -cid_str makes sipp use the carrier's Call-ID, so it can match the response.
    scenario = write(tmp_path, "stranger.xml", stranger)
    call_id_format = ["-cid_str", str(offered["sip_call_id"])]
    code, output = await run_sipp(
        ["-sf", scenario, "-m", "1", *call_id_format, gw.sip_target], tmp_path, ip="127.0.0.2"
    )
    assert code == 0, f"the stranger's BYE was not refused with 403:\n{output}"
    assert (await gw.types_of(call_id))[-1] == "call.connected"
    await gw.hangup(call_id)
    await succeeded(phone, first)
    assert (await gw.types_of(call_id))[-1] == "call.ended"
