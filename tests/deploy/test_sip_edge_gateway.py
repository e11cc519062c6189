"""A real gateway behind the real edge: deploy/k8s's kamailio.cfg in front of an in-process
sip-gateway replica configured as in production (its own address in Via and Contact,
the edge as trusted proxy and outbound proxy), over the real PostgreSQL event store.

Everyone has an address of their own on loopback: the edge 127.0.0.2, the replica
127.0.0.10, the carrier 127.0.0.5 (its trunk's network), a softphone 127.0.0.6. So the
carrier's call is accepted only because the edge reported the carrier's address, the
softphone is rung through the Path the edge added to its REGISTER, and what the
gateway starts towards the carrier leaves from the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sip_edge_harness import (
    EDGE_IP,
    TENANT,
    Edge,
    Replica,
    ReplicaSettings,
    edge_ports,
    running_edge,
    running_replicas,
    wait_until_true,
)

from plateau_contracts.events.dialer import CampaignStarted, ContactAllowed
from plateau_contracts.grpc.calls.v1 import call_control_pb2 as pb
from plateau_runtime.db import create_pool
from plateau_runtime.services import SERVICES
from plateau_runtime.testing import make_schema
from plateau_sip_gateway.domain.trunks import TrunksConfig
from plateau_sip_gateway.sip.endpoint import Destination
from plateau_sip_gateway.testing.sipp import SDP, Sipp, free_port, run_sipp, start_sipp, write

pytestmark = pytest.mark.integration

CARRIER_IP = "127.0.0.5"
PHONE_IP = "127.0.0.6"
#: The softphone's own idea of its address, as behind NAT: nothing listens there (TEST-NET).
PRIVATE = "192.0.2.77:5060"
DNIS = "053000100"
EXTENSION = "1001"
PASSWORD = secrets.token_urlsafe(12)
ALLOWED = "+242066123456"
CAMPAIGN = "cmp-edge"


def trunks(customer_port: int) -> TrunksConfig:
    return TrunksConfig.model_validate(
        {
            "trunks": [
                {
                    "name": "carrier",
                    "tenant": TENANT,
                    "source_networks": [f"{CARRIER_IP}/32"],
                    "outbound": [{"host": CARRIER_IP, "port": customer_port}],
                    "entry_points": {"+242053000100": "sales"},
                    "capacity": {"kind": "calls", "max_calls": 10},
                    "options_interval_s": 0,
                }
            ]
        }
    )


@dataclass
class Setup:
    edge: Edge
    replica: Replica
    customer_port: int


@pytest.fixture
async def gateway_pool(admin_dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A pool on a fresh schema with the gateway's migrations (the tests live outside the
    gateway's package, so the root fixture would not apply them)."""
    spec = next(s for s in SERVICES if s.name == "sip-gateway")
    schema = await make_schema(admin_dsn, spec.migrations_dir())
    pool = await create_pool(schema.dsn, max_size=10)
    yield pool, schema.schema
    await pool.close()


@contextlib.asynccontextmanager
async def behind_the_edge(
    pool: tuple[asyncpg.Pool, str], tmp: Path, *, trusted: str = f"{EDGE_IP}/32"
) -> AsyncIterator[Setup]:
    """One gateway replica behind Kamailio (the harness takes N)."""
    ports = edge_ports()
    proxy = f"sip:{EDGE_IP}:{ports[1]}"
    customer_port = free_port(host=CARRIER_IP)
    settings = ReplicaSettings(
        trusted_proxies=trusted, outbound_proxy=proxy, passwords={EXTENSION: PASSWORD}
    )
    async with (
        running_replicas(
            pool[0], pool[1], tmp, 1, trunks=trunks(customer_port), settings=settings
        ) as replicas,
        running_edge(tmp, [r.address for r in replicas], ports) as edge,
    ):
        yield Setup(edge, replicas[0], customer_port)


# sipp scenarios -----------------------------------------------------------------------

_CARRIER_REQUEST = """
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:carrier@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

"""


