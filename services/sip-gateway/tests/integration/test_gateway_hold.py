"""Hold and resume: the agent's softphone re-INVITEs (``a=sendonly``, then ``sendrecv``)
are relayed to the carrier, its answers relayed back, and ``call.held`` /
``call.resumed`` recorded between ``call.connected`` and ``call.ended``."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sip_gateway_harness import (
    ACK_2XX,
    AGENT_SDP,
    BYE,
    DNIS,
    INVITE,
    SDP,
    RunningGateway,
    free_port,
    register,
    run_sipp,
    running_gateway,
    start_sipp,
    wait_until,
    write,
)

from plateau_runtime.testing import MigratedSchema
from plateau_sip_gateway.testing.sipp import OK_IN_DIALOG, agent_answers_then

pytestmark = pytest.mark.integration

EXTENSION = "1004"
PASSWORD = secrets.token_urlsafe(12)

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

CARRIER = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier held and resumed">
{INVITE}
  <recv response="200" timeout="30000"/>
{ACK_2XX}
  <recv request="INVITE" timeout="30000"/>
{OK_WITH_SDP}
  <recv request="ACK"/>
  <recv request="INVITE" timeout="30000"/>
{OK_WITH_SDP}
  <recv request="ACK"/>
  <pause milliseconds="300"/>
{BYE}
</scenario>"""


def agent_reinvite(cseq: int, direction: str) -> str:
    return f"""
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
INVITE [$gw_uri] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{EXTENSION}@127.0.0.1>;tag=[pid]a[call_number]
To: [$gw_from]
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:agent@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{AGENT_SDP}
a={direction}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" timeout="10000"/>
  <send><![CDATA[
ACK [$gw_uri] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{EXTENSION}@127.0.0.1>;tag=[pid]a[call_number]
To: [$gw_from]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
]]></send>"""


AGENT = agent_answers_then(
    agent_reinvite(1, "sendonly")
    + agent_reinvite(2, "sendrecv")
    + """
  <recv request="BYE" timeout="30000"/>"""
    + OK_IN_DIALOG,
    name="agent holds and resumes",
)


@pytest.fixture
async def gw(
    service_pool: asyncpg.Pool, service_schema: MigratedSchema, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        service_pool, tmp_path, passwords={EXTENSION: PASSWORD}, schema=service_schema.schema
    ) as running:
        yield running


async def test_the_agent_holds_and_resumes_through_re_invites(
    gw: RunningGateway, tmp_path: Path
) -> None:
    agent_port = free_port()
    agent = await start_sipp(
        ["-sf", write(tmp_path, "agent.xml", AGENT), "-m", "1"], tmp_path, port=agent_port
    )
    scenario = write(tmp_path, "register.xml", register(EXTENSION, PASSWORD, agent_port))
    code, output = await run_sipp(["-sf", scenario, "-m", "1", gw.sip_target], tmp_path)
    assert code == 0, f"REGISTER failed:\n{output}"
    carrier = await start_sipp(
        ["-sf", write(tmp_path, "carrier.xml", CARRIER), "-s", DNIS, "-m", "1", gw.sip_target],
        tmp_path,
    )

    async def offered() -> bool:
        return bool(await gw.offered_calls())

    await wait_until(offered, what="call.offered")
    [call_id] = await gw.offered_calls()
    await gw.connect_agent(call_id, EXTENSION, agent="a-4")

    code, output = await carrier.result()
    assert code == 0, f"carrier sipp failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"agent sipp failed:\n{output}"
    events = await gw.events(f"call-{call_id}")
    assert [e["type"] for e in events] == [
        "call.offered",
        "call.agent_ringing",
        "call.connected",
        "call.held",
        "call.resumed",
        "call.ended",
    ]
    assert events[3]["via"] == "softphone" and events[3]["agent_id"] == "a-4"
