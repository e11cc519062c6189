"""The production SIP edge's Kamailio configuration, run for real: every message of a call
reaches the gateway replica that got its INVITE.

Kamailio (Debian's, from tools/test-packages) runs deploy/k8s's kamailio.cfg on loopback
with two sipp processes as the gateway replicas; a sipp carrier places calls through it.
The replicas answer with a Contact naming the edge itself, as the gateway does when it
advertises the load balancer's address, so the carrier's ACK and BYE come back to the edge
with nothing but their Call-ID to find the replica by. A BYE that reached the other replica
would be answered 481 there and fail the carrier's call.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import pytest
from sip_edge_harness import EDGE_IP, edge_ports, replica_ip, running_edge

from plateau_sip_gateway.testing.sipp import call_counts, run_sipp, start_sipp, write

pytestmark = pytest.mark.integration

CALLS = 40

#: A gateway replica: answers an INVITE 200 with a Contact at the edge (EDGE_ADDRESS), then
#: takes the ACK and the BYE of the same call.
REPLICA = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway replica behind the dispatcher">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_Record-Route:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:gateway@EDGE_ADDRESS>
Content-Length: 0
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
  ]]></send>
</scenario>
"""

_RECEIVED = re.compile(r"message received \[\d+\] bytes :\s*\n\s*\n(\w+) ", re.MULTILINE)


def _requests_received(trace: Path) -> list[str]:
    return _RECEIVED.findall(trace.read_text(errors="replace")) if trace.exists() else []


async def test_every_message_of_a_call_reaches_the_replica_of_its_invite(tmp_path: Path) -> None:
    edge_port, replicas_port = edge_ports()
    replicas = []
    directories = []
    for index in range(2):
        directory = tmp_path / f"replica-{index}"
        directory.mkdir()
        directories.append(directory)
        contact = REPLICA.replace("EDGE_ADDRESS", f"{EDGE_IP}:{edge_port}")
        scenario = write(directory, "replica.xml", contact)
        replicas.append(
            await start_sipp(
                ["-sf", scenario, "-trace_msg", "-message_file", str(directory / "messages")],
                directory,
                ip=replica_ip(index),
                timeout=180,
            )
        )
    addresses = [(replica_ip(i), replica.port) for i, replica in enumerate(replicas)]
    try:
        async with running_edge(tmp_path, addresses, (edge_port, replicas_port)) as edge:
            carrier = tmp_path / "carrier"
            carrier.mkdir()
            code, output = await run_sipp(
                [edge.target, "-sn", "uac", "-m", str(CALLS), "-r", "20", "-d", "100"],
                carrier,
                timeout=120,
            )
            successful, failed = call_counts(output)
            assert (code, successful, failed) == (0, CALLS, 0), output
    finally:
        for replica in replicas:
            replica.kill()
            await replica.process.wait()
    received = [_requests_received(d / "messages") for d in directories]
    invites = [requests.count("INVITE") for requests in received]
    byes = [requests.count("BYE") for requests in received]
    acks = [requests.count("ACK") for requests in received]
    assert sum(invites) == CALLS
    assert byes == invites, f"BYEs per replica {byes}, INVITEs {invites}"
    assert acks == invites, f"ACKs per replica {acks}, INVITEs {invites}"
    assert all(count > 0 for count in invites), f"the Call-ID hash used one replica: {invites}"