def _carrier_in_dialog(method: str, cseq: int) -> str:
    """An in-dialog request as RFC 3261 §12.2.1.1 builds it: to the gateway's Contact,
    through the Record-Route of its 200 (the edge)."""
    return f"""<![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
[routes]
Max-Forwards: 70
Content-Length: 0
]]>"""


def carrier_talks() -> str:
    """The carrier calls through the edge, is answered, talks, hangs up."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier through the edge">
  <send retrans="500"><![CDATA[{_CARRIER_REQUEST}{SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true" timeout="30000">
    <action>
      <ereg regexp="Record-Route: &lt;sip:{EDGE_IP.replace(".", "[.]")}" search_in="msg"
            check_it="true" assign_to="rr"/>
    </action>
  </recv>
  <send>{_carrier_in_dialog("ACK", 1)}</send>
  <pause milliseconds="500"/>
  <send retrans="500">{_carrier_in_dialog("BYE", 2)}</send>
  <recv response="200" timeout="10000"/>
</scenario>"""


def carrier_hears_bye(edge_port: int) -> str:
    """The carrier calls through the edge, is answered, and the gateway hangs up (its BYE
    comes from the edge too)."""
    top_via = f"Via: SIP/2.0/UDP {EDGE_IP}:{edge_port}".replace(".", "[.]")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier hears bye through the edge">
  <send retrans="500"><![CDATA[{_CARRIER_REQUEST}{SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true" timeout="30000"/>
  <send>{_carrier_in_dialog("ACK", 1)}</send>
  <recv request="BYE" timeout="30000">
    <action>
      <ereg regexp="{top_via}" search_in="msg" check_it="true" assign_to="via"/>
    </action>
  </recv>
{_OK}
</scenario>"""


def carrier_refused(code: int) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier refused">
  <send retrans="500"><![CDATA[{_CARRIER_REQUEST}{SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="{code}" timeout="10000"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:242066123456@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
</scenario>"""


def phone_registers() -> str:
    """The softphone's REGISTER through the edge, from the socket it will be rung on."""
    message = f"""
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]r[call_number]
To: <sip:{EXTENSION}@[remote_ip]>
Call-ID: [call_id]
CSeq: [cseq] REGISTER
Contact: <sip:{EXTENSION}@{PRIVATE}>
Supported: path
Max-Forwards: 70
Expires: 3600
"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone registers through the edge">
  <send retrans="500"><![CDATA[{message}Content-Length: 0
]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[{message}[authentication username={EXTENSION} password={PASSWORD}]
Content-Length: 0
]]></send>
  <recv response="200">
    <action>
      <ereg regexp="Path: &lt;sip:{EDGE_IP.replace(".", "[.]")}" search_in="msg"
            check_it="true" assign_to="path"/>
    </action>
  </recv>
</scenario>"""


def phone_answers(edge_port: int) -> str:
    """The softphone rung through the edge: answers, then hears the gateway's BYE."""
    top_via = f"Via: SIP/2.0/UDP {EDGE_IP}:{edge_port}".replace(".", "[.]")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone answers through the edge">
  <recv request="INVITE">
    <action>
      <ereg regexp="{top_via}" search_in="msg" check_it="true" assign_to="via"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@{PRIVATE}>
Content-Length: 0
]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@{PRIVATE}>
Content-Type: application/sdp
Content-Length: [len]

{SDP.replace("user1", "agent")}
]]></send>
  <recv request="ACK" timeout="10000"/>
  <recv request="BYE" timeout="30000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>"""


def phone_answers_and_hangs_up(edge_port: int) -> str:
    """The softphone rung through the edge answers, talks, and hangs up itself: its BYE to
    the gateway's Contact, through the Record-Route of the INVITE (the edge)."""
    answering = phone_answers(edge_port)
    hang_up = """<pause milliseconds="500"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: [$gw_to];tag=[pid]a[call_number]
To: [$gw_from]
Call-ID: [call_id]
CSeq: 1 BYE
[routes]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" timeout="10000"/>
</scenario>"""
    answering = answering[: answering.index('<recv request="BYE"')] + hang_up
    return answering.replace(
        '<recv request="INVITE">\n    <action>',
        '<recv request="INVITE" rrs="true">\n    <action>\n'
        '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="gw_from"/>\n'
        '      <ereg regexp="[^;]*" search_in="hdr" header="To:" assign_to="gw_to"/>',
        1,
    )


def customer_answers(edge_port: int) -> str:
    """The customer's network, reached from the edge's address: 180, 200 with the SDP
    offer, the gateway's ACK, then its BYE (no agent: abandoned for compliance). The edge's
    workers may relay the BYE before the ACK that was sent just before it."""
    top_via = f"Via: SIP/2.0/UDP {EDGE_IP}:{edge_port}".replace(".", "[.]")
    reply = """<![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]c[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:customer@[local_ip]:[local_port]>
{body}
]]>"""
    ringing = reply.format(status="180 Ringing", body="Content-Length: 0")
    offer = f"Content-Type: application/sdp\nContent-Length: [len]\n\n{SDP}"
    answer = reply.format(status="200 OK", body=offer)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="customer answers the edge">
  <recv request="INVITE">
    <action>
      <ereg regexp="{top_via}" search_in="msg" check_it="true" assign_to="via"/>
    </action>
  </recv>
  <send>{ringing}</send>
  <send retrans="500">{answer}</send>
  <recv request="ACK" timeout="15000" optional="true"/>
  <recv request="BYE" timeout="30000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>"""


_OK = """  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>"""


# helpers ------------------------------------------------------------------------------


def allow(replica: Replica) -> None:
    """The dialer's facts that allow ALLOWED, applied as its feed would."""
    allowlist = replica.gateway.allowlist
    allowlist.apply(CampaignStarted(campaign_id=CAMPAIGN, requested_by="supervisor"), TENANT)
    allowlist.apply(
        ContactAllowed(contact_id="ct-1", campaign_id=CAMPAIGN, number=ALLOWED, list_version=1),
        TENANT,
    )


async def one_call(replica: Replica, first: str) -> str:
    async def started() -> bool:
        return bool(await replica.calls(first))

    await wait_until_true(started, 30, f"a call starting with {first}")
    (call_id,) = await replica.calls(first)
    return call_id


async def recorded(replica: Replica, call_id: str, event_type: str) -> dict[str, object]:
    async def seen() -> bool:
        return any(e["type"] == event_type for e in await replica.events(f"call-{call_id}"))

    await wait_until_true(seen, 30, event_type)
    return next(e for e in await replica.events(f"call-{call_id}") if e["type"] == event_type)