def _status_from_outside(edge_port: int, request_uri: str, route: str | None, to_tag: bool) -> int:
    """Send a request from an outsider's address to the edge: the status it gets back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("127.0.0.5", 0))
        port = sock.getsockname()[1]
        lines = [
            f"BYE {request_uri} SIP/2.0" if to_tag else f"INVITE {request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.5:{port};branch=z9hG4bK-relay{time.monotonic_ns()}",
            "From: <sip:intruder@127.0.0.5>;tag=1",
            "To: <sip:victim@192.0.2.99>" + (";tag=2" if to_tag else ""),
            f"Call-ID: relay-{time.monotonic_ns()}@127.0.0.5",
            f"CSeq: 1 {'BYE' if to_tag else 'INVITE'}",
            f"Contact: <sip:intruder@127.0.0.5:{port}>",
            "Max-Forwards: 70",
            *([f"Route: {route}"] if route else []),
            "Content-Length: 0",
            "",
            "",
        ]
        sock.sendto("\r\n".join(lines).encode(), (EDGE_IP, edge_port))
        while True:
            status = int(sock.recv(65535).split(b" ", 2)[1])
            if status >= 200:
                return status


async def test_outsiders_cannot_relay_through_the_edge(tmp_path: Path) -> None:
    """New requests must be for the edge, and requests inside a dialog may only go to a
    replica, whatever Route (or Path ;received=) an outsider forges."""
    replica = (replica_ip(0), 5060)  # nothing listens: nothing may be sent there either
    async with running_edge(tmp_path, [replica]) as edge:
        victim = "sip:victim@192.0.2.99:5060"
        edge_route = f"<sip:{EDGE_IP}:{edge.edge_port};lr>"
        forged_path = f"<sip:{EDGE_IP}:{edge.edge_port};received=sip:192.0.2.99:5060;lr>"
        attempts = {
            "new request elsewhere": (victim, None, False),
            "new request elsewhere via the edge": (victim, edge_route, False),
            "in-dialog elsewhere via the edge": (victim, edge_route, True),
            "in-dialog to the edge with a forged received": (
                f"sip:x@{EDGE_IP}:{edge.edge_port}",
                forged_path,
                True,
            ),
        }
        statuses = {
            name: await asyncio.to_thread(_status_from_outside, edge.edge_port, *attempt)
            for name, attempt in attempts.items()
        }
    assert statuses == dict.fromkeys(attempts, 403), statuses


def _relayed_for_a_replica(replicas_port: int, route: str) -> str:
    """A replica's OPTIONS to a carrier with ``route`` preloaded: the first line of what the
    carrier receives, or of the response if the edge answers instead."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as replica,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as carrier,
    ):
        replica.settimeout(5)
        carrier.settimeout(5)
        replica.bind((replica_ip(0), 0))
        carrier.bind(("127.0.0.5", 0))
        own, target = replica.getsockname()[1], carrier.getsockname()[1]
        lines = [
            f"OPTIONS sip:127.0.0.5:{target} SIP/2.0",
            f"Via: SIP/2.0/UDP {replica_ip(0)}:{own};branch=z9hG4bK-ka{time.monotonic_ns()}",
            f"From: <sip:plateau@{replica_ip(0)}>;tag=1",
            f"To: <sip:127.0.0.5:{target}>",
            f"Call-ID: ka-{time.monotonic_ns()}@plateau",
            "CSeq: 1 OPTIONS",
            f"Route: {route}",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
            "",
        ]
        replica.sendto("\r\n".join(lines).encode(), (EDGE_IP, replicas_port))
        try:
            return carrier.recv(65535).split(b"\r\n", 1)[0].decode()
        except TimeoutError:
            return replica.recv(65535).split(b"\r\n", 1)[0].decode()


async def test_a_replica_may_name_the_edge_by_its_service_name(tmp_path: Path) -> None:
    """The replicas' outbound proxy is sip:kamailio-replicas:5080: the edge takes a Route
    naming it for its own and relays the request on, rather than to that name."""
    ports = edge_ports()
    async with running_edge(tmp_path, [(replica_ip(0), 5060)], ports) as edge:
        route = f"<sip:kamailio-replicas:{edge.replicas_port};transport=udp;lr>"
        first_line = await asyncio.to_thread(_relayed_for_a_replica, edge.replicas_port, route)
    assert first_line.startswith("OPTIONS sip:127.0.0.5:"), first_line