def raw_invite(target: tuple[str, int], *headers: str) -> int:
    """Send an INVITE from the edge's address (a trusted proxy) straight to the replica:
    the status of its first response after 100 Trying (180 when accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((EDGE_IP, 0))
        port = sock.getsockname()[1]
        lines = [
            f"INVITE sip:{DNIS}@{target[0]}:{target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {EDGE_IP}:{port};branch=z9hG4bK-raw{time.monotonic_ns()}",
            f"From: <sip:242066123456@{CARRIER_IP}>;tag=raw",
            f"To: <sip:{DNIS}@{target[0]}>",
            f"Call-ID: raw-{time.monotonic_ns()}@{EDGE_IP}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:carrier@{EDGE_IP}:{port}>",
            "Max-Forwards: 70",
            *headers,
            "Content-Length: 0",
            "",
            "",
        ]
        sock.sendto("\r\n".join(lines).encode(), target)
        while True:
            status = int(sock.recv(65535).split(b" ", 2)[1])
            if status > 100:
                return status


async def customer_network(setup: Setup, tmp: Path) -> Sipp:
    """The customers' network on the carrier's address, answering one call from the edge."""
    scenario = write(tmp, "customer.xml", customer_answers(setup.edge.edge_port))
    return await start_sipp(
        ["-sf", scenario, "-m", "1"], tmp, ip=CARRIER_IP, port=setup.customer_port, timeout=90
    )


# tests --------------------------------------------------------------------------------


async def register_phone(setup: Setup, tmp: Path) -> int:
    """The softphone registers through the edge; the port it did it from (and listens on)."""
    edge, replica = setup.edge, setup.replica
    phone_port = free_port(host=PHONE_IP)
    code, output = await run_sipp(
        ["-sf", write(tmp, "register.xml", phone_registers()), "-m", "1", edge.target],
        tmp,
        ip=PHONE_IP,
        port=phone_port,
        timeout=60,
    )
    assert code == 0, f"REGISTER through the edge failed:\n{output}"
    (binding,) = replica.gateway.registrar.registrar.lookup(EXTENSION, time.time())
    assert binding.source == (PHONE_IP, phone_port)  # the phone's, not the edge's
    (hop,) = binding.path
    assert hop.startswith(f"<sip:{EDGE_IP}:{edge.replicas_port};")
    assert f"received=sip:{PHONE_IP}:{phone_port}" in hop
    return phone_port


async def answered_call(setup: Setup, tmp: Path, phone: str, carrier: str) -> str:
    """A carrier call through the edge, connected to the softphone registered through it;
    both sipp sides run their scenario to its end. The call's id."""
    edge, replica = setup.edge, setup.replica
    phone_port = await register_phone(setup, tmp)
    agent = await start_sipp(
        ["-sf", write(tmp, "phone.xml", phone), "-m", "1"],
        tmp,
        ip=PHONE_IP,
        port=phone_port,
        timeout=90,
    )
    caller = await start_sipp(
        ["-sf", write(tmp, "carrier.xml", carrier), "-m", "1", "-s", DNIS, edge.target],
        tmp,
        ip=CARRIER_IP,
        timeout=90,
    )
    call_id = await one_call(replica, "call.offered")
    offered = await recorded(replica, call_id, "call.offered")
    assert offered["trunk"] == "carrier"  # the carrier's address, reported by the edge
    response = await replica.connect_agent(call_id, EXTENSION)
    assert response.agent_sip_call_id
    await recorded(replica, call_id, "call.connected")
    await recorded(replica, call_id, "call.ended")
    code, output = await caller.result()
    assert code == 0, f"the carrier's side failed:\n{output}"
    code, output = await agent.result()
    assert code == 0, f"the softphone's side failed:\n{output}"
    return call_id


async def test_a_carrier_call_through_the_edge_rings_an_agent_registered_through_it(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        phone = phone_answers(setup.edge.edge_port)
        call_id = await answered_call(setup, tmp_path, phone, carrier_talks())
        events = await setup.replica.events(f"call-{call_id}")
    types = [e["type"] for e in events]
    assert types == ["call.offered", "call.agent_ringing", "call.connected", "call.ended"]
    assert events[-1]["cause"] == "caller_hangup"


async def test_the_agent_hangs_up_through_the_edge_and_the_carrier_hears_it(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        phone = phone_answers_and_hangs_up(setup.edge.edge_port)
        call_id = await answered_call(
            setup, tmp_path, phone, carrier_hears_bye(setup.edge.edge_port)
        )
        events = await setup.replica.events(f"call-{call_id}")
    assert events[-1]["type"] == "call.ended"
    assert events[-1]["cause"] == "agent_hangup"


async def test_an_untrusted_edge_is_the_source_and_its_call_is_refused(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path, trusted="") as setup:
        code, output = await run_sipp(
            [
                "-sf",
                write(tmp_path, "carrier.xml", carrier_refused(403)),
                "-m",
                "1",
                "-s",
                DNIS,
                setup.edge.target,
            ],
            tmp_path,
            ip=CARRIER_IP,
            timeout=60,
        )
        assert code == 0, f"the carrier was not refused with 403:\n{output}"
        call_id = await one_call(setup.replica, "call.rejected")
        rejected = await recorded(setup.replica, call_id, "call.rejected")
    assert rejected["reason"] == "not_a_trunk"
    assert str(rejected["source"]).startswith(f"{EDGE_IP}:")


async def test_the_trusted_proxy_must_say_the_source_and_say_it_well(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        target = setup.replica.address
        # Without the header the proxy speaks for itself, and is no carrier.
        assert await asyncio.to_thread(raw_invite, target) == 403
        garbled = "X-Plateau-Source: UDP 127.0.0.5"
        assert await asyncio.to_thread(raw_invite, target, garbled) == 400
        good = f"X-Plateau-Source: UDP {CARRIER_IP}:5060"
        # Believed: the carrier's call, ringing (it ends with the gateway).
        assert await asyncio.to_thread(raw_invite, target, good) == 180


async def test_an_originated_call_leaves_through_the_edge(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        replica = setup.replica
        allow(replica)
        customer = await customer_network(setup, tmp_path)
        request = pb.OriginateRequest(
            request_id="att-edge",
            campaign_id=CAMPAIGN,
            contact_id="ct-1",
            attempt_id="att-edge",
            number=ALLOWED,
            requested_by=pb.REQUESTER_DIALER,
            requester="dialer",
        )
        request.ring_timeout.FromMilliseconds(10_000)
        response = await replica.stub.Originate(
            request, metadata=(("x-plateau-tenant", TENANT),), timeout=10
        )
        call_id = str(response.call_id)
        await recorded(replica, call_id, "call.dial_completed")
        await recorded(replica, call_id, "call.ended")
        code, output = await customer.result()
        assert code == 0, f"the customer's side failed:\n{output}"
    dial = next(
        e for e in await replica.events(f"call-{call_id}") if e["type"] == "call.dial_completed"
    )
    assert dial["outcome"] == "answered"


def phone_dials() -> str:
    """The softphone dials out through the edge, from the socket it registered from: the
    gateway knows it for a softphone and asks it to authenticate (407)."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone dials through the edge">
  <send retrans="500"><![CDATA[
INVITE sip:{ALLOWED}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <sip:{ALLOWED}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{EXTENSION}@{PRIVATE}>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="407" timeout="10000"/>
  <send><![CDATA[
ACK sip:{ALLOWED}@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <sip:{ALLOWED}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
</scenario>"""


async def test_a_softphone_registered_through_the_edge_is_known_when_it_dials(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        phone_port = await register_phone(setup, tmp_path)
        code, output = await run_sipp(
            ["-sf", write(tmp_path, "dial.xml", phone_dials()), "-m", "1", setup.edge.target],
            tmp_path,
            ip=PHONE_IP,
            port=phone_port,
            timeout=60,
        )
        # Not taken for a stranger (403 not_a_trunk): the edge said who it was.
        assert code == 0, f"the softphone was not challenged as one:\n{output}"
        assert await setup.replica.calls("call.rejected") == []


def carrier_answers_options(edge_port: int) -> str:
    """The carrier answers a keep-alive OPTIONS, which must come from the edge."""
    top_via = f"Via: SIP/2.0/UDP {EDGE_IP}:{edge_port}".replace(".", "[.]")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="carrier answers OPTIONS from the edge">
  <recv request="OPTIONS">
    <action>
      <ereg regexp="{top_via}" search_in="msg" check_it="true" assign_to="via"/>
    </action>
  </recv>
{_OK}
</scenario>"""


async def test_trunk_keepalive_leaves_through_the_edge(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        answering = carrier_answers_options(setup.edge.edge_port)
        carrier = await start_sipp(
            ["-sf", write(tmp_path, "options.xml", answering), "-m", "1"],
            tmp_path,
            ip=CARRIER_IP,
            port=setup.customer_port,
            timeout=60,
        )
        keepalive = setup.replica.gateway.keepalive
        assert keepalive is not None
        trunk = next(iter(setup.replica.gateway.b2bua.trunks))
        target = Destination("UDP", CARRIER_IP, setup.customer_port)
        assert await keepalive.ping(trunk, target)
        code, output = await carrier.result()
        assert code == 0, f"the carrier did not get the OPTIONS from the edge:\n{output}"


def phone_dials_and_talks() -> str:
    """The softphone dials an allowed number through the edge: 407, again with
    credentials, the customer's answer relayed, then its ACK and BYE through the edge."""
    target = f"sip:{ALLOWED}@[remote_ip]:[remote_port]"

    def invite(cseq: int, auth: bool) -> str:
        credentials = f"[authentication username={EXTENSION} password={PASSWORD}]\n" if auth else ""
        return f"""<send retrans="500"><![CDATA[
INVITE {target} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <{target}>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{EXTENSION}@{PRIVATE}>
{credentials}Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{SDP}
]]></send>"""

    def in_dialog(method: str, cseq: int) -> str:
        return f"""<send{"" if method == "ACK" else ' retrans="500"'}><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <{target}>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
[routes]
Max-Forwards: 70
Content-Length: 0
]]></send>"""

    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="softphone dials and talks through the edge">
{invite(1, False)}
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send><![CDATA[
ACK {target} SIP/2.0
[last_Via:]
From: <sip:{EXTENSION}@[remote_ip]>;tag=[pid]d[call_number]
To: <{target}>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
{invite(2, True)}
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true" timeout="15000"/>
{in_dialog("ACK", 2)}
  <pause milliseconds="300"/>
{in_dialog("BYE", 3)}
  <recv response="200" timeout="10000"/>
</scenario>"""


async def test_a_softphone_dials_talks_and_hangs_up_through_the_edge(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    async with behind_the_edge(gateway_pool, tmp_path) as setup:
        edge, replica = setup.edge, setup.replica
        allow(replica)
        customer = await customer_network(setup, tmp_path)
        phone_port = await register_phone(setup, tmp_path)
        scenario = write(tmp_path, "talk.xml", phone_dials_and_talks())
        code, output = await run_sipp(
            ["-sf", scenario, "-m", "1", "-auth_uri", f"{ALLOWED}@{edge.target}", edge.target],
            tmp_path,
            ip=PHONE_IP,
            port=phone_port,
            timeout=60,
        )
        assert code == 0, f"the softphone's call failed:\n{output}"
        call_id = await one_call(replica, "call.originated")
        ended = await recorded(replica, call_id, "call.ended")
        code, output = await customer.result()
        assert code == 0, f"the customer's side failed:\n{output}"
    assert ended["cause"] == "agent_hangup"


# several replicas ---------------------------------------------------------------------


def phone_unregisters() -> str:
    """The softphone takes its binding back (Expires: 0), with the Call-ID of the REGISTER
    it undoes (sipp's -cid_str), so the edge hashes it onto the same replica."""
    scenario = phone_registers().replace("Expires: 3600", "Expires: 0")
    return scenario[: scenario.index('  <recv response="200">')] + (
        '  <recv response="200"/>\n</scenario>'
    )


async def binding_replicas(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("select replica from bindings where aor = $1", EXTENSION)
    return [r["replica"] for r in rows]


async def register_on_other_replica(
    pool: asyncpg.Pool, edge: Edge, tmp: Path, phone_port: int, avoid: str
) -> str:
    """Register the softphone through the edge until the REGISTER's Call-ID hashes onto a
    replica other than ``avoid`` (a REGISTER that landed on ``avoid`` is undone with its
    own Call-ID); the replica that holds the binding."""
    for attempt in range(12):
        cid = ["-cid_str", f"reg-{attempt}-%u@{PHONE_IP}"]
        code, output = await run_sipp(
            ["-sf", write(tmp, "register.xml", phone_registers()), "-m", "1", *cid, edge.target],
            tmp,
            ip=PHONE_IP,
            port=phone_port,
            timeout=60,
        )
        assert code == 0, f"REGISTER through the edge failed:\n{output}"

        async def written() -> bool:  # the registrar writes its bindings through, async
            return bool(await binding_replicas(pool))

        await wait_until_true(written, 10, "the binding to be written through")
        (holder,) = await binding_replicas(pool)
        if holder != avoid:
            return holder
        undo = write(tmp, "unregister.xml", phone_unregisters())
        code, output = await run_sipp(
            # A higher CSeq than the REGISTER's (RFC 3261 §10.3 refuses an older one: 500).
            ["-sf", undo, "-m", "1", "-base_cseq", "10", *cid, edge.target],
            tmp,
            ip=PHONE_IP,
            port=phone_port,
            timeout=60,
        )
        assert code == 0, f"un-REGISTER through the edge failed:\n{output}"

        async def removed() -> bool:
            return await binding_replicas(pool) == []

        await wait_until_true(removed, 10, "the binding to be removed")
    pytest.fail("12 REGISTER Call-IDs all hashed onto one of two replicas")


async def test_two_replicas_behind_the_edge_connect_and_end_a_call_held_by_either(
    gateway_pool: tuple[asyncpg.Pool, str], tmp_path: Path
) -> None:
    """Production's shape: the edge dispatching to two replicas. The carrier's call lands on
    one replica (by its Call-ID), the agent's registration on the other; the acd's
    ConnectAgent and Hangup reach the replica that does not hold the call (as a ClusterIP
    Service may send them), which forwards them to the one that does; that one rings the
    agent through the Path of a REGISTER it never saw, and ends the call on both sides."""
    pool, schema = gateway_pool
    ports = edge_ports()
    settings = ReplicaSettings(
        outbound_proxy=f"sip:{EDGE_IP}:{ports[1]}",
        passwords={EXTENSION: PASSWORD},
        clustered=True,
    )
    customer_port = free_port(host=CARRIER_IP)
    async with (
        running_replicas(
            pool, schema, tmp_path, 2, trunks=trunks(customer_port), settings=settings
        ) as replicas,
        running_edge(tmp_path, [r.address for r in replicas], ports) as edge,
    ):
        carrier = write(tmp_path, "carrier.xml", carrier_hears_bye(edge.edge_port))
        caller = await start_sipp(
            ["-sf", carrier, "-m", "1", "-s", DNIS, edge.target],
            tmp_path,
            ip=CARRIER_IP,
            timeout=120,
        )
        call_id = await one_call(replicas[0], "call.offered")
        owner_name = await pool.fetchval(
            "select replica from call_owners where call_id = $1", call_id
        )
        owner = next(r for r in replicas if r.name == owner_name)
        other = next(r for r in replicas if r is not owner)
        assert call_id in owner.gateway.b2bua._calls  # held in the owner's memory only
        assert call_id not in other.gateway.b2bua._calls

        phone_port = free_port(host=PHONE_IP)
        holder = await register_on_other_replica(pool, edge, tmp_path, phone_port, owner.name)
        assert holder == other.name

        # Not in the owner's own registrar: only in its mirror of the other's bindings.
        assert not owner.gateway.registrar.registrar.lookup(EXTENSION, time.time())
        shared = owner.gateway.bindings
        assert shared is not None

        async def owner_sees_binding() -> bool:
            return bool(shared.lookup(EXTENSION, time.time()))

        await wait_until_true(owner_sees_binding, 10, "the owner to see the other's binding")
        agent = await start_sipp(
            ["-sf", write(tmp_path, "phone.xml", phone_answers(edge.edge_port)), "-m", "1"],
            tmp_path,
            ip=PHONE_IP,
            port=phone_port,
            timeout=90,
        )
        response = await other.connect_agent(call_id, EXTENSION)  # forwarded to the owner
        assert response.agent_sip_call_id
        await recorded(owner, call_id, "call.connected")
        await other.stub.Hangup(
            pb.HangupRequest(request_id=f"hangup-{call_id}", call_id=call_id),
            metadata=(("x-plateau-tenant", TENANT),),
            timeout=10,
        )
        ended = await recorded(owner, call_id, "call.ended")
        code, output = await caller.result()
        assert code == 0, f"the carrier's side failed:\n{output}"
        code, output = await agent.result()
        assert code == 0, f"the softphone's side failed:\n{output}"
        events = await owner.events(f"call-{call_id}")
    types = [e["type"] for e in events]
    assert types == ["call.offered", "call.agent_ringing", "call.connected", "call.ended"]
    assert ended["cause"] != "gateway_restart"
